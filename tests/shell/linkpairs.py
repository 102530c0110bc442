"""Pairs of the node's own carriers for the link conformance suite (``hd_shell.testing``).

``relay_pair``: two ``RelayTransport``s attached to a real ``hd_relay`` service served
in-process on 127.0.0.1; ``a`` dials ``b`` and its first frame, a ``hello`` envelope,
opens ``b``'s inbound link. A relay moves signed envelopes only, so the pair's
``encode`` wraps each test payload in one (``data.t``) and ``decode`` takes it out.

``webrtc_pair``: two ``WebRtcTransport``s (aiortc on loopback) signalling through the
in-memory bus of ``test_webrtc_transport``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry

from hd_node.transports.relay import RelayTransport
from hd_node.transports.seam import Link, Ticket
from hd_protocol import DialCandidate, Envelope, Identity
from hd_protocol.envelope import encode_envelope, make_envelope, new_msg_id, sign_envelope
from hd_protocol.limits import DEFAULT_LIMITS
from hd_protocol.reach.webrtc import address_for
from hd_relay import PATH, QueueStore, RelayService, relay_frame_limit
from hd_shell.http.server import ServerLimits, serve
from hd_shell.server.app import ServerApp
from hd_shell.testing import LinkPair

from .test_webrtc_transport import A, B, two_transports

RELAY = Identity.from_seed(b"\x2c" * 32)
DEADLINE_S = 10.0


class KeepingGate:
    """An InboundGate that hands every link to the test and holds it until cancelled."""

    def __init__(self) -> None:
        self.links: list[Link] = []
        self.arrived = trio.Event()

    def reserve(self, remote_addr: str | None) -> Ticket | None:
        return Ticket(lambda: None)

    async def accept(self, link: Link, ticket: Ticket) -> None:
        self.links.append(link)
        self.arrived.set()
        try:
            await trio.sleep_forever()
        finally:
            ticket.release()


@asynccontextmanager
async def relay_pair(data_dir: Path) -> AsyncIterator[LinkPair]:
    store = QueueStore(data_dir / "queue.db")
    registry = CollectorRegistry()
    service = RelayService(RELAY, store, DEFAULT_LIMITS, registry)
    app = ServerApp(RELAY.node_id, registry, {PATH: service.serve})
    limits = ServerLimits(ws_max_message_bytes=relay_frame_limit(DEFAULT_LIMITS))
    ends = (A, B)

    def encode(sender: int, text: str) -> str:
        src, dst = ends[sender], ends[1 - sender]
        env = make_envelope("link_test", msg_id=new_msg_id(os.urandom), src=src.node_id,
                            dst=dst.node_id, ts=1, data={"t": text})
        return encode_envelope(sign_envelope(env, src))

    def decode(frame: str | bytes | Envelope) -> str:
        assert isinstance(frame, Envelope), f"a relay link hands out envelopes: {frame!r}"
        text = frame.data["t"]
        assert isinstance(text, str)
        return text

    try:
        async with trio.open_nursery() as n:
            _, port = await n.start(partial(serve, app, "127.0.0.1", 0, limits=limits))
            url = f"ws://127.0.0.1:{port}{PATH}"
            gate_b = KeepingGate()
            ta, tb = (RelayTransport(i, max_envelope_bytes=DEFAULT_LIMITS.max_envelope_bytes,
                                     rng=os.urandom, default_url=lambda: url) for i in ends)
            await n.start(ta.serve, KeepingGate())
            await n.start(tb.serve, gate_b)
            with trio.fail_after(DEADLINE_S):
                await tb.attachment(url).attached.wait()
                a = await ta.open(DialCandidate("relay", url), timeout_s=DEADLINE_S,
                                  peer_id=B.node_id)
                hello = make_envelope("hello", msg_id=new_msg_id(os.urandom),
                                      src=A.node_id, dst=B.node_id, ts=1)
                await a.send_many([encode_envelope(sign_envelope(hello, A))])
                await gate_b.arrived.wait()
                b = gate_b.links[0]
                first = await b.receive_some()
            assert [f.type for f in first if isinstance(f, Envelope)] == ["hello"]
            yield LinkPair(a, b, f"relay:{B.node_id}", f"relay:{A.node_id}", encode, decode)
            n.cancel_scope.cancel()
    finally:
        store.close()


@asynccontextmanager
async def webrtc_pair() -> AsyncIterator[LinkPair]:
    async with two_transports() as (ta, _tb, gate_b, _bus):
        with trio.fail_after(DEADLINE_S):
            a = await ta.open(DialCandidate("webrtc", address_for(B.node_id)),
                              timeout_s=DEADLINE_S, peer_id=B.node_id)
            await gate_b.arrived.wait()
        yield LinkPair(a, gate_b.links[0], address_for(B.node_id), address_for(A.node_id))
