"""Two ``hd-lobby`` instances on one NATS (docs/cluster.md), driven by spec-level clients:
one directory, rooms joined across instances, signaling across, newest-wins across,
a killed instance's nodes gone, a host's room back when it registers elsewhere."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from natsservers import NatsServer, nats_server

from hd_protocol.brokers.frames import encode_frame
from hd_shell.ws.link import LinkClosed

from .conftest import eventually
from .lobbyclients import Fleet, LobbyNode, fleet, is_error, is_type
from .servers import ServerProcess, Servers, servers  # noqa: F401 - the fixture

INSTANCE_TTL_S = 20  # cluster_view.INSTANCE_TTL_MS


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    with nats_server(tmp_path) as server:
        yield server


async def two_instances(servers: Servers, nats: NatsServer,  # noqa: F811
                        ) -> tuple[ServerProcess, ServerProcess]:
    one = servers.lobby("lobby1", ["--cluster", nats.url, "--instance", "one"])
    two = servers.lobby("lobby2", ["--cluster", nats.url, "--instance", "two"])
    await one.astart()
    await two.astart()
    return one, two


def presence_of(node_id: str, status: str | None = None):  # type: ignore[no-untyped-def]
    def pred(f: dict) -> bool:  # type: ignore[type-arg]
        return (f.get("type") == "presence" and f["node"]["node_id"] == node_id
                and (status is None or f["node"]["status"] == status))
    return pred


async def rooms_listed(node: LobbyNode, room: str, **match: str) -> list[dict]:  # type: ignore[type-arg]
    """``room``'s entries in what ``node`` gets for list_rooms (with ``match``'s values)."""
    got = await node.request(encode_frame("list_rooms"), is_type("rooms"))
    return [r for r in got["rooms"]
            if r["id"] == room and all(r[k] == v for k, v in match.items())]


def says(http: httpx.AsyncClient, health: str, status: str) -> Callable[[], Awaitable[bool]]:
    """A check for ``eventually``: the /healthz at ``health`` says ``status``."""
    async def check() -> bool:
        return bool((await http.get(health)).json()["status"] == status)
    return check


async def registered_on(f: Fleet, lobby: ServerProcess, name: str, **kw: object) -> LobbyNode:
    """Registered, and its instance's claim visible to the others (the directory is
    eventually consistent: a test waits for what a user would see)."""
    return await f.lobby_node(lobby.url, name, **kw)  # type: ignore[arg-type]


async def test_a_node_on_one_instance_sees_a_node_registered_on_the_other_within_a_second(
    servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    one, two = await two_instances(servers, nats)
    async with fleet() as f:
        a = await registered_on(f, one, "a")
        await trio.sleep(0.3)  # the instances have met on the bus
        t0 = time.monotonic()
        b = await registered_on(f, two, "b")
        await a.wire.wait_for(presence_of(b.node_id, "online"), timeout=1.0,
                              what="b in a's directory")
        assert time.monotonic() - t0 < 1.0
        # A node registering later gets both in its first directory.
        c = await registered_on(f, two, "c")
        assert c.registered is not None
        listed = {e["node_id"] for e in c.registered["presence"]}
        assert {a.node_id, b.node_id} <= listed
        # b leaves: a hears it is offline.
        await b.wire.aclose()
        await a.wire.wait_for(presence_of(b.node_id, "offline"), timeout=3.0,
                              what="b offline at a")


async def test_a_guest_on_one_instance_joins_a_room_hosted_on_the_other_and_they_signal(
    servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    one, two = await two_instances(servers, nats)
    async with fleet() as f:
        host = await registered_on(f, one, "host")
        guest = await registered_on(f, two, "guest")
        room = await token_room(host, "across", "s3cret")
        (view,) = await eventually(lambda: rooms_listed(guest, room), timeout=3,
                                   what="the room in the guest's list")
        assert view["host"] == host.node_id and view["host_name"] == "host"
        # The host's instance decides: a wrong token is refused as it would be locally.
        refused = await guest.request(encode_frame("join_room", {"roomId": room,
                                                                 "token": "nope"}),
                                      is_error("denied"))
        assert refused["code"] == "denied"
        mark = host.wire.mark()
        info = await guest.request(encode_frame("join_room", {"roomId": room,
                                                              "token": "s3cret"}),
                                   is_type("room_info"))
        assert info["host"]["node_id"] == host.node_id
        joining = await host.wire.wait_for(is_type("peer_joining"), start=mark, timeout=3)
        assert joining["guest"]["node_id"] == guest.node_id
        # Signaling both ways across the instances.
        mark = host.wire.mark()
        await guest.wire.send(encode_frame("signal", {"to": host.node_id, "sid": "s1",
                                                      "kind": "offer", "sdp": "v=0 offer"}))
        got = await host.wire.wait_for(is_type("signal"), start=mark, timeout=3)
        assert (got["from"], got["sdp"]) == (guest.node_id, "v=0 offer")
        mark = guest.wire.mark()
        await host.wire.send(encode_frame("signal", {"to": guest.node_id, "sid": "s1",
                                                     "kind": "answer", "sdp": "v=0 answer"}))
        got = await guest.wire.wait_for(is_type("signal"), start=mark, timeout=3)
        assert (got["from"], got["kind"]) == (host.node_id, "answer")
        # A node that shares no room with the host is denied, as locally.
        stranger = await registered_on(f, two, "stranger")
        await trio.sleep(0.3)
        denied = await stranger.request(
            encode_frame("signal", {"to": host.node_id, "sid": "x", "kind": "offer",
                                    "sdp": ""}), is_error())
        assert denied["code"] == "denied"
        # No instance holds this one.
        missing = await stranger.request(
            encode_frame("signal", {"to": "a" * 16, "sid": "x", "kind": "offer", "sdp": ""}),
            is_error())
        assert missing["code"] == "not_found"
        # The host closes the room: its guest on the other instance hears it.
        mark = guest.wire.mark()
        await host.wire.send(encode_frame("leave_room", {"roomId": room}))
        await guest.wire.wait_for(is_type("room_closed", roomId=room), start=mark, timeout=3)


async def test_the_newest_registration_wins_across_instances(
    servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    one, two = await two_instances(servers, nats)
    async with fleet() as f:
        first = await registered_on(f, one, "me")
        watcher = await registered_on(f, one, "watcher")
        await trio.sleep(0.3)
        second = await registered_on(f, two, "me", identity=first.identity)
        replaced = await first.wire.wait_for(is_error("replaced"), timeout=3)
        assert replaced["code"] == "replaced"
        await first.wire.wait_closed(timeout=3)
        # The node is still online (on instance two) for the others.
        await trio.sleep(0.5)
        assert second.wire.matching(is_error()) == []
        assert not watcher.wire.matching(presence_of(first.node_id, "offline"))


async def token_room(host: LobbyNode, name: str, token: str) -> str:
    """A public token room hosted by ``host``: its id."""
    created = await host.request(
        encode_frame("create_room", {"name": name, "visibility": "public",
                                     "joinPolicy": "token", "token": token}),
        is_type("room_created"))
    return str(created["room"]["id"])


def _health_url(lobby: ServerProcess) -> str:
    return lobby.url.replace("ws://", "http://").rsplit("/", 1)[0] + "/healthz"


async def _listed_on(node: LobbyNode, room: str) -> None:
    await eventually(lambda: rooms_listed(node, room), timeout=5, what=f"{room} listed")


async def test_a_flood_of_signals_to_another_instance_is_cut_at_the_sender_s_rate(
    servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    """What a node sends to a node on another instance spends the same frame budget as
    a local one: the bus and the far instance see at most the burst plus the rate."""
    one, two = await two_instances(servers, nats)
    async with fleet() as f:
        host = await registered_on(f, one, "host")
        flooder = await registered_on(f, two, "flooder")
        created = await host.request(
            encode_frame("create_room", {"name": "r", "visibility": "public",
                                         "joinPolicy": "open"}), is_type("room_created"))
        room = created["room"]["id"]
        await _listed_on(flooder, room)
        await flooder.request(encode_frame("join_room", {"roomId": room}),
                              is_type("room_info"))
        mark = host.wire.mark()
        signal = encode_frame("signal", {"to": host.node_id, "sid": "s", "kind": "offer",
                                         "sdp": "v=0 " + "x" * 200})
        t0 = time.monotonic()
        sent = 2000  # 10 times the burst, in one go
        with contextlib.suppress(LinkClosed):
            for _ in range(0, sent, 100):
                await flooder.wire.send(*[signal] * 100)
        # Over its rate the flooder is answered rate_limited, and closed after a few.
        closed = await flooder.wire.wait_closed(timeout=10)
        assert closed.code == 1008, closed
        assert 1 <= len(flooder.wire.matching(is_error("rate_limited"))) <= 16
        await trio.sleep(1.0)  # what got through has arrived
        got = len(host.wire.matching(is_type("signal"), start=mark))
        elapsed = time.monotonic() - t0
        # The burst (200) plus 50 per second, less what the join and list took.
        assert 150 <= got <= 200 + 50 * elapsed + 10, (got, elapsed)
        # Both instances are well.
        async with httpx.AsyncClient() as http:
            for lobby in (one, two):
                health = (await http.get(_health_url(lobby), timeout=5)).json()
                assert health["status"] == "ok", health


async def test_guessing_a_room_token_across_instances_closes_the_guesser(
    servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    """The host's instance refuses; the guesser's instance counts the refusal as a bad
    frame, as it would a local one, and closes the connection after a few."""
    one, two = await two_instances(servers, nats)
    async with fleet() as f:
        host = await registered_on(f, one, "host")
        guesser = await registered_on(f, two, "guesser")
        room = await token_room(host, "r", "right")
        await _listed_on(guesser, room)
        for i in range(64):
            with contextlib.suppress(LinkClosed):
                await guesser.wire.send(encode_frame("join_room", {"roomId": room,
                                                                   "token": f"guess{i}"}))
        closed = await guesser.wire.wait_closed(timeout=10)
        assert closed.code == 1008, closed
        denials = guesser.wire.matching(is_error("denied"))
        assert 1 <= len(denials) <= 16, len(denials)
        assert not host.wire.matching(is_type("peer_joining"))


async def test_a_node_that_left_and_registers_again_is_seen_again_by_the_other_instance(
    servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    """Its record was deleted when it left (the key's last word is a delete marker): its
    new registration must be written all the same, or the others never see it again."""
    one, two = await two_instances(servers, nats)
    async with fleet() as f:
        watcher = await registered_on(f, two, "watcher")
        await trio.sleep(0.3)
        identity = None
        for _ in range(2):
            mark = watcher.wire.mark()
            me = await registered_on(f, one, "me", identity=identity)
            identity = me.identity
            await watcher.wire.wait_for(presence_of(me.node_id, "online"), start=mark,
                                        timeout=3, what="me online at the watcher")
            await me.wire.aclose()
            await watcher.wire.wait_for(presence_of(me.node_id, "offline"), start=mark,
                                        timeout=3, what="me offline at the watcher")


async def test_a_killed_instance_s_nodes_leave_and_a_host_s_room_follows_it_elsewhere(
    servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    one, two = await two_instances(servers, nats)
    async with fleet() as f:
        host = await registered_on(f, one, "host")
        other = await registered_on(f, one, "other")
        seer = await registered_on(f, two, "seer")
        created = await host.request(
            encode_frame("create_room", {"name": "kept", "visibility": "public",
                                         "joinPolicy": "open"}), is_type("room_created"))
        room = created["room"]["id"]
        await trio.sleep(0.5)
        one.kill()  # SIGKILL: no goodbyes
        t0 = time.monotonic()
        again = await registered_on(f, two, "host", identity=host.identity)
        # Its room is back with the same id, hosted by its registration on two.
        await eventually(lambda: rooms_listed(seer, room, host=host.node_id), timeout=5,
                         what="the room at the seer, hosted again")
        assert time.monotonic() - t0 < 5
        mark = again.wire.mark()
        await seer.request(encode_frame("join_room", {"roomId": room}), is_type("room_info"))
        await again.wire.wait_for(is_type("peer_joining"), start=mark, timeout=3)
        # The node that stayed behind leaves every directory once its instance is gone.
        await seer.wire.wait_for(presence_of(other.node_id, "offline"),
                                 timeout=INSTANCE_TTL_S + 10, what="other offline")
        assert time.monotonic() - t0 < 30


async def test_without_the_bus_an_instance_serves_its_own_nodes_and_says_degraded(
    servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    one, two = await two_instances(servers, nats)
    health = _health_url(one)
    async with fleet() as f:
        a = await registered_on(f, one, "a")
        nats.stop()
        async with httpx.AsyncClient() as http:
            await eventually(says(http, health, "degraded"), timeout=15, interval=0.1,
                             what="one degraded")
            body = (await http.get(health)).json()
            assert body["ok"] is True and body["cluster"]["connected"] is False
            metrics = (await http.get(health.replace("healthz", "metrics"))).text
            assert "hd_cluster_connected 0.0" in metrics
            # Local work goes on: a node registers, sees a, and they share a room.
            b = await registered_on(f, one, "b")
            assert b.registered is not None
            assert a.node_id in {e["node_id"] for e in b.registered["presence"]}
            nats.start()
            await eventually(says(http, health, "ok"), timeout=20, interval=0.1,
                             what="one ok again")
        # Back together: a node on two sees the nodes one held through the outage.
        c = await registered_on(f, two, "c")

        async def sees_a_and_b() -> bool:
            seen = {fr["node"]["node_id"] for fr in c.wire.matching(is_type("presence"))}
            seen |= {e["node_id"] for e in (c.registered or {}).get("presence", [])}
            return {a.node_id, b.node_id} <= seen

        await eventually(sees_a_and_b, timeout=10, interval=0.2, what="a and b at c")
    assert one.running and two.running
    assert json.loads(one.info_path.read_text())["pid"] == one.proc.pid  # type: ignore[union-attr]


@pytest.mark.parametrize("module", ["hd_lobby", "hd_relay"])
async def test_an_instance_logs_under_its_own_name_and_nothing_before_it_listens(
    tmp_path: Path, nats: NatsServer, module: str,
) -> None:
    info = "lobby.json" if module == "hd_lobby" else "relay.json"
    p = ServerProcess(tmp_path, "inst", module, info,
                      ["--cluster", nats.url, "--instance", "i1", "--log-level", "DEBUG"])
    await p.astart()
    try:
        health = p.url.replace("ws://", "http://").rsplit("/", 1)[0] + "/healthz"
        async with httpx.AsyncClient() as http:
            await eventually(says(http, health, "ok"), timeout=10, what=f"{p.name} ok")
    finally:
        p.stop()
    lines = [ln for ln in p.log_text().splitlines() if ln[:2] == "20"]
    names = {ln.split()[3] for ln in lines}
    assert {n for n in names if n != module and not n.startswith(module + ".")} == set()
    said = [ln for ln in lines if ln.split()[2] != "DEBUG"]
    assert "listening" in said[0], said[:3]  # a start that fails is its one error line
    assert any("bus connected" in ln for ln in lines), lines
