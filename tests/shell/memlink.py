"""A transport over in-memory links: the node's seam without sockets.

The links themselves (``memory_link_pair``) are ``hd_shell.testing``'s; what is here
needs the node's seam (``DialFailed``, ``InboundGate``), which hd_shell must not import.

``MemoryNetwork`` hands out ``MemoryTransport``s of any ``kind``: a node registers its
accept callback under an address, another dials ``DialCandidate(kind, address)``. It is
a transport the hub has never heard of, which is the point: a new transport must plug
into the seam without hub changes.
"""

from __future__ import annotations

from typing import Any

import trio

from hd_node.transports.seam import DialFailed, InboundGate, Link
from hd_protocol import DialCandidate
from hd_shell.testing import memory_link_pair


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
