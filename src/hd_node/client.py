"""A small Python client for a node's ``/ws`` — drive a node like a browser tab.

    async with NodeClient.open(ws_url, token) as tab:
        peers = await tab.request("network", "list_peers")
        await tab.send("network", "invite_create")
        inv = await tab.wait_for("network", "invite")

Every wait has a deadline (``timeout``, default 10 s) and raises ``trio.TooSlowError``.
Events are kept (bounded) so a waiter sees events that arrived before it started.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from hd_protocol.apps.rebase import rebase
from hd_shell.errors import url_host

Event = dict[str, Any]
HISTORY = 10_000


def split_ws_url(url: str) -> tuple[str, int, str]:
    """``ws://host:port/path?query`` -> (host, port, path with query)."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"not a ws:// URL: {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, parts.port or 80, path


def _host_header(host: str, port: int) -> str:
    return f"{url_host(host)}:{port}"


class NodeError(Exception):
    """The node answered a request with an ``error`` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NodeClient:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self.events: deque[Event] = deque(maxlen=HISTORY)
        self._changed = trio.Event()
        self._closed = False
        self._ids = itertools.count(1)
        self.hello: Event | None = None
        self._listeners: list[trio.MemorySendChannel[Event]] = []

    @classmethod
    @asynccontextmanager
    async def open(
        cls, ws_url: str, token: str, *, origin: str | None = None, timeout: float = 10.0
    ) -> AsyncIterator[NodeClient]:
        host, port, path = split_ws_url(ws_url)
        sep = "&" if "?" in path else "?"
        path = f"{path}{sep}token={token}"
        headers = [(b"Origin", origin.encode())] if origin else []
        async with trio.open_nursery() as n:
            with trio.fail_after(timeout):
                stream = await trio.open_tcp_stream(host, port)
            try:
                with trio.fail_after(timeout):
                    # The Host header must carry the port: the node refuses any
                    # other Host (DNS-rebinding guard, web.py).
                    ws = await trio_websocket.wrap_client_stream(
                        n, stream, _host_header(host, port), path, extra_headers=headers,
                        max_message_size=16 * 1024 * 1024,
                    )
                client = cls(ws)
                n.start_soon(client._pump)
                client.hello = await client.wait_for("system", "hello", timeout=timeout)
                try:
                    yield client
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await ws.aclose()
                    n.cancel_scope.cancel()
            finally:
                # Shielded: the nursery scope is already cancelled here, and an
                # unshielded checkpoint would raise Cancelled, which that scope then
                # absorbs, swallowing whatever the caller's block raised.
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _pump(self) -> None:
        try:
            while True:
                text = await self._ws.get_message()
                try:
                    ev = json.loads(text)
                except ValueError:
                    continue
                self.events.append(ev)
                self._changed.set()
                self._changed = trio.Event()
                for listener in list(self._listeners):
                    try:
                        listener.send_nowait(ev)
                    except trio.WouldBlock:  # fell behind: it hears of it as an end
                        listener.close()
                        self._listeners.remove(listener)
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError,
                trio.ClosedResourceError):
            self._closed = True
            self._changed.set()
        finally:
            for listener in self._listeners:
                listener.close()
            self._listeners.clear()

    async def send(self, channel: str, event: str, data: dict[str, Any] | None = None) -> None:
        await self._ws.send_message(json.dumps({"channel": channel, "event": event,
                                                "data": data or {}}))

    async def send_raw(self, text: str | bytes) -> None:
        await self._ws.send_message(text)

    async def wait_for(
        self,
        channel: str,
        event: str | None = None,
        pred: Callable[[dict[str, Any]], bool] | None = None,
        *,
        timeout: float = 10.0,
        since: int = 0,
    ) -> Event:
        """The first event (at history index ≥ ``since``) on ``channel`` (and ``event``)
        whose data satisfies ``pred``."""
        with trio.fail_after(timeout):
            while True:
                for ev in list(self.events)[since:]:
                    if ev.get("channel") != channel:
                        continue
                    if event is not None and ev.get("event") != event:
                        continue
                    if pred is None or pred(ev.get("data") or {}):
                        return ev
                if self._closed:
                    raise trio.ClosedResourceError("the node closed the socket")
                await self._changed.wait()

    def listen(self, size: int = 4096) -> trio.MemoryReceiveChannel[Event]:
        """Every event from now on, in order, until the socket closes (or this listener
        falls ``size`` events behind: then it ends early)."""
        send, recv = trio.open_memory_channel[Event](size)
        self._listeners.append(send)
        return recv

    def mark(self) -> int:
        """A position in the history; pass as ``since`` to see only newer events."""
        return len(self.events)

    async def request_event(
        self, channel: str, event: str, data: dict[str, Any] | None = None, *,
        timeout: float = 10.0,
    ) -> tuple[str, dict[str, Any]]:
        """Send a command; return (event, data) of the node's direct answer (matched by
        a ``req`` id). An ``error`` answer raises ``NodeError``."""
        req = f"r{next(self._ids)}"
        body = dict(data or {})
        body["req"] = req
        start = self.mark()
        await self.send(channel, event, body)
        ev = await self.wait_for(channel, None, lambda d: d.get("req") == req,
                                 timeout=timeout, since=start)
        if ev.get("event") == "error":
            d = ev["data"]
            raise NodeError(d.get("code", "error"), d.get("message", ""))
        return str(ev.get("event")), dict(ev.get("data") or {})

    async def request(
        self, channel: str, event: str, data: dict[str, Any] | None = None, *,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Like ``request_event`` but only the answer's data."""
        return (await self.request_event(channel, event, data, timeout=timeout))[1]


class SharedPane:
    """A collaborative pane as one tab sees it, with rebase on rejection (SPEC 6.1.1).

    ``base`` is the last state this tab knows. ``write(text)`` submits an edit made
    on that base; if the node answers ``rejected`` (someone wrote first), the edit is
    rebased onto the newer text and resubmitted, so no keystroke is lost.
    """

    def __init__(self, client: NodeClient, pane_key: str) -> None:
        self.client = client
        self.key = pane_key
        self.rev = 0
        self.text = ""
        self.author = ""

    def _adopt(self, data: dict[str, Any]) -> None:
        self.rev, self.text, self.author = data["rev"], data["text"], data["author"]

    async def join(self) -> dict[str, Any]:
        state = await self.client.request("collab", "join", {"paneKey": self.key})
        self._adopt(state)
        return state

    def refresh(self) -> None:
        """Adopt the newest ``op`` this tab has received for the pane."""
        for ev in reversed(self.client.events):
            d = ev.get("data") or {}
            if (ev.get("channel") == "collab" and ev.get("event") == "op"
                    and d.get("paneKey") == self.key):
                if (d["rev"], d["author"]) > (self.rev, self.author):
                    self._adopt(d)
                return

    async def write(self, mine: str, *, attempts: int = 8) -> dict[str, Any]:
        """Submit ``mine`` (an edit of ``self.text``); returns the accepted state."""
        base = self.text
        for _ in range(attempts):
            event, data = await self.client.request_event(
                "collab", "op", {"paneKey": self.key, "baseRev": self.rev, "text": mine}
            )
            if event != "rejected":
                self._adopt(data)
                return data
            mine = rebase(base, mine, data["text"])
            base = data["text"]
            self._adopt(data)
        raise NodeError("conflict", f"pane {self.key} kept changing; gave up after {attempts}")
