"""Real nodes on two lobby instances sharing one NATS (docs/cluster.md): a guest on
instance two joins a room hosted on instance one over each rung of the join ladder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from natsservers import NatsServer, nats_server

from .conftest import Cluster, NodeProcess, eventually
from .servers import ServerProcess, Servers, servers  # noqa: F401 - the fixture
from .test_lobby import _chat, _connected_to_lobby
from .test_webrtc import NO_LISTENER, WEBRTC, _lobby_metric


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    with nats_server(tmp_path / "nats") as server:
        yield server


async def _host_and_join(host: NodeProcess, guest: NodeProcess) -> tuple[dict, list[dict]]:  # type: ignore[type-arg]
    """As in test_lobby, except that the guest joins once its own instance lists the room:
    the room list is shared by the instances, and a record takes a moment to arrive."""
    async with host.client() as th:
        room = (await th.request("lobby", "create_room", {
            "name": "room", "visibility": "public", "joinPolicy": "open"}))["room"]

    async def listed() -> bool:
        async with guest.client() as tg:
            rooms = (await tg.request("lobby", "list_rooms"))["rooms"]
        return any(r["id"] == room["id"] for r in rooms)

    await eventually(listed, timeout=15, what="the room in the guest's instance's list")
    async with guest.client() as tg:
        joined = await tg.request("lobby", "join_room", {"roomId": room["id"]}, timeout=20)
        steps = [e["data"] for e in tg.events
                 if (e["channel"], e["event"]) == ("network", "ladder")]
    assert steps and steps[-1]["step"] == "won" and steps[-1]["kind"] == joined["via"], steps
    return joined, steps


async def two_instances(servers: Servers, nats: NatsServer,  # noqa: F811
                        ) -> tuple[ServerProcess, ServerProcess]:
    one = servers.lobby("lobby1", ["--cluster", nats.url, "--instance", "one"])
    two = servers.lobby("lobby2", ["--cluster", nats.url, "--instance", "two"])
    await one.astart()
    await two.astart()
    return one, two


async def test_a_guest_on_another_instance_joins_directly(
    cluster: Cluster, servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    one, two = await two_instances(servers, nats)
    alice, bob = await cluster.spawn("alice", "bob")
    await _connected_to_lobby(alice, one.url)
    await _connected_to_lobby(bob, two.url)
    joined, _ = await _host_and_join(alice, bob)
    assert joined["via"] == "direct" and joined["peer"]["node_id"] == alice.node_id
    await _chat(bob, alice, "across two lobby instances")
    await _chat(alice, bob, "and back")


async def test_a_guest_on_another_instance_joins_over_webrtc_signalled_across(
    cluster: Cluster, servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    one, two = await two_instances(servers, nats)
    alice = cluster.new("alice", config=NO_LISTENER)
    bob = cluster.new("bob", config=WEBRTC)
    await cluster.start(alice, bob)
    await _connected_to_lobby(alice, one.url)
    await _connected_to_lobby(bob, two.url)
    joined, _ = await _host_and_join(alice, bob)
    assert joined["via"] == "webrtc"
    await _chat(bob, alice, "over a data channel signalled through two instances")


def _urls(first: ServerProcess, then: ServerProcess, extra: str = "") -> str:
    return f'[network]\nlobbyUrl = ["{first.url}", "{then.url}"]\n{extra}'


async def _registered(*nodes: NodeProcess) -> None:
    for node in nodes:
        async def up(node: NodeProcess = node) -> bool:
            async with node.client() as tab:
                return bool((await tab.request("lobby", "state"))["connected"])

        await eventually(up, timeout=10, what=f"{node.name} registered")


async def test_a_guest_on_another_instance_joins_through_the_relay_across(
    cluster: Cluster, servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    """Each node is attached at the relay beside its own lobby instance: what bob sends
    alice goes from two to one over the bus."""
    one, two = await two_instances(servers, nats)
    alice = cluster.new("alice", config=_urls(one, two, "enableDirect = false\n"))
    bob = cluster.new("bob", config=_urls(two, one))
    await cluster.start(alice, bob)
    await _registered(alice, bob)
    joined, steps = await _host_and_join(alice, bob)
    assert joined["via"] == "relay"
    assert {s["kind"] for s in steps} == {"relay"}
    await _chat(bob, alice, "through two relay instances and one mailbox")
    await _chat(alice, bob, "and back")
    # Neither instance holds the other's node: each passed what its node sent to the
    # other instance (live over the bus, or through the shared mailbox).
    for lobby in (one, two):
        across = sum([await _lobby_metric(lobby, "hd_relay_envelopes_queued_total"),
                      await _lobby_metric(lobby, "hd_relay_envelopes_forwarded_total")])
        assert across > 0, lobby.name


async def test_a_host_whose_instance_is_killed_registers_on_the_other_with_its_room(
    cluster: Cluster, servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    one, two = await two_instances(servers, nats)
    alice = cluster.new("alice", config=_urls(one, two))
    bob = cluster.new("bob", config=_urls(two, one))
    await cluster.start(alice, bob)
    await _registered(alice, bob)
    await _host_and_join(alice, bob)
    async with bob.client() as tb:
        rooms = (await tb.request("lobby", "list_rooms"))["rooms"]
    (room,) = [r for r in rooms if r["host"] == alice.node_id]
    one.kill()  # SIGKILL
    t0 = trio.current_time()

    async def room_back() -> bool:
        async with bob.client() as tb:
            listed = (await tb.request("lobby", "list_rooms"))["rooms"]
        return any(r["id"] == room["id"] and r["host"] == alice.node_id for r in listed)

    await eventually(room_back, timeout=5, what="alice's room, hosted from instance two")
    assert trio.current_time() - t0 < 5
    async with alice.client() as ta:
        state = await ta.request("lobby", "state")
    assert state["url"] == two.url
    # The room takes guests again: a third node joins it through instance two.
    (carol,) = await cluster.spawn("carol")
    await _connected_to_lobby(carol, two.url)
    async with carol.client() as tc:
        again = await tc.request("lobby", "join_room", {"roomId": room["id"]}, timeout=20)
    assert again["peer"]["node_id"] == alice.node_id
