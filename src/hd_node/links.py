"""Links: one WebSocket carrying text frames, whichever side opened it.

``ServerLink`` wraps an ASGI websocket (hypercorn); ``ClientLink`` wraps a
trio-websocket client connection whose TCP stream we own (ENV.md: trio-websocket
0.12 leaks the client socket after a server-initiated close, so we close it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

Receive = Callable[[], Awaitable[dict[str, Any]]]
SendFn = Callable[[dict[str, Any]], Awaitable[None]]


class LinkClosed(Exception):
    """The other side closed the link (or it broke)."""


class ServerLink:
    def __init__(self, receive: Receive, send: SendFn, remote_addr: str | None) -> None:
        self._receive = receive
        self._send = send
        self.remote_addr = remote_addr
        self.closed = False

    async def send(self, text: str) -> None:
        if self.closed:
            raise LinkClosed("link closed")
        try:
            await self._send({"type": "websocket.send", "text": text})
        except Exception as exc:  # hypercorn raises its own types on a dead socket
            self.closed = True
            raise LinkClosed(str(exc)) from None

    async def receive(self) -> str | bytes:
        if self.closed:
            raise LinkClosed("link closed")
        msg = await self._receive()
        if msg["type"] == "websocket.disconnect":
            self.closed = True
            raise LinkClosed("peer disconnected")
        text = msg.get("text")
        if text is not None:
            return str(text)
        data = msg.get("bytes")
        return bytes(data) if data is not None else b""

    async def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            with trio.move_on_after(2):
                await self._send({"type": "websocket.close", "code": code})
                # Return (and so let the ASGI app end) only once hypercorn reports the
                # disconnect. An app that ends while hypercorn's reader task answers the
                # peer's own close frame makes hypercorn (trio) shut the socket down under
                # that send: BusyResourceError in the listener, which took the whole
                # node down (seen when both ends dropped a duplicate session at once).
                while (await self._receive())["type"] != "websocket.disconnect":
                    pass
        except Exception:  # noqa: S110 - already gone is fine
            pass


class ClientLink:
    def __init__(
        self, ws: trio_websocket.WebSocketConnection, stream: trio.SocketStream, remote_addr: str
    ) -> None:
        self._ws = ws
        self._stream = stream
        self.remote_addr: str | None = remote_addr
        self.closed = False

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_message(text)
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError,
                trio.ClosedResourceError) as exc:
            self.closed = True
            raise LinkClosed(str(exc)) from None

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError,
                trio.ClosedResourceError) as exc:
            self.closed = True
            raise LinkClosed(str(exc)) from None

    async def close(self, code: int = 1000) -> None:
        if not self.closed:
            self.closed = True
            with trio.move_on_after(2):
                try:
                    await self._ws.aclose(code)
                except Exception:  # noqa: S110 - best effort
                    pass
        await self._stream.aclose()


def split_ws_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"not a ws:// URL: {url!r}")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, port, path


async def open_client_link(
    nursery: trio.Nursery, url: str, *, max_message_size: int, timeout_s: float = 5.0
) -> ClientLink:
    """Dial ``url`` (ws://host:port/path) within ``timeout_s``; the link lives in
    ``nursery`` (trio-websocket runs a reader task there)."""
    host, port, path = split_ws_url(url)
    with trio.fail_after(timeout_s):
        stream = await trio.open_tcp_stream(host, port)
        try:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, host, path, max_message_size=max_message_size,
                message_queue_size=16,
            )
        except BaseException:
            await stream.aclose()
            raise
    return ClientLink(ws, stream, host)
