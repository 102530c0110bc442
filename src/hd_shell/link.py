"""The link seam: one ordered, reliable channel of text frames to one remote endpoint.

Every carrier (WebSocket, relay, WebRTC data channel, memory pair) implements ``Link``;
``LinkClosed`` is what any of them raises once it is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hd_protocol import Envelope


class LinkClosed(Exception):
    """The link is gone (closed by either side, broken, or a limit was hit)."""


class Link(Protocol):
    """One ordered, reliable channel of text frames to one remote endpoint."""

    kind: str
    remote_addr: str | None

    async def receive_some(self) -> Sequence[str | bytes | Envelope]:
        """At least one frame, and every other one already buffered; ``LinkClosed``
        when the link is gone. (A relayed envelope arrives already decoded.)"""
        ...

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Write frames in order (one task at a time: the link's writer)."""
        ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close (best effort, bounded in time); never raises."""
        ...

    def authenticated(self) -> None:
        """The handshake is done: lift whatever budget the link kept for a peer that
        had not proved who it is (frame sizes, fragments, pings, bytes)."""
        ...
