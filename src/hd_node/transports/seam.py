"""The transport seam: how a link is opened and accepted, whatever carries it.

A transport has a ``kind`` (``direct``, ``lan``, ``relay``, ``webrtc``: the link kinds of
SPEC 4.1/5), opens a link for a ``DialCandidate`` of its kind, and may serve inbound
links. A link is anything that moves text frames in order between two nodes: the
handshake and the sealed session run the same on every one, so no path is ever less
safe than another. The hub only ever sees ``Link`` and ``Transports``; it never names
a transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import trio

from hd_protocol import DialCandidate
from hd_shell.link import Link as Link
from hd_shell.link import LinkClosed as LinkClosed


class DialFailed(Exception):
    """Opening a link failed before any hd frame was exchanged.

    ``code``: ``unreachable``, ``timeout``, ``refused_http`` (the address answered with
    an HTTP status instead of a WebSocket: a busy or foreign server), ``bad_handshake``
    (not a WebSocket), ``bad_address`` or ``unsupported`` (no transport of that kind).
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or code


class Ticket:
    """One inbound handshake slot, taken before the link exists (so the cap is exact)
    and given back once, when the handshake ends or the link never came."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        fn, self._release = self._release, None
        if fn is not None:
            fn()


class InboundGate(Protocol):
    """Where a transport hands its inbound links (the hub)."""

    def reserve(self, remote_addr: str | None) -> Ticket | None:
        """A handshake slot for a link from ``remote_addr``, or None: too busy."""
        ...

    async def accept(self, link: Link, ticket: Ticket) -> None:
        """Serve the link for its whole life; the ticket is released by then."""
        ...


class Transport(Protocol):
    kind: str
    # Whether an address of this kind that once worked is worth storing for
    # reconnects (a ws:// address: yes; a relay or a WebRTC signalling target: no).
    remembers_addresses: bool

    async def open(self, candidate: DialCandidate, *, timeout_s: float,
                   peer_id: str | None = None) -> Link:
        """A new link to ``candidate`` (leading to the node ``peer_id``, when known) or
        ``DialFailed``; nothing else escapes."""
        ...

    async def serve(self, gate: InboundGate, *,
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept inbound links until cancelled: ``gate.reserve`` before any work for a
        link, ``gate.accept`` (which owns it until it returns) once it exists.
        ``task_status.started`` reports what the transport bound."""
        ...


class Transports:
    """The node's transports by kind; dialling routes a candidate to its transport."""

    def __init__(self) -> None:
        self._by_kind: dict[str, Transport] = {}

    def add(self, transport: Transport) -> None:
        if transport.kind in self._by_kind:
            raise ValueError(f"a {transport.kind} transport is already registered")
        self._by_kind[transport.kind] = transport

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._by_kind)

    def get(self, kind: str) -> Transport | None:
        return self._by_kind.get(kind)

    async def open(self, candidate: DialCandidate, *, timeout_s: float,
                   peer_id: str | None = None) -> Link:
        transport = self._by_kind.get(candidate.kind)
        if transport is None:
            raise DialFailed("unsupported", f"this node has no {candidate.kind} transport")
        return await transport.open(candidate, timeout_s=timeout_s, peer_id=peer_id)
