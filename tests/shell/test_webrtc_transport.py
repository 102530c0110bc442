"""The WebRTC transport with real aiortc on loopback, in one process (SPEC 8.4).

Two transports meet through an in-memory signal bus in place of the lobby; the bus can
hold signals, which makes glare — both sides offering at once — deterministic. With
two real ``PeerHub``s on top, the same handshake and session run as on any link.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from hd_node.config import Settings
from hd_node.hub.trust import DialIntent
from hd_node.metrics import NodeMetrics
from hd_node.node import Parts, compose
from hd_node.store import NodeStore
from hd_node.transports.seam import DialFailed, Link, Ticket
from hd_node.transports.webrtc.link import WebRtcLink
from hd_node.transports.webrtc.transport import WebRtcTransport
from hd_protocol import DialCandidate, Identity
from hd_protocol.limits import DEFAULT_LIMITS
from hd_protocol.reach.webrtc import Budget, IceConfig, address_for, fragment

A = Identity.from_seed(b"\x2a" * 32)
B = Identity.from_seed(b"\x2b" * 32)
PREAUTH = Budget(32 * 1024, 4, 64 * 1024)


class SignalBus:
    """The lobby's ``signal`` relay between transports; ``hold`` keeps signals back
    until ``release`` (both offers then cross, as in a real glare)."""

    def __init__(self) -> None:
        self.transports: dict[str, WebRtcTransport] = {}
        self.held: list[tuple[str, str, str, str, str]] | None = None
        self.log: list[tuple[str, str, str]] = []  # (from, to, kind)

    def connect(self, node_id: str, t: WebRtcTransport) -> None:
        self.transports[node_id] = t

        def send(to: str, sid: str, kind: str, sdp: str) -> bool:
            self.log.append((node_id, to, kind))
            if self.held is not None:
                self.held.append((node_id, to, sid, kind, sdp))
            else:
                self.transports[to].on_signal(node_id, sid, kind, sdp)
            return True

        t.send_signal = send

    def release(self) -> None:
        held, self.held = self.held or [], None
        for src, to, sid, kind, sdp in held:
            self.transports[to].on_signal(src, sid, kind, sdp)


def transport(ident: Identity) -> WebRtcTransport:
    return WebRtcTransport(ident, ice=IceConfig(),
                           max_envelope_bytes=DEFAULT_LIMITS.max_envelope_bytes,
                           preauth=PREAUTH, rng=os.urandom, host_addresses=["127.0.0.1"])


class Gate:
    """An InboundGate that keeps what it is given."""

    def __init__(self) -> None:
        self.links: list[Link] = []
        self.arrived = trio.Event()

    def reserve(self, remote_addr: str | None) -> Ticket | None:
        return Ticket(lambda: None)

    async def accept(self, link: Link, ticket: Ticket) -> None:
        self.links.append(link)
        self.arrived.set()
        assert isinstance(link, WebRtcLink)
        await link.gone.wait()
        ticket.release()


@asynccontextmanager
async def two_transports() -> AsyncIterator[tuple[WebRtcTransport, WebRtcTransport, Gate,
                                                  SignalBus]]:
    bus = SignalBus()
    ta, tb = transport(A), transport(B)
    bus.connect(A.node_id, ta)
    bus.connect(B.node_id, tb)
    gate_b = Gate()
    async with trio.open_nursery() as n:
        await n.start(ta.serve, Gate())
        await n.start(tb.serve, gate_b)
        yield ta, tb, gate_b, bus
        n.cancel_scope.cancel()
    assert not ta.thread._thread or not ta.thread._thread.is_alive()  # stopped with the node


async def test_a_link_opens_carries_fragmented_envelopes_and_closing_tears_both_down() -> None:
    async with two_transports() as (ta, tb, gate_b, bus):
        with trio.fail_after(10):
            a = await ta.open(DialCandidate("webrtc", address_for(B.node_id)), timeout_s=10,
                              peer_id=B.node_id)
            await gate_b.arrived.wait()
        b = gate_b.links[0]
        assert (a.kind, b.kind, b.remote_addr) == ("webrtc", "webrtc", "webrtc:" + A.node_id)
        assert [k for _, _, k in bus.log] == ["offer", "answer"]
        big = "x" * 300_000
        a.authenticated()
        b.authenticated()
        with trio.fail_after(10):
            await a.send_many(["hello", big, "bye"])
            got: list[Any] = []
            while len(got) < 3:
                got += await b.receive_some()
        assert got == ["hello", big, "bye"]
        await a.aclose()
        with trio.fail_after(5):
            await b.gone.wait()  # the data channel closed under it (and a bye came)
        assert ta.links == {} and tb.links == {}


async def test_before_the_handshake_an_oversized_message_closes_the_link() -> None:
    async with two_transports() as (ta, tb, gate_b, _):
        with trio.fail_after(10):
            a = await ta.open(DialCandidate("webrtc", address_for(B.node_id)), timeout_s=10)
            await gate_b.arrived.wait()
        b = gate_b.links[0]
        assert isinstance(a, WebRtcLink) and isinstance(b, WebRtcLink)
        await a.send_many(["y" * 40_000])  # over the 32 KiB a peer gets before it authenticates
        with trio.fail_after(5):
            await b.gone.wait()
            await a.gone.wait()
        assert b.reason == "violation: too_large"


async def test_after_the_handshake_a_message_over_the_envelope_limit_closes_the_link() -> None:
    async with two_transports() as (ta, tb, gate_b, _):
        with trio.fail_after(10):
            a = await ta.open(DialCandidate("webrtc", address_for(B.node_id)), timeout_s=10)
            await gate_b.arrived.wait()
        b = gate_b.links[0]
        assert isinstance(a, WebRtcLink) and isinstance(b, WebRtcLink)
        b.authenticated()
        parts = fragment("z" * (DEFAULT_LIMITS.max_envelope_bytes + 1))
        await ta.thread.run(a.rtc.send, parts)  # past our own fragmenter: a hostile peer
        with trio.fail_after(5):
            await b.gone.wait()
        assert b.reason == "violation: too_large"


async def test_an_offer_nobody_answers_fails_at_its_deadline() -> None:
    async with two_transports() as (ta, tb, _, bus):
        tb.on_signal = lambda *args: None  # type: ignore[method-assign]  # a silent peer
        ta.connect_timeout_s = 0.5
        with pytest.raises(DialFailed) as exc:
            await ta.open(DialCandidate("webrtc", address_for(B.node_id)), timeout_s=10)
        assert exc.value.code == "timeout" and ta.links == {}
        assert bus.log[-1] == (A.node_id, B.node_id, "bye")


# --- two hubs -----------------------------------------------------------------------------

def make_hub(tmp: Path, ident: Identity, other: Identity, name: str) -> Parts:
    store = NodeStore(tmp / f"{name}.db")
    store.pin_peer(other.node_id, other.public_key, now=0, trusted=True)
    return compose(ident, Settings(data_dir=tmp, node_name=name), store, NodeMetrics(),
                   limits=DEFAULT_LIMITS)


async def test_glare_leaves_one_channel_and_one_session_and_both_dials_get_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hd_node.webrtc")
    bus = SignalBus()
    hubs = {A.node_id: make_hub(tmp_path, A, B, "a"), B.node_id: make_hub(tmp_path, B, A, "b")}
    ts = {}
    async with trio.open_nursery() as n:
        for ident in (A, B):
            hub, t = hubs[ident.node_id], transport(ident)
            hub.transports.add(t)
            bus.connect(ident.node_id, t)
            ts[ident.node_id] = t
            await n.start(hub.run)
            await n.start(t.serve, hub)
        bus.held = []  # both offers wait in the "lobby" until both were made
        results: dict[str, Any] = {}

        async def dial(me: Identity, other: Identity) -> None:
            results[me.node_id] = await hubs[me.node_id].connector.dial_any(
                [DialCandidate("webrtc", address_for(other.node_id))],
                DialIntent(expected_node_id=other.node_id, expected_key=other.public_key))

        with trio.fail_after(15):
            async with trio.open_nursery() as dials:
                dials.start_soon(dial, A, B)
                dials.start_soon(dial, B, A)
                while len(bus.held or []) < 2:
                    await trio.sleep(0.01)
                assert [k for *_, k, _ in bus.held or []] == ["offer", "offer"]
                bus.release()
        small, large = sorted((A.node_id, B.node_id))
        for me, other in ((A, B), (B, A)):
            driver = results[me.node_id]
            assert driver.peer_id == other.node_id and driver.kind == "webrtc"
            assert hubs[me.node_id].sessions.get(other.node_id) is driver
        # The smaller id's offer stood: it dialled, the larger one answered.
        assert results[small].conn.role == "dialer" and results[large].conn.role == "acceptor"
        opened = [r.getMessage() for r in caplog.records if "webrtc link open" in r.getMessage()]
        assert len(opened) == 2, opened
        assert any("role=offerer" in m for m in opened) and any("role=answerer" in m
                                                                 for m in opened)
        await trio.sleep(0.3)  # nothing else opens later
        assert len(ts[small].links) == 1 and len(ts[large].links) == 1
        for hub in hubs.values():
            await hub.shutdown()
        n.cancel_scope.cancel()
    for hub in hubs.values():
        hub.store.close()
