"""Link pairs for tests: two joined ends of one carrier, and the pair the suite runs on.

``memory_link_pair()`` gives two ``Link`` ends joined by bounded trio channels: frames
sent on one end arrive, in order, at the other. A side that stops calling
``receive_some`` makes the other side's ``send_many`` block once ``capacity`` frames are
in flight — what a peer that stops reading does to a TCP socket. ``ws_link_pair()`` is
the same over a real WebSocket on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio

from hd_protocol import Envelope
from hd_shell.http.server import Request, Response, ServerLimits, serve
from hd_shell.link import Link, LinkClosed
from hd_shell.ws.link import WsLink, dial_ws

# --- the in-memory pair ---------------------------------------------------------------------


class MemoryLink:
    """One end of a ``memory_link_pair``."""

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

# --- a pair under test --------------------------------------------------------------------


def _same(sender: int, payload: str) -> str:
    return payload


def _as_is(frame: str | bytes | Envelope) -> str | bytes:
    assert not isinstance(frame, Envelope), "this carrier hands out frames, not envelopes"
    return frame


@dataclass
class LinkPair:
    """Two joined ends of one carrier, and how test payloads travel on it.

    ``encode(sender, text)`` is the frame end ``sender`` (0 = ``a``, 1 = ``b``) sends for
    ``text``; ``decode(frame)`` the text a received frame carries. Both are the identity
    for carriers of plain frames; a relay moves signed envelopes only."""

    a: Link
    b: Link
    a_sees: str | None  # what a.remote_addr must say
    b_sees: str | None
    encode: Callable[[int, str], str] = _same
    decode: Callable[[str | bytes | Envelope], str | bytes] = _as_is


MakePair = Callable[[], AbstractAsyncContextManager[LinkPair]]
# --- pairs of our own carriers ------------------------------------------------------------


@asynccontextmanager
async def memory_pair(capacity: int = 16) -> AsyncIterator[LinkPair]:
    a, b = memory_link_pair(capacity=capacity)
    yield LinkPair(a, b, "b", "a")


@dataclass
class _HandOver:
    """An app that hands each upgraded WebSocket to the test and keeps it open until
    the test is done with it (the server closes a link once its handler returns)."""

    links: trio.MemorySendChannel[WsLink]
    done: trio.Event = field(default_factory=trio.Event)

    async def http(self, request: Request) -> Response:
        return Response(404, b'{"error":"not_found"}')

    def websocket_check(self, request: Request) -> Response | None:
        return None

    async def websocket(self, request: Request, link: WsLink) -> None:
        await self.links.send(link)
        await self.done.wait()


@asynccontextmanager
async def ws_link_pair(limits: ServerLimits | None = None, deadline_s: float = 10.0,
                       ) -> AsyncIterator[tuple[WsLink, WsLink]]:
    """(dialled end, served end) of one WebSocket over 127.0.0.1."""
    send, receive = trio.open_memory_channel[WsLink](1)
    app = _HandOver(send)
    async with trio.open_nursery() as n:
        _, port = await n.start(partial(serve, app, "127.0.0.1", 0,
                                        limits=limits or ServerLimits()))
        with trio.fail_after(deadline_s):
            client = await dial_ws(f"ws://127.0.0.1:{port}/link", timeout_s=deadline_s)
            server = await receive.receive()
        try:
            yield client, server
        finally:
            app.done.set()
            with trio.CancelScope(shield=True), trio.move_on_after(deadline_s):
                await client.aclose()
                await server.aclose()
            n.cancel_scope.cancel()


@asynccontextmanager
async def ws_pair() -> AsyncIterator[LinkPair]:
    async with ws_link_pair() as (client, server):
        yield LinkPair(client, server, "127.0.0.1", "127.0.0.1")
