"""In-memory links and a transport over them: the shell without sockets.

``memory_link_pair()`` gives two ``Link`` ends joined by bounded trio channels: frames
sent on one end arrive, in order, at the other. A side that stops calling
``receive_some`` makes the other side's ``send_many`` block once ``capacity`` frames are
in flight — exactly what a peer that stops reading does to a TCP socket.

``MemoryNetwork`` hands out ``MemoryTransport``s of any ``kind``: a node registers its
accept callback under an address, another dials ``DialCandidate(kind, address)``. It is
a transport the hub has never heard of, which is the point: a new transport must plug
into the seam without hub changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from hd_node.transports.seam import DialFailed, InboundGate, Link, LinkClosed
from hd_protocol import DialCandidate, Envelope


class MemoryLink:
    def __init__(self, kind: str, remote_addr: str | None,
                 inbox: trio.MemoryReceiveChannel[str | bytes],
                 outbox: trio.MemorySendChannel[str | bytes]) -> None:
        self.kind = kind
        self.remote_addr = remote_addr
        self._inbox = inbox
        self._outbox = outbox
        self.closed = False
        self.sent: list[str | bytes] = []  # everything this end wrote, for assertions
        self.authenticated_seen = False

    async def receive_some(self) -> list[str | bytes | Envelope]:
        if self.closed:
            raise LinkClosed("closed")
        try:
            frames: list[str | bytes | Envelope] = [await self._inbox.receive()]
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            self.closed = True
            raise LinkClosed("the other end closed") from None
        while True:
            try:
                frames.append(self._inbox.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return frames

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        for m in messages:
            try:
                await self._outbox.send(m)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.closed = True
                raise LinkClosed("the other end closed") from None
            self.sent.append(m)

    def authenticated(self) -> None:
        self.authenticated_seen = True

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        self.closed = True
        await self._outbox.aclose()
        await self._inbox.aclose()


def memory_link_pair(kind: str = "memory", capacity: int = 16,
                     addrs: tuple[str, str] = ("a", "b")) -> tuple[MemoryLink, MemoryLink]:
    """Two joined ends; ``addrs`` are what each end sees as the other's address."""
    a_to_b_send, a_to_b_recv = trio.open_memory_channel[str | bytes](capacity)
    b_to_a_send, b_to_a_recv = trio.open_memory_channel[str | bytes](capacity)
    a = MemoryLink(kind, addrs[1], b_to_a_recv, a_to_b_send)
    b = MemoryLink(kind, addrs[0], a_to_b_recv, b_to_a_send)
    return a, b


class MemoryNetwork:
    """Addresses -> accept callbacks, shared by every MemoryTransport made from it."""

    def __init__(self) -> None:
        self.listeners: dict[str, tuple[trio.Nursery, InboundGate]] = {}

    def transport(self, address: str, kind: str = "memory") -> MemoryTransport:
        return MemoryTransport(self, address, kind)


class MemoryTransport:
    remembers_addresses = False

    def __init__(self, net: MemoryNetwork, address: str, kind: str) -> None:
        self.net = net
        self.address = address
        self.kind = kind

    async def open(self, candidate: DialCandidate, *, timeout_s: float,
                   peer_id: str | None = None) -> Link:
        target = self.net.listeners.get(candidate.address)
        if target is None:
            raise DialFailed("unreachable", f"nobody listens at {candidate.address}")
        nursery, gate = target
        ticket = gate.reserve(self.address)
        if ticket is None:
            raise DialFailed("refused_http", f"{candidate.address} is busy (503)")
        mine, theirs = memory_link_pair(self.kind, addrs=(self.address, candidate.address))
        nursery.start_soon(gate.accept, theirs, ticket)
        return mine

    async def serve(self, gate: InboundGate, *,
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            self.net.listeners[self.address] = (n, gate)
            try:
                task_status.started(self.address)
                await trio.sleep_forever()
            finally:
                self.net.listeners.pop(self.address, None)
