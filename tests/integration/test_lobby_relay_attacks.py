"""Hostile clients against real ``hd-lobby`` and ``hd-relay`` processes (SPEC 7).

Every attacker here is written from the wire format: a raw WebSocket (``dial_ws`` or a
hand-made upgrade from another loopback address), frames built by hand or captured
from an honest client. Honest clients are driven by the node-side helpers
(``LobbyClient``, ``attach_frame``, ``relay_frame``). What must hold:

- a proof of identity (``register``, ``attach``) is bound to one connection's nonce and
  one server: a captured or forged one gets ``error auth`` and a closed connection,
  and the honest node it names is left alone;
- a relay passes on only what the attached node itself signed, to the node it signed
  it for, while it has hops left;
- room policies, visibility and capacities hold against a real lobby;
- a silent node expires after three heartbeats and takes its rooms with it; the newest
  connection of a node wins and keeps them;
- floods of garbage and of frames over the rate limit cost the attacker its
  connection, not honest clients their latency.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from hd_protocol import Identity, verify_envelope
from hd_protocol.brokers.frames import attach_bytes, encode_frame, parse_challenge
from hd_protocol.envelope import envelope_from_obj
from hd_protocol.identity import b64encode

from .conftest import _clean_env
from .lobbyclients import (
    ATTACKER_HOST,
    POLICY_CLOSE,
    Frame,
    LobbyNode,
    RelayNode,
    Wire,
    fleet,
    is_error,
    is_type,
    lobby_garbage_round,
    lobby_rate_round,
    p95,
    readdressed,
    relay_garbage_round,
    relay_rate_round,
)
from .servers import Servers, servers  # noqa: F401 - the fixture

REFUSED = {"bad_request", "auth", "denied"}  # how a relay may word "not yours to send"


def _answer(*types: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") in types


async def _refused(wire: Wire, send: str, *, code: str) -> Frame:
    """Send ``send``; the answer is ``error code`` and the connection is then closed
    by the server for breaking its rules."""
    start = wire.mark()
    await wire.send(send)
    err = await wire.wait_for(_answer("error", "registered", "attached"), start=start,
                              what="the refusal")
    assert err == {"type": "error", "code": code, "message": err.get("message")}, err
    closed = await wire.wait_closed()
    assert closed.code == POLICY_CLOSE, closed
    assert wire.frames[start:] == [err], wire.frames[start:]
    return err


# --- 1. a captured register ------------------------------------------------------------


async def test_a_register_replayed_on_another_connection_is_refused(
    servers: Servers,  # noqa: F811
) -> None:
    lobby = await servers.lobby().astart()
    async with fleet() as f:
        alice = await f.lobby_node(lobby.url, "alice")
        observer = await f.lobby_node(lobby.url, "observer")
        assert alice.register_wire is not None
        captured = alice.register_wire

        mallory = await f.wire(lobby.url, "mallory", local=ATTACKER_HOST)
        await mallory.wait_for(is_type("challenge"))
        await _refused(mallory, captured, code="auth")

        # The honest connection lives on, registered, never replaced.
        rooms = await alice.request(alice.client.list_rooms().wire, _answer("rooms", "error"))
        assert rooms["type"] == "rooms", rooms
        assert alice.wire.closed is None and not alice.wire.matching(is_error())
        # Others still see alice online (an offline word would come within one batch).
        carol = await f.lobby_node(lobby.url, "carol")
        assert carol.registered is not None
        seen = {e["node_id"]: e["status"] for e in carol.registered["presence"]}
        assert seen.get(alice.node_id) == "online", seen
        await trio.sleep(0.5)
        words = observer.wire.matching(
            lambda fr: fr.get("type") == "presence"
            and fr["node"]["node_id"] == alice.node_id)
        assert all(w["node"]["status"] != "offline" for w in words), words

        # The same capture, replayed again once alice is gone, is no better.
        await alice.wire.aclose()
        late = await f.wire(lobby.url, "mallory-late", local=ATTACKER_HOST)
        await late.wait_for(is_type("challenge"))
        await _refused(late, captured, code="auth")


# --- 2. attach: forged and replayed -----------------------------------------------------


async def test_relay_attach_with_a_bad_or_replayed_signature_is_refused(
    servers: Servers,  # noqa: F811
) -> None:
    relay = await servers.relay().astart()
    async with fleet() as f:
        alice = await f.relay_node(relay.url, "alice")
        mallory = Identity.generate()

        def forged_by_another_key(hello: Any) -> str:  # alice's id and key, mallory's sig
            signed = attach_bytes(hello.nonce, hello.server_id, alice.node_id,
                                  alice.identity.public_key)
            return encode_frame("attach", {"node_id": alice.node_id,
                                           "public_key": alice.identity.public_key,
                                           "sig": mallory.sign(signed)})

        def over(nonce: str, server_id: str) -> str:  # mallory's own, over the wrong bytes
            signed = attach_bytes(nonce, server_id, mallory.node_id, mallory.public_key)
            return encode_frame("attach", {"node_id": mallory.node_id,
                                           "public_key": mallory.public_key,
                                           "sig": mallory.sign(signed)})

        other_server = Identity.generate().node_id
        forgeries: list[tuple[str, Callable[[Any], str]]] = [
            ("another key", forged_by_another_key),
            ("another nonce", lambda h: over(b64encode(os.urandom(32)), h.server_id)),
            ("another server", lambda h: over(h.nonce, other_server)),
            ("garbage sig", lambda h: encode_frame("attach", {
                "node_id": mallory.node_id, "public_key": mallory.public_key,
                "sig": b64encode(os.urandom(64))})),
        ]
        for what, forge in forgeries:
            w = await f.wire(relay.url, f"forger ({what})", local=ATTACKER_HOST)
            hello = parse_challenge(await w.wait_for(is_type("challenge")))
            await _refused(w, forge(hello), code="auth")

        # alice's own attach, captured and replayed on another connection.
        assert alice.attach_wire is not None
        w = await f.wire(relay.url, "replayer", local=ATTACKER_HOST)
        await w.wait_for(is_type("challenge"))
        await _refused(w, alice.attach_wire, code="auth")

        # alice is still attached: an envelope for her is delivered live, not queued.
        bob = await f.relay_node(relay.url, "bob")
        env = bob.envelope(alice.node_id)
        start = alice.wire.mark()
        await bob.wire.send(bob.relay(alice.node_id, env))
        got = await alice.wire.wait_for(is_type("relay"), start=start, what="bob's envelope")
        assert got["from"] == bob.node_id and got["envelope"]["msg_id"] == env.msg_id
        assert "qid" not in got, got
        assert not bob.wire.matching(_answer("relay_ack", "error")), bob.wire.frames
        assert alice.wire.closed is None and not alice.wire.matching(is_error())


# --- 3. routing through the relay -------------------------------------------------------


async def test_through_the_relay_a_node_cannot_forge_readdress_or_overspend(
    servers: Servers,  # noqa: F811
) -> None:
    relay = await servers.relay().astart()
    async with fleet() as f:
        alice = await f.relay_node(relay.url, "alice")
        bob = await f.relay_node(relay.url, "bob")
        mallory = await f.relay_node(relay.url, "mallory")

        async def deliver(sender: RelayNode, target: RelayNode, wire_frame: str,
                          msg_id: str) -> Frame:
            start = target.wire.mark()
            await sender.wire.send(wire_frame)
            return await target.wire.wait_for(
                lambda fr: fr.get("type") == "relay" and fr["envelope"]["msg_id"] == msg_id,
                start=start, what=f"envelope {msg_id}")

        async def attack(frame: str, *targets: RelayNode) -> Frame:
            """mallory sends ``frame``: it gets an error and nothing reaches a target
            (mallory's next, honest envelope is the first thing each target gets)."""
            marks = [t.wire.mark() for t in targets]
            m = mallory.wire.mark()
            await mallory.wire.send(frame)
            err = await mallory.wire.wait_for(_answer("error", "relay_ack"), start=m,
                                              what="the refusal")
            assert err["type"] == "error" and err["code"] in REFUSED, err
            for t, start in zip(targets, marks, strict=True):
                sentinel = mallory.envelope(t.node_id, n=999)
                got = await deliver(mallory, t, mallory.relay(t.node_id, sentinel),
                                    sentinel.msg_id)
                assert t.wire.frames[start:] == [got], (
                    f"something reached {t.wire.name}: {t.wire.frames[start:]}")
            assert mallory.wire.closed is None
            return err

        # A real envelope of alice's, sent to bob: it passes, signature intact, one hop
        # spent.
        env_ab = alice.envelope(bob.node_id)
        captured = alice.relay(bob.node_id, env_ab)
        got = await deliver(alice, bob, captured, env_ab.msg_id)
        assert got["from"] == alice.node_id
        assert got["envelope"]["ttl"] == env_ab.ttl - 1
        assert verify_envelope(envelope_from_obj(got["envelope"]), alice.identity.public_key)

        # 1. mallory cannot send it as its own: src is not the attached node.
        await attack(captured, bob)
        # ... not even to itself.
        await attack(alice.relay(mallory.node_id, readdressed(env_ab, mallory.node_id)),
                     alice, bob)

        # 2. Re-addressing: dst != to is refused before anything moves.
        env_ma = mallory.envelope(alice.node_id)
        assert verify_envelope(env_ma, mallory.identity.public_key)
        await attack(mallory.relay(bob.node_id, env_ma), alice, bob)
        # dst changed to match to: the relay may pass it on (it does not verify
        # signatures), but bob then holds an envelope nobody signed for him.
        moved = readdressed(env_ma, bob.node_id)
        sa, sb, m = alice.wire.mark(), bob.wire.mark(), mallory.wire.mark()
        await mallory.wire.send(mallory.relay(bob.node_id, moved))
        sentinel = mallory.envelope(bob.node_id, n=1000)
        await deliver(mallory, bob, mallory.relay(bob.node_id, sentinel), sentinel.msg_id)
        arrived = [fr for fr in bob.wire.frames[sb:]
                   if fr.get("envelope", {}).get("msg_id") != sentinel.msg_id]
        for fr in arrived:
            assert fr["type"] == "relay" and fr["from"] == mallory.node_id, fr
            env = envelope_from_obj(fr["envelope"])
            assert env.dst == bob.node_id and env.msg_id == env_ma.msg_id
            assert not verify_envelope(env, mallory.identity.public_key), fr
        if not arrived:  # a stricter relay refused it: then mallory was told so
            assert mallory.wire.matching(is_error(), start=m), mallory.wire.frames[m:]
        assert alice.wire.frames[sa:] == [], alice.wire.frames[sa:]

        # 3. No hops left: ttl 0 is not forwarded; ttl 1 arrives with 0.
        await attack(mallory.relay(bob.node_id, mallory.envelope(bob.node_id, ttl=0)), bob)
        last = mallory.envelope(bob.node_id, ttl=1)
        got = await deliver(mallory, bob, mallory.relay(bob.node_id, last), last.msg_id)
        assert got["envelope"]["ttl"] == 0
        assert verify_envelope(envelope_from_obj(got["envelope"]),
                               mallory.identity.public_key)

        # None of this cost the honest nodes anything.
        for node in (alice, bob):
            assert node.wire.closed is None and not node.wire.matching(is_error())


# --- 4. rooms ------------------------------------------------------------------------------


async def _create(host: LobbyNode, name: str, visibility: str, policy: str,
                  token: str | None = None) -> Frame:
    ans = await host.request(host.client.create_room(name, visibility, policy, token).wire,
                             _answer("room_created", "error"), what="room_created")
    assert ans["type"] == "room_created", ans
    return dict(ans["room"])


async def _join(node: LobbyNode, room_id: str, token: str | None = None) -> Frame:
    """``room_info`` or the ``error`` the lobby answered ``join_room`` with."""
    return await node.request(node.client.join_room(room_id, token).wire,
                              _answer("room_info", "error"), what="the join's answer")


async def test_room_policies_hold_against_a_real_lobby(
    servers: Servers, tmp_path: Path,  # noqa: F811
) -> None:
    listed_id, stranger_id = Identity.generate(), Identity.generate()
    directory = tmp_path / "directory.json"
    directory.write_text(json.dumps([{"node_id": listed_id.node_id,
                                      "public_key": listed_id.public_key}]))
    lobby = await servers.lobby(extra_args=["--directory", str(directory)]).astart()
    async with fleet() as f:
        host = await f.lobby_node(lobby.url, "host")
        listed = await f.lobby_node(lobby.url, "listed", identity=listed_id)
        stranger = await f.lobby_node(lobby.url, "stranger", identity=stranger_id)
        att = await listed.wire.wait_for(is_type("attestation"), what="the attestation")
        assert att["cert"]["node_id"] == listed.node_id
        assert not stranger.wire.matching(is_type("attestation"))

        # token: only the right token gets in.
        locked = await _create(host, "locked", "public", "token", "s3cret")
        assert locked["locked"] is True and locked["joinPolicy"] == "token"
        for token in (None, "", "wrong", "s3cret ", "S3CRET"):
            ans = await _join(stranger, locked["id"], token)
            assert ans["type"] == "error" and ans["code"] == "denied", (token, ans)
        ans = await _join(stranger, locked["id"], "s3cret")
        assert ans["type"] == "room_info" and ans["host"]["node_id"] == host.node_id, ans
        joining = await host.wire.wait_for(is_type("peer_joining", roomId=locked["id"]))
        assert joining["guest"]["node_id"] == stranger.node_id

        # directory: only nodes on the lobby's list, whatever they bring.
        vouched = await _create(host, "vouched", "public", "directory")
        for token in (None, "anything"):
            ans = await _join(stranger, vouched["id"], token)
            assert ans["type"] == "error" and ans["code"] == "denied", (token, ans)
        ans = await _join(listed, vouched["id"])
        assert ans["type"] == "room_info" and ans["roomId"] == vouched["id"], ans
        joining = await host.wire.wait_for(is_type("peer_joining", roomId=vouched["id"]))
        assert joining["guest"]["node_id"] == listed.node_id
        assert not host.wire.matching(
            lambda fr: fr.get("type") == "peer_joining"
            and fr["guest"]["node_id"] == stranger.node_id and fr["roomId"] == vouched["id"])

        # unlisted: not in anyone's list, but joinable by its id.
        hidden = await _create(host, "hidden", "unlisted", "open")
        assert hidden["visibility"] == "unlisted"
        for node in (stranger, listed, host):
            ans = await node.request(node.client.list_rooms().wire, is_type("rooms"))
            ids = {r["id"] for r in ans["rooms"]}
            assert ids == {locked["id"], vouched["id"]}, ans
        newcomer = await f.lobby_node(lobby.url, "newcomer")
        assert newcomer.registered is not None
        assert {r["id"] for r in newcomer.registered["rooms"]} == {locked["id"], vouched["id"]}
        ans = await _join(newcomer, hidden["id"])
        assert ans["type"] == "room_info", ans

        ans = await _join(newcomer, "0" * 32)
        assert ans["type"] == "error" and ans["code"] == "no_room", ans
        for node in (host, listed, stranger, newcomer):
            assert node.wire.closed is None


async def test_a_host_gets_eight_rooms_and_a_room_sixty_four_members(
    servers: Servers,  # noqa: F811
) -> None:
    lobby = await servers.lobby().astart()
    async with fleet() as f:
        host = await f.lobby_node(lobby.url, "host")
        rooms = [await _create(host, f"room {i}", "public", "open") for i in range(8)]
        assert len({r["id"] for r in rooms}) == 8
        ans = await host.request(host.client.create_room("ninth", "public", "open").wire,
                                 _answer("room_created", "error"))
        assert ans["type"] == "error" and ans["code"] == "full", ans
        # Closing one makes room for another.
        closed = await host.request(host.client.leave_room(rooms[7]["id"]).wire,
                                    _answer("room_closed", "error"))
        assert closed == {"type": "room_closed", "roomId": rooms[7]["id"]}, closed
        rooms[7] = await _create(host, "again", "unlisted", "open")

        # 65 members, each its own registered connection. The lobby takes at most 32
        # connections from one address, so they come from several loopback addresses.
        members: list[LobbyNode] = []
        for i in range(65):
            members.append(await f.lobby_node(lobby.url, f"member {i}",
                                              local=f"127.0.0.{2 + i // 30}"))
        room = rooms[0]["id"]
        for m in members[:64]:
            ans = await _join(m, room)
            assert ans["type"] == "room_info", (m.wire.name, ans)
        ans = await _join(members[64], room)
        assert ans["type"] == "error" and ans["code"] == "full", ans
        listing = await host.request(host.client.list_rooms().wire, is_type("rooms"))
        (view,) = [r for r in listing["rooms"] if r["id"] == room]
        assert view["members"] == 64, view
        # Joining again is not joining twice; leaving makes a place.
        ans = await _join(members[0], room)
        assert ans["type"] == "room_info", ans
        left = await members[1].request(members[1].client.leave_room(room).wire,
                                        _answer("room_closed", "error"))
        assert left == {"type": "room_closed", "roomId": room}, left
        ans = await _join(members[64], room)
        assert ans["type"] == "room_info", ans
        assert all(m.wire.closed is None for m in members)


# --- 5. heartbeats and replaced connections ----------------------------------------------


def _presence_of(wire: Wire, node_id: str, start: int = 0) -> list[Frame]:
    return wire.matching(lambda fr: fr.get("type") == "presence"
                         and fr["node"]["node_id"] == node_id, start)


async def test_a_silent_node_expires_after_three_heartbeats_and_its_rooms_close(
    servers: Servers,  # noqa: F811
) -> None:
    lobby = await servers.lobby(extra_args=["--heartbeat", "1"]).astart()
    async with fleet() as f:
        observer = await f.lobby_node(lobby.url, "observer", heartbeat=True)
        member = await f.lobby_node(lobby.url, "member", heartbeat=True)
        assert observer.registered is not None and observer.registered["heartbeat_s"] == 1
        silent = await f.lobby_node(lobby.url, "silent")  # never sends a heartbeat
        public = await _create(silent, "public", "public", "open")
        hidden = await _create(silent, "hidden", "unlisted", "token", "t")
        # silent's last frame: the server saw it before this answer came back.
        last_sent = silent.wire.arrived[-1]
        assert (await _join(member, public["id"]))["type"] == "room_info"
        assert (await _join(member, hidden["id"], "t"))["type"] == "room_info"
        start_obs, start_mem = observer.wire.mark(), member.wire.mark()

        i = await observer.wire.wait_index(
            lambda fr: fr.get("type") == "presence" and fr["node"]["node_id"] == silent.node_id
            and fr["node"]["status"] == "offline",
            start=start_obs, timeout=15, what="silent to go offline")
        gone_after = observer.wire.arrived[i] - last_sent
        assert 2.9 <= gone_after <= 6.0, gone_after  # 3 heartbeats of 1 s (+ a batch)
        closed = {(await member.wire.wait_for(is_type("room_closed", roomId=r["id"]),
                                              start=start_mem))["roomId"]
                  for r in (public, hidden)}
        assert closed == {public["id"], hidden["id"]}
        await member.wire.wait_for(
            lambda fr: fr.get("type") == "presence" and fr["node"]["node_id"] == silent.node_id
            and fr["node"]["status"] == "offline", start=start_mem)
        await silent.wire.wait_closed(timeout=5)

        # The rooms are gone; the nodes that kept their heartbeat are not.
        ans = await _join(member, public["id"])
        assert ans["type"] == "error" and ans["code"] == "no_room", ans
        listing = await observer.request(observer.client.list_rooms().wire, is_type("rooms"))
        assert listing["rooms"] == [], listing
        await trio.sleep(2.0)  # more than three heartbeats since they registered
        assert observer.wire.closed is None and not observer.wire.matching(is_error())
        assert member.wire.closed is None and member.wire.matching(is_error()) == [ans]
        assert all(w["node"]["status"] == "online"
                   for w in _presence_of(observer.wire, member.node_id))
        fresh = await f.lobby_node(lobby.url, "fresh")
        assert fresh.registered is not None
        seen = {e["node_id"] for e in fresh.registered["presence"]}
        assert seen == {observer.node_id, member.node_id}, seen


async def test_the_newest_connection_of_a_node_wins_and_keeps_its_rooms(
    servers: Servers,  # noqa: F811
) -> None:
    lobby = await servers.lobby(extra_args=["--heartbeat", "1"]).astart()
    async with fleet() as f:
        observer = await f.lobby_node(lobby.url, "observer", heartbeat=True)
        me = Identity.generate()
        old = await f.lobby_node(lobby.url, "host (old)", identity=me, heartbeat=True)
        room = await _create(old, "room", "public", "open")
        locked = await _create(old, "locked", "unlisted", "token", "pw")
        guest = await f.lobby_node(lobby.url, "guest", heartbeat=True)
        assert (await _join(guest, room["id"]))["type"] == "room_info"

        new = await f.lobby_node(lobby.url, "host (new)", identity=me, heartbeat=True)
        err = await old.wire.wait_for(is_error(), what="error replaced")
        assert err["code"] == "replaced", err
        await old.wire.wait_closed(timeout=5)
        assert new.registered is not None
        assert me.node_id not in {e["node_id"] for e in new.registered["presence"]}
        assert {r["id"] for r in new.registered["rooms"]} == {room["id"]}

        async def still_hosting(tag: str) -> None:
            late = await f.lobby_node(lobby.url, f"late guest {tag}", heartbeat=True)
            mark = new.wire.mark()
            for rid, token in ((room["id"], None), (locked["id"], "pw")):
                ans = await _join(late, rid, token)
                assert ans["type"] == "room_info" and ans["host"]["node_id"] == me.node_id, ans
                joining = await new.wire.wait_for(is_type("peer_joining", roomId=rid),
                                                  start=mark)
                assert joining["guest"]["node_id"] == late.node_id

        await still_hosting("right after")
        # Three heartbeats after the old connection fell silent and closed: nothing of
        # its cleanup or expiry touched the node on its new connection.
        await trio.sleep(3.5)
        await still_hosting("later")
        assert not guest.wire.matching(is_type("room_closed")), guest.wire.frames
        words = _presence_of(observer.wire, me.node_id)
        assert words and all(w["node"]["status"] == "online" for w in words), words
        assert new.wire.closed is None and not new.wire.matching(is_error())


# --- 6. floods -----------------------------------------------------------------------------
#
# The attackers run in a process of their own (``python -m integration.lobbyclients``):
# in this one they would share the event loop with the honest client being measured,
# and the test would time its own attackers' CPU rather than the server.

TESTS_DIR = Path(__file__).resolve().parents[1]


async def _readline(stream: trio.abc.ReceiveStream, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        data = await stream.receive_some(4096)
        if not data:
            break
        buf += data
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


@asynccontextmanager
async def _attackers(url: str, kinds: list[str], log: Path) -> AsyncIterator[dict[str, int]]:
    """Attack rounds of ``kinds`` over and over in another process while the block
    runs; then the rounds each kind finished (every round checked what it got)."""
    rounds: dict[str, int] = {}
    with log.open("wb") as err:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "integration.lobbyclients", url, *kinds],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=TESTS_DIR,
            env=_clean_env())
        assert proc.stdin is not None and proc.stdout is not None
        buf = bytearray()
        try:
            with trio.fail_after(30):
                started = await _readline(proc.stdout, buf)
            assert started == b"started", (started, log.read_text()[-3000:])
            yield rounds
            await proc.stdin.aclose()
            with trio.fail_after(30):
                last = await _readline(proc.stdout, buf)
                await proc.wait()
            assert proc.returncode == 0, log.read_text()[-3000:]
            rounds.update(json.loads(last))
        finally:
            if proc.returncode is None:
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
            with trio.CancelScope(shield=True):
                await proc.stdin.aclose()
                await proc.stdout.aclose()


async def _measure(round_trip: Callable[[], Awaitable[float]], n: int = 40) -> list[float]:
    out = []
    for _ in range(n):
        out.append(await round_trip())
        await trio.sleep(0.025)  # 40/s: under an honest client's own rate limit
    return out


def _check_latency(before: list[float], during: list[float]) -> None:
    base, hit = p95(before), p95(during)
    bound = max(5 * base, base + 0.100)
    print(f"p95 round trip: {base * 1000:.1f} ms before, {hit * 1000:.1f} ms under the flood")
    assert hit <= bound, (f"p95 round trip {hit * 1000:.1f} ms under the flood, "
                          f"{base * 1000:.1f} ms before (bound {bound * 1000:.1f} ms)")


@pytest.mark.latency  # other tests' CPU would be in its figures
async def test_floods_cost_the_attacker_its_lobby_connection_not_honest_latency(
    servers: Servers, tmp_path: Path,  # noqa: F811
) -> None:
    lobby = await servers.lobby().astart()
    async with fleet() as f:
        honest = await f.lobby_node(lobby.url, "honest")
        host = await f.lobby_node(lobby.url, "host")
        await _create(host, "a room", "public", "open")

        async def round_trip() -> float:
            start = honest.wire.mark()
            t0 = trio.current_time()
            await honest.wire.send(honest.client.list_rooms().wire)
            i = await honest.wire.wait_index(_answer("rooms", "error"), start=start)
            assert honest.wire.frames[i]["type"] == "rooms", honest.wire.frames[i]
            return honest.wire.arrived[i] - t0

        # One of each, here, on their own first.
        await lobby_garbage_round(f, lobby.url)
        await lobby_rate_round(f, lobby.url)

        await _measure(round_trip, 3)  # warm up
        before = await _measure(round_trip)
        kinds = ["lobby-garbage", "lobby-rate"]
        async with _attackers(lobby.url, kinds, tmp_path / "attackers.log") as rounds:
            await trio.sleep(0.2)
            during = await _measure(round_trip)
        print(f"attack rounds during the measurement: {rounds}")
        assert all(rounds[k] >= 1 for k in kinds), rounds
        _check_latency(before, during)

        assert lobby.running
        assert await round_trip() < 5.0
        for node in (honest, host):
            assert node.wire.closed is None and not node.wire.matching(is_error())


@pytest.mark.latency  # other tests' CPU would be in its figures
async def test_floods_cost_the_attacker_its_relay_connection_not_honest_latency(
    servers: Servers, tmp_path: Path,  # noqa: F811
) -> None:
    relay = await servers.relay().astart()
    async with fleet() as f:
        alice = await f.relay_node(relay.url, "alice")
        bob = await f.relay_node(relay.url, "bob")

        async def round_trip() -> float:
            env = alice.envelope(bob.node_id)
            frame = alice.relay(bob.node_id, env)
            start = bob.wire.mark()
            t0 = trio.current_time()
            await alice.wire.send(frame)
            i = await bob.wire.wait_index(_answer("relay", "error"), start=start)
            assert bob.wire.frames[i]["envelope"]["msg_id"] == env.msg_id, bob.wire.frames[i]
            return bob.wire.arrived[i] - t0

        await relay_garbage_round(f, relay.url)
        await relay_rate_round(f, relay.url)

        await _measure(round_trip, 3)
        before = await _measure(round_trip)
        kinds = ["relay-garbage", "relay-rate"]
        async with _attackers(relay.url, kinds, tmp_path / "attackers.log") as rounds:
            await trio.sleep(0.2)
            during = await _measure(round_trip)
        print(f"attack rounds during the measurement: {rounds}")
        assert all(rounds[k] >= 1 for k in kinds), rounds
        _check_latency(before, during)

        assert relay.running
        assert await round_trip() < 5.0
        for node in (alice, bob):
            assert node.wire.closed is None and not node.wire.matching(is_error())
        assert not alice.wire.matching(is_type("relay_ack"))  # all of it went out live
