"""Hostile or broken input never takes a node down (SPEC 4 timing, 5, 9, 11).

A link that never says hello is closed at the handshake deadline; junk on /peer-ws
ends that link at once; junk on /ws is answered with ``error`` events on a socket
that stays open; inside a session 16 failures close it, 15 do not. Through all of
it the node keeps serving its paired peer.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import replace
from typing import Any

import trio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from hd_protocol import (
    Dialer,
    Identity,
    decode_invite,
    encode_envelope,
    make_envelope,
    seal_envelope,
    sign_envelope,
)
from hd_protocol import handshake as hs
from hd_protocol import session as ss

from .conftest import Cluster, HandshakeRefused, NodeProcess, RawPeer, connected, now_ms

HANDSHAKE_CONFIG = "[network]\nhandshakeTimeout = 1.0\n"


def _closed_after(url: str, frames: list[str | bytes], timeout: float) -> float:
    """Open a raw websocket, send ``frames``, return seconds until the node closes it."""
    with ws_connect(url, open_timeout=5, close_timeout=2, proxy=None, compression=None,
                    ping_interval=None, max_size=None) as ws:
        t0 = time.monotonic()
        for f in frames:
            try:
                ws.send(f)
            except ConnectionClosed:
                break
        try:
            while True:  # whatever the node says before it hangs up
                ws.recv(timeout=timeout)
        except ConnectionClosed:
            return time.monotonic() - t0
        except TimeoutError:
            return float("inf")


async def test_peer_link_that_never_sends_hello_is_closed_at_the_handshake_deadline(
    cluster: Cluster,
) -> None:
    (node,) = await cluster.spawn("alice", config=HANDSHAKE_CONFIG)
    hello = Dialer(Identity.generate(), rng=os.urandom, now=now_ms(),
                   expected_node_id=node.node_id).start(now_ms())[0]
    assert isinstance(hello, hs.Send)
    results: dict[str, float] = {}

    async def probe(name: str, frames: list[str | bytes]) -> None:
        results[name] = await trio.to_thread.run_sync(
            lambda: _closed_after(node.peer_url, frames, timeout=5.0))

    async with trio.open_nursery() as n:
        n.start_soon(probe, "silent", [])
        n.start_soon(probe, "hello_then_silent", [hello.wire])  # never sends auth
    for name, elapsed in results.items():
        assert 0.8 <= elapsed <= 3.0, (name, elapsed)
    assert await node.metric("hd_handshakes_total", result="timeout", role="acceptor") == 2.0
    assert (await node.http("GET", "/healthz", token=False)).json()["ok"] is True


# --- junk on /peer-ws -------------------------------------------------------------------


def _peer_junk(target: str, rnd: random.Random) -> list[str | bytes]:
    """100 frames no acceptor may take: noise, broken JSON, JSON that is no envelope,
    envelopes with bad fields, and hellos whose signatures do not verify."""
    out: list[str | bytes] = []
    out += [rnd.randbytes(rnd.randrange(1, 600)) for _ in range(15)]
    out += ["".join(chr(rnd.randrange(32, 0x2FF)) for _ in range(rnd.randrange(1, 200)))
            for _ in range(10)]
    out += ['{"v":1,', "{", "[", '{"v":1,"type":"hello"', "\x00", " ", "nul", '"',
            "{'v': 1}", '{"v":1}}']
    out += [json.dumps(x) for x in (None, 1, "hello", [], [1, 2], {}, {"v": 1},
                                    {"type": "hello"}, True, 1.5)]

    def hello(**change: Any) -> dict[str, Any]:
        ident = Identity.generate()
        (send,) = Dialer(ident, rng=os.urandom, now=now_ms(),
                         expected_node_id=target).start(now_ms())
        assert isinstance(send, hs.Send)
        env = dict(json.loads(send.wire))
        env.update(change)
        return env

    # Envelope-shaped but malformed (SPEC 3 strict decoding).
    for change in ({"v": 2}, {"v": "1"}, {"ts": 1.0}, {"extra": 1}, {"msg_id": "xyz"},
                   {"type": "Hello"}, {"ttl": 17}, {"src": "not-a-node-id"}, {"seq": -1},
                   {"data": []}, {"sig": ""}, {"box": 5}, {"re": 7}, {"dst": 12},
                   {"type": "x" * 40}):
        out.append(json.dumps(hello(**change)))
    env = hello()
    del env["sig"]
    out.append(json.dumps(env))
    env = hello()
    del env["data"]
    out.append(json.dumps(env))
    out += ["[" * 40 + "]" * 40, '{"v":1,"v":1}', "\ud800".encode("utf-8", "surrogatepass")]
    # Well-formed hellos whose signatures do not verify.
    for i in range(20):
        env = hello()
        kind = i % 5
        if kind == 0:  # tampered after signing
            env["data"]["node_name"] = "mallory"
        elif kind == 1:  # signature of another key
            other = hello()
            env["sig"] = other["sig"]
        elif kind == 2:  # bit flip in the signature
            sig = bytearray(env["sig"].encode())
            sig[5] = ord("A") if sig[5] != ord("A") else ord("B")
            env["sig"] = sig.decode()
        elif kind == 3:  # src is not the node id of public_key
            env["src"] = hello()["src"]
        else:  # another node's key presented with our src
            env["data"]["public_key"] = hello()["data"]["public_key"]
        out.append(json.dumps(env))
    out += ["hello"] * (100 - len(out))
    assert len(out) == 100
    return out


async def test_100_malformed_peer_frames_are_refused_and_the_paired_peer_is_still_served(
    shared_pair: tuple[NodeProcess, NodeProcess],
) -> None:
    alice, bob = shared_pair
    frames = _peer_junk(alice.node_id, random.Random(20260101))
    failed_before = await alice.metric_sum("hd_handshakes_total", role="acceptor")
    ok_before = await alice.metric("hd_handshakes_total", result="ok", role="acceptor")

    # One link per frame (the node ends a link at its first bad frame), four at a time.
    elapsed: list[float] = [0.0] * len(frames)
    limit = trio.CapacityLimiter(4)

    async def one(i: int) -> None:
        elapsed[i] = await trio.to_thread.run_sync(
            lambda: _closed_after(alice.peer_url, [frames[i]], timeout=5.0), limiter=limit)

    async with trio.open_nursery() as n:
        for i in range(len(frames)):
            n.start_soon(one, i)
    # Refused at once, not at the 10 s handshake deadline.
    slow = [(i, t) for i, t in enumerate(elapsed) if t > 2.0]
    assert not slow, slow
    failed = await alice.metric_sum("hd_handshakes_total", role="acceptor") - failed_before
    assert failed == 100
    assert await alice.metric("hd_handshakes_total", result="ok", role="acceptor") == ok_before
    assert await alice.metric("hd_handshakes_in_flight") in (None, 0.0)
    # The node still serves: health, the tab API, and the same session with bob.
    assert (await alice.http("GET", "/healthz", token=False)).json()["ok"] is True
    assert await connected(alice, bob) and await connected(bob, alice)
    assert await alice.metric("hd_sessions") == 1.0
    async with alice.client() as tab:
        peers = await tab.request("network", "list_peers")
        assert [p["node_id"] for p in peers["peers"] if p["status"] == "connected"] == [
            bob.node_id]
        assert set(await tab.request("system", "ping")) == {"req"}
        # Round trips over the session still work (sealed bench_echo both ways).
        r = await tab.request("network", "bench", {"node_id": bob.node_id, "count": 20,
                                                    "size": 16}, timeout=30)
        assert (r["timeouts"], r["errors"], r["rtt_ms"]["samples"]) == (0, 0, 20)


# --- junk on /ws ------------------------------------------------------------------------


def _tab_junk(rnd: random.Random) -> list[str | bytes]:
    out: list[str | bytes] = []
    out += [rnd.randbytes(rnd.randrange(1, 300)) for _ in range(10)]
    out += ["".join(chr(rnd.randrange(32, 0x2FF)) for _ in range(rnd.randrange(1, 100)))
            for _ in range(10)]
    out += ["{", '{"channel":', "[", "nul", '{"channel":"network","event":"list_peers",}',
            "[" * 50 + "]" * 50, '{"a":1,"a":2}', '{"channel":"network","event":1.5}']
    out += [json.dumps(x) for x in (None, 1, "x", [], {}, [{"channel": "system"}], 0.5,
                                    True)]
    frame = lambda c, e, d=None: json.dumps({"channel": c, "event": e, "data": d or {}})  # noqa: E731
    out += [json.dumps({"channel": "system"}), json.dumps({"event": "hello"}),
            json.dumps({"channel": "system", "event": "hello", "data": [], }),
            json.dumps({"channel": "system", "event": "hello", "extra": 1}),
            json.dumps({"channel": 5, "event": "hello"}),
            json.dumps({"channel": "system", "event": "Hello"}),
            json.dumps({"channel": "System", "event": "hello"}),
            json.dumps({"channel": "system\n", "event": "hello"}),
            json.dumps({"channel": "network", "event": "list_peers", "data": "x"}),
            json.dumps({"channel": "network", "event": "list_peers", "data": {"ts": 1.5}})]
    out += [frame(c, "hello") for c in ("nope", "admin", "peer", "x" * 40, "relay")]
    out += [frame("network", e) for e in ("shutdown", "exec", "list_peer", "hello",
                                          "invite", "peers")]
    out += [frame("system", e) for e in ("pong", "shutdown", "bye")]
    # Commands with missing or mistyped fields.
    out += [frame("network", "connect"), frame("network", "connect", {"address": 5}),
            frame("network", "connect", {"address": "x", "node_id": 3}),
            frame("network", "disconnect"), frame("network", "disconnect", {"node_id": []}),
            frame("network", "invite_revoke"), frame("network", "invite_revoke",
                                                     {"token_id": 1}),
            frame("network", "pair_redeem"), frame("network", "pair_redeem", {"invite": 1}),
            frame("network", "set_trust", {"node_id": "a"}),
            frame("network", "set_trust", {"node_id": "a", "trusted": "yes"}),
            frame("network", "invite_create", {"ttl": "1"}),
            frame("network", "bench", {"node_id": 1}),
            frame("network", "list_peers", {"req": 5}),
            frame("network", "list_peers", {"req": "x" * 65})]
    # Well-typed commands the hub refuses.
    out += [frame("network", "disconnect", {"node_id": "aaaaaaaaaaaaaaaa"}),
            frame("network", "set_trust", {"node_id": "aaaaaaaaaaaaaaaa", "trusted": True}),
            frame("network", "invite_revoke", {"token_id": "0123456789abcdef"}),
            frame("network", "invite_revoke", {"token_id": ""}),
            frame("network", "connect", {"address": "http://127.0.0.1:1/peer-ws"}),
            frame("network", "connect", {"address": "not a url"}),
            frame("network", "invite_create", {"ttl": 0}),
            frame("network", "invite_create", {"ttl": -5})]
    while len(out) < 100:
        out.append(rnd.randbytes(rnd.randrange(1, 50)))
    assert len(out) == 100, len(out)
    return out


async def test_100_malformed_tab_frames_each_get_an_error_and_the_socket_stays_open(
    shared_pair: tuple[NodeProcess, NodeProcess],
) -> None:
    alice, bob = shared_pair
    frames = _tab_junk(random.Random(7))
    async with alice.client() as tab:
        mark = tab.mark()
        for f in frames:
            await tab.send_raw(f)

        def errors() -> list[dict[str, Any]]:
            return [e for e in list(tab.events)[mark:] if e.get("event") == "error"]

        with trio.fail_after(10):
            while len(errors()) < 100:
                await trio.sleep(0.02)
        await trio.sleep(0.2)  # nothing more may come: exactly one answer per frame
        errs = errors()
        assert len(errs) == 100, [e["data"] for e in errs]
        assert all(set(e["data"]) >= {"code", "message"} for e in errs)
        # Nothing else answered a frame (broadcasts about peers may pass by).
        others = [e for e in list(tab.events)[mark:] if e.get("event") != "error"
                  and e.get("event") not in ("peer_update", "peer_metrics", "lan_peers")]
        assert others == [], others
        # Same socket, still served, and so is the peer.
        peers = await tab.request("network", "list_peers")
        assert [p["node_id"] for p in peers["peers"] if p["status"] == "connected"] == [
            bob.node_id]
        r = await tab.request("network", "bench", {"node_id": bob.node_id, "count": 5},
                              timeout=30)
        assert (r["timeouts"], r["errors"]) == (0, 0)
    assert (await alice.http("GET", "/healthz", token=False)).json()["ok"] is True
    assert await connected(bob, alice)


# --- junk inside a live session ---------------------------------------------------------


def _bad_session_frames(peer: RawPeer, alice_id: str, rnd: random.Random) -> list[str]:
    """Frames that pass nothing in SPEC 5's inbound pipeline, each a different check."""
    assert peer.session is not None and peer.result is not None
    me = peer.identity
    out: list[str] = ["junk", "{", json.dumps({"v": 1}), rnd.randbytes(40).hex()]

    def sealed(dst: str, seq: int, type: str = "ping") -> Any:
        env = make_envelope(type, msg_id=os.urandom(16).hex(), src=me.node_id, dst=dst,
                            ts=now_ms(), seq=seq)
        return sign_envelope(seal_envelope(env, peer.result.key_tx, {}), me)

    # A valid envelope, sent once for real, then replayed (seq not greater).
    _, outs = peer.session.ping(now_ms())
    wire = next(o.wire for o in outs if isinstance(o, ss.Send))
    peer.send_raw(wire)
    out += [wire, wire]
    # Addressed to another node.
    out.append(encode_envelope(sealed("aaaaaaaaaaaaaaaa", 10_000)))
    # Signature that does not verify with the pinned key.
    env = sealed(alice_id, 10_001)
    out.append(encode_envelope(replace(env, sig=Identity.generate().sign(b"x"))))
    env = sealed(alice_id, 10_002)
    out.append(encode_envelope(replace(env, ts=env.ts + 1)))  # tampered after signing
    # src is not the session's peer.
    other = Identity.generate()
    env = make_envelope("ping", msg_id=os.urandom(16).hex(), src=other.node_id,
                        dst=alice_id, ts=now_ms(), seq=10_003)
    out.append(encode_envelope(sign_envelope(seal_envelope(env, peer.result.key_tx, {}),
                                             other)))
    # Not sealed.
    env = make_envelope("ping", msg_id=os.urandom(16).hex(), src=me.node_id, dst=alice_id,
                        ts=now_ms(), seq=10_004)
    out.append(encode_envelope(sign_envelope(env, me)))
    # Sealed with the wrong key (the box does not open).
    env = make_envelope("ping", msg_id=os.urandom(16).hex(), src=me.node_id, dst=alice_id,
                        ts=now_ms(), seq=10_005)
    out.append(encode_envelope(sign_envelope(seal_envelope(env, os.urandom(32), {}), me)))
    # A handshake-like frame; then seq 0 (the handshake's) and no seq at all.
    out.append(json.dumps({"v": 1, "type": "hello"}))
    out.append(encode_envelope(sealed(alice_id, 0)))
    env = make_envelope("ping", msg_id=os.urandom(16).hex(), src=me.node_id, dst=alice_id,
                        ts=now_ms())
    out.append(encode_envelope(sign_envelope(env, me)))
    assert len(out) == 15
    return out


async def test_session_survives_15_bad_envelopes_and_closes_on_the_16th(
    shared_pair: tuple[NodeProcess, NodeProcess],
) -> None:
    alice, bob = shared_pair
    inv = decode_invite((await alice.http("POST", "/api/invites", json={})).json()["invite"])

    def run() -> tuple[int, Any, list[Any]]:
        with RawPeer(alice.peer_url, expected_node_id=alice.node_id,
                     token=inv["token"]) as peer:
            session = peer.handshake()
            assert session.level == "trusted"
            frames = _bad_session_frames(peer, alice.node_id, random.Random(3))
            for f in frames:
                peer.send_raw(f)
            rtt = peer.ping()  # 15 failures: still served
            peer.send_raw("the sixteenth")
            closed = peer.wait_output(lambda o: isinstance(o, ss.Closed))
            return rtt, closed, peer.received

    rtt, closed, received = await trio.to_thread.run_sync(run)
    assert rtt >= 0
    assert closed == ss.Closed("too_many_errors", remote=True)
    log = alice.log_text()
    assert "reason=too_many_errors" in log
    assert log.count("envelope dropped") >= 16
    # Bob was never affected.
    assert await connected(alice, bob) and await connected(bob, alice)
    assert not any(isinstance(o, ss.Closed) for o in received[:-1])


async def test_node_survives_refused_dialers_that_hang_up_at_the_same_moment(
    shared_pair: tuple[NodeProcess, NodeProcess],
) -> None:
    # Both ends closing a refused link at once used to crash the acceptor's listener
    # (a BusyResourceError in the old HTTP server), taking the whole node down.
    alice, bob = shared_pair
    limit = trio.CapacityLimiter(4)
    reasons: list[str] = []

    def dial() -> str:
        with RawPeer(alice.peer_url, expected_node_id=alice.node_id) as peer:
            try:
                peer.handshake()
            except HandshakeRefused as exc:
                return exc.reason
        return "admitted"

    async def one() -> None:
        reasons.append(await trio.to_thread.run_sync(dial, limiter=limit))

    async with trio.open_nursery() as n:
        for _ in range(60):
            n.start_soon(one)
    assert reasons == ["pairing_required"] * 60
    assert alice.running
    assert (await alice.http("GET", "/healthz", token=False)).json()["ok"] is True
    assert await connected(alice, bob) and await connected(bob, alice)
