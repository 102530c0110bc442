"""Raw clients of a real ``hd-lobby`` / ``hd-relay`` for the attack tests.

A ``Wire`` is one WebSocket (``dial_ws``, or a hand-made upgrade from another loopback
address, 127.0.0.2..., for tests that need more connections than one address may
open) with a reader task that keeps every frame the server sent, decoded, in order, and
notes how the link ended. Tests send raw text on it (captured frames, garbage, floods)
and wait for frames by predicate.

Honest clients are driven by the node-side helpers: ``LobbyNode`` answers the
challenge with ``LobbyClient`` (and can heartbeat with its timer), ``RelayNode`` with
``attach_frame`` and sends signed envelopes with ``relay_frame``.

Every link opened through a ``Fleet`` is closed when its ``fleet()`` block ends, and
every reader or heartbeat task is stopped with it.

The flood rounds at the end (garbage, frames over the rate limit) check what the
attacker gets back; ``python -m integration.lobbyclients URL KIND...`` (from ``tests/``)
runs them in a loop in a process of its own until its stdin closes, so that a test
measures the server under attack, not its own attackers' CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio

from hd_protocol import (
    Envelope,
    Identity,
    Send,
    encode_envelope,
    make_envelope,
    new_msg_id,
    sign_envelope,
)
from hd_protocol.brokers.frames import encode_frame, parse_challenge
from hd_protocol.brokers.lobby_client import LobbyClient
from hd_protocol.brokers.relay import ack_frame, attach_frame, relay_frame
from hd_shell.ws.link import LinkClosed, WsLink, dial_ws

from .attackers import upgrade

Frame = dict[str, Any]
Pred = Callable[[Frame], bool]


def now_ms() -> int:
    return int(trio.current_time() * 1000)


def is_type(t: str, **members: Any) -> Pred:
    """A predicate: a frame of type ``t`` whose listed members have these values."""
    return lambda f: f.get("type") == t and all(f.get(k) == v for k, v in members.items())


def is_error(code: str | None = None) -> Pred:
    return lambda f: f.get("type") == "error" and (code is None or f.get("code") == code)


async def open_link(url: str, local: str | None = None) -> WsLink:
    """A client WebSocket to ``url``; from source address ``local`` if given."""
    if local is None:
        return await dial_ws(url)
    parts = urlsplit(url)
    assert parts.port is not None, url
    up = await upgrade(parts.port, parts.path, local=local)
    assert up.status == 101 and up.stream is not None, f"upgrade from {local}: {up.status}"
    conn = up.ws.connection
    assert conn is not None
    return WsLink(up.stream, conn, "127.0.0.1")


class Wire:
    """One raw connection and everything the server sent on it."""

    def __init__(self, link: WsLink, name: str) -> None:
        self.link = link
        self.name = name
        self.frames: list[Frame] = []
        self.texts: list[str] = []
        self.arrived: list[float] = []  # trio time each frame was read
        self.closed: LinkClosed | None = None
        self.closed_at: float | None = None
        self._changed = trio.Event()

    def __repr__(self) -> str:
        return f"<Wire {self.name} frames={len(self.frames)} closed={self.closed}>"

    async def read_forever(self) -> None:
        try:
            while True:
                msgs = await self.link.receive_some()
                at = trio.current_time()
                for m in msgs:
                    text = m if isinstance(m, str) else m.decode("utf-8", "replace")
                    try:
                        frame = json.loads(text)
                    except ValueError:
                        frame = {"type": "<not json>", "text": text[:200]}
                    if not isinstance(frame, dict):
                        frame = {"type": "<not an object>", "text": text[:200]}
                    self.frames.append(frame)
                    self.texts.append(text)
                    self.arrived.append(at)
                self._wake()
        except LinkClosed as exc:
            self.closed = exc
            self.closed_at = trio.current_time()
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- sending ---------------------------------------------------------------------------

    async def send(self, *frames: str | bytes) -> None:
        await self.link.send_many(list(frames))

    # --- what came in ----------------------------------------------------------------------

    def mark(self) -> int:
        """Where the frames that arrive from now on start."""
        return len(self.frames)

    def matching(self, pred: Pred, start: int = 0) -> list[Frame]:
        return [f for f in self.frames[start:] if pred(f)]

    async def wait_index(self, pred: Pred, *, start: int = 0, timeout: float = 10.0,
                         what: str = "a frame") -> int:
        """The index of the first frame from ``start`` on that matches ``pred``."""
        i = start
        with trio.move_on_after(timeout):
            while True:
                while i < len(self.frames):
                    if pred(self.frames[i]):
                        return i
                    i += 1
                if self.closed is not None:
                    raise AssertionError(f"{self.name}: closed ({self.closed}) while waiting "
                                         f"for {what}; last frames: {self.frames[start:][-5:]}")
                await self._changed.wait()
        raise AssertionError(f"{self.name}: no {what} within {timeout} s; "
                             f"last frames: {self.frames[start:][-5:]}")

    async def wait_for(self, pred: Pred, *, start: int = 0, timeout: float = 10.0,
                       what: str = "a frame") -> Frame:
        """The first frame from index ``start`` on that matches ``pred``."""
        return self.frames[await self.wait_index(pred, start=start, timeout=timeout,
                                                 what=what)]

    async def wait_closed(self, timeout: float = 10.0) -> LinkClosed:
        with trio.move_on_after(timeout):
            while self.closed is None:
                await self._changed.wait()
        if self.closed is None:
            raise AssertionError(f"{self.name}: still open after {timeout} s; "
                                 f"last frames: {self.frames[-5:]}")
        return self.closed

    async def aclose(self) -> None:
        await self.link.aclose()


class LobbyNode:
    """An honest node on a lobby, driven by ``LobbyClient``."""

    def __init__(self, wire: Wire, identity: Identity, name: str) -> None:
        self.wire = wire
        self.identity = identity
        self.client = LobbyClient(identity, node_name=name, addresses=[], capabilities=[])
        self.register_wire: str | None = None  # the register frame it sent (to replay)
        self.registered: Frame | None = None

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    async def register(self, timeout: float = 10.0) -> Frame:
        w = self.wire
        i = await w.wait_index(is_type("challenge"), timeout=timeout, what="the challenge")
        (send,) = self.client.receive(w.texts[i], now_ms())
        assert isinstance(send, Send), send
        self.register_wire = send.wire
        start = w.mark()
        await w.send(send.wire)
        j = await w.wait_index(is_type("registered"), start=start, timeout=timeout,
                               what="registered")
        self.client.receive(w.texts[j], now_ms())
        assert self.client.registered is not None
        self.registered = w.frames[j]
        return w.frames[j]

    async def heartbeat_forever(self) -> None:
        """Presence at the lobby's ``heartbeat_s``, as the node's timer asks for it."""
        try:
            while True:
                dl = self.client.next_deadline()
                assert dl is not None
                await trio.sleep_until(dl / 1000)
                for out in self.client.on_timer(now_ms()):
                    if isinstance(out, Send):
                        await self.wire.send(out.wire)
        except LinkClosed:
            return

    async def request(self, frame: str, pred: Pred, *, timeout: float = 10.0,
                      what: str = "the answer") -> Frame:
        start = self.wire.mark()
        await self.wire.send(frame)
        return await self.wire.wait_for(pred, start=start, timeout=timeout, what=what)


class RelayNode:
    """An honest node on a relay: ``attach_frame`` and signed envelopes."""

    def __init__(self, wire: Wire, identity: Identity) -> None:
        self.wire = wire
        self.identity = identity
        self.attach_wire: str | None = None

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    async def attach(self, timeout: float = 10.0) -> Frame:
        ch = await self.wire.wait_for(is_type("challenge"), timeout=timeout,
                                      what="the challenge")
        self.attach_wire = attach_frame(self.identity, parse_challenge(ch))
        start = self.wire.mark()
        await self.wire.send(self.attach_wire)
        return await self.wire.wait_for(is_type("attached"), start=start, timeout=timeout,
                                        what="attached")

    def envelope(self, dst: str, *, ttl: int = 8, n: int = 0) -> Envelope:
        env = make_envelope("probe", msg_id=new_msg_id(os.urandom), src=self.node_id,
                            dst=dst, ts=int(time.time() * 1000), data={"n": n}, ttl=ttl)
        return sign_envelope(env, self.identity)

    def relay(self, to: str, env: Envelope) -> str:
        return relay_frame(to, encode_envelope(env))


def readdressed(env: Envelope, dst: str) -> Envelope:
    """``env`` with another ``dst`` and its old signature."""
    return dataclasses.replace(env, dst=dst)


class Fleet:
    """Opens raw connections; each gets a reader task in the fleet's nursery."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.wires: list[Wire] = []

    async def wire(self, url: str, name: str, local: str | None = None) -> Wire:
        w = Wire(await open_link(url, local), name)
        self.wires.append(w)
        self.nursery.start_soon(w.read_forever)
        return w

    async def lobby_node(self, url: str, name: str, *, identity: Identity | None = None,
                         local: str | None = None, heartbeat: bool = False) -> LobbyNode:
        node = LobbyNode(await self.wire(url, name, local), identity or Identity.generate(),
                         name)
        await node.register()
        if heartbeat:
            self.nursery.start_soon(node.heartbeat_forever)
        return node

    async def relay_node(self, url: str, name: str, *,
                         identity: Identity | None = None) -> RelayNode:
        node = RelayNode(await self.wire(url, name), identity or Identity.generate())
        await node.attach()
        return node

    async def aclose_all(self) -> None:
        async with trio.open_nursery() as n:
            for w in self.wires:
                n.start_soon(w.aclose)


@asynccontextmanager
async def fleet() -> AsyncIterator[Fleet]:
    async with trio.open_nursery() as n:
        f = Fleet(n)
        try:
            yield f
        finally:
            await f.aclose_all()
            n.cancel_scope.cancel()


def p95(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(0.95 * len(s)))]


# --- floods ---------------------------------------------------------------------------------

POLICY_CLOSE = 1008  # how a server closes a connection that broke its rules
BAD_FRAMES_BEFORE_CLOSE = 16  # SPEC 7: "a connection that keeps sending bad frames"
RATE_BURST = 200
RATE_PER_S = 50
ATTACKER_HOST = "127.0.0.7"  # attackers play another host


@functools.cache
def malformed(n: int, big: int | None = None) -> tuple[str | bytes, ...]:
    """``n`` frames no server may accept (one of them over ``big`` bytes if given)."""
    shapes: list[str | bytes] = [
        "not json", "{", "[]", "42", '"x"', "null", '{"type": 1}', '{"no_type": true}',
        '{"type": "Bad-Type"}', '{"type": "list_rooms", "x": 1.5}',
        '{"type": "a", "type": "b"}', "[" * 64 + "]" * 64, '{"type": "x"} trailing',
        b"\xff\xfe\x00binary", '{"type": "\\ud800"}', "",
    ]
    out = [shapes[i % len(shapes)] for i in range(n)]
    if big is not None:
        out[3] = encode_frame("list_rooms", {"pad": "x" * big})
    return tuple(out)


@functools.cache
def repeated(frame: str, n: int) -> tuple[str, ...]:
    return (frame,) * n


async def flood(w: Wire, frames: tuple[str | bytes, ...]) -> None:
    try:
        await w.send(*frames)
    except LinkClosed:
        pass  # cut off mid-write: what we are here to see


async def expect_cut_off(w: Wire, codes: set[str]) -> list[Frame]:
    """The flooder got some ``error`` frames with these codes, then a policy close."""
    closed = await w.wait_closed(timeout=15)
    assert closed.code == POLICY_CLOSE, closed
    errs = w.matching(is_error())
    assert 1 <= len(errs) <= BAD_FRAMES_BEFORE_CLOSE, errs
    assert {e["code"] for e in errs} <= codes, errs
    assert w.frames[-1]["type"] == "error", w.frames[-5:]  # errors, then the close
    return errs


async def lobby_garbage_round(f: Fleet, url: str) -> None:
    """1000 malformed frames (one over 64 KiB) on a fresh lobby connection."""
    w = await f.wire(url, "garbage", local=ATTACKER_HOST)
    await w.wait_for(is_type("challenge"))
    await flood(w, malformed(1000, 70 * 1024))
    await expect_cut_off(w, {"bad_frame", "too_large"})
    assert [fr["type"] for fr in w.frames if fr["type"] != "error"] == ["challenge"]
    await w.aclose()


async def lobby_rate_round(f: Fleet, url: str) -> None:
    """500 well-formed ``list_rooms`` at once from a registered node."""
    t0 = trio.current_time()
    node = await f.lobby_node(url, "over rate", local=ATTACKER_HOST)
    w = node.wire
    await flood(w, repeated(encode_frame("list_rooms"), 500))
    await expect_cut_off(w, {"rate_limited"})
    assert w.closed_at is not None
    served = len(w.matching(is_type("rooms")))
    # The burst is honoured, then 50/s: never the whole flood.
    assert served >= RATE_BURST * 3 // 4, served
    assert served <= RATE_BURST + RATE_PER_S * (w.closed_at - t0) + 1, served
    await w.aclose()


async def relay_garbage_round(f: Fleet, url: str) -> None:
    """1000 malformed frames on a fresh relay connection."""
    w = await f.wire(url, "garbage", local=ATTACKER_HOST)
    await w.wait_for(is_type("challenge"))
    await flood(w, malformed(1000))
    await expect_cut_off(w, {"bad_frame"})
    assert [fr["type"] for fr in w.frames if fr["type"] != "error"] == ["challenge"]
    await w.aclose()


async def relay_rate_round(f: Fleet, url: str) -> None:
    """500 well-formed ``ack`` frames at once from an attached node (control frames: a
    relay gives ``relay`` frames a budget of their own, sized for sessions)."""
    w = await f.wire(url, "over rate", local=ATTACKER_HOST)
    await RelayNode(w, Identity.generate()).attach()
    await flood(w, repeated(ack_frame([1]), 500))
    await expect_cut_off(w, {"rate_limited"})
    assert [fr["type"] for fr in w.frames if fr["type"] != "error"] == [
        "challenge", "attached"], w.frames
    await w.aclose()


ROUNDS: dict[str, Callable[[Fleet, str], Awaitable[None]]] = {
    "lobby-garbage": lobby_garbage_round, "lobby-rate": lobby_rate_round,
    "relay-garbage": relay_garbage_round, "relay-rate": relay_rate_round,
}


async def attack_until_stdin_closes(url: str, kinds: list[str]) -> dict[str, int]:
    """Each kind of round, over and over, until stdin closes; rounds done per kind."""
    done = dict.fromkeys(kinds, 0)
    stop = trio.Event()

    async def again(kind: str) -> None:
        while not stop.is_set():
            await ROUNDS[kind](f, url)
            done[kind] += 1

    async with fleet() as f, trio.open_nursery() as n:
        for kind in kinds:
            n.start_soon(again, kind)
        print("started", flush=True)
        await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
        stop.set()
    return done


if __name__ == "__main__":
    print(json.dumps(trio.run(attack_until_stdin_closes, sys.argv[1], sys.argv[2:])),
          flush=True)
