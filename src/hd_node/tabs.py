"""One browser tab (or script) on ``/ws``: frames in, hub calls, events out (SPEC 9).

Malformed JSON, an unknown channel or event, or a bad field answers
``{channel, event:"error", data:{code, message}}`` and the socket stays open.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from hd_protocol import ProtocolError
from hd_protocol.ws import WsFrame, check_command, decode_ws_frame, encode_ws_frame

from . import __version__
from .hub import HubError, PeerHub, Tab

log = logging.getLogger("hd_node.tabs")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[["TabSession", dict[str, Any]], Awaitable[None]]
MAX_CONCURRENT = 8


class TabSession:
    def __init__(self, hub: PeerHub, receive: Receive, send: Send) -> None:
        self.hub = hub
        self._receive = receive
        self._send = send
        self.tab: Tab | None = None
        self._limit = trio.Semaphore(MAX_CONCURRENT)

    def push(self, channel: str, event: str, data: dict[str, Any]) -> None:
        assert self.tab is not None
        self.tab.push(channel, event, data)

    def error(self, channel: str, code: str, message: str, req: str | None = None) -> None:
        self.hub.metrics.ws_errors.labels(code).inc()
        data: dict[str, Any] = {"code": code, "message": message}
        if req is not None:
            data["req"] = req
        self.push(channel, "error", data)

    async def run(self) -> None:
        tab, outbox = self.hub.subscribe()
        self.tab = tab
        self.push("system", "hello", {"node_id": self.hub.identity.node_id,
                                      "version": __version__})
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._writer, outbox, n.cancel_scope)
                await self._reader(n)
                n.cancel_scope.cancel()
        finally:
            self.hub.unsubscribe(tab)

    async def _writer(self, outbox: trio.MemoryReceiveChannel[tuple[str, str, dict[str, Any]]],
                      scope: trio.CancelScope) -> None:
        try:
            async for channel, event, data in outbox:
                await self._send({"type": "websocket.send",
                                  "text": encode_ws_frame(channel, event, data)})
        except Exception:  # noqa: S110 - the socket went away; the reader ends too
            pass
        assert self.tab is not None
        if self.tab.overflowed:
            try:
                await self._send({"type": "websocket.close", "code": 1013})
                # Let the reader see the disconnect and end the tab (as ServerLink
                # does): ending the app mid close handshake races hypercorn's own
                # answer to the close frame. A tab that never answers gets 5 s.
                await trio.sleep(5)
            except Exception:  # noqa: S110
                pass
        scope.cancel()

    async def _reader(self, nursery: trio.Nursery) -> None:
        while True:
            msg = await self._receive()
            if msg["type"] == "websocket.disconnect":
                return
            text = msg.get("text")
            raw = text if text is not None else msg.get("bytes") or b""
            try:
                frame = decode_ws_frame(raw, max_bytes=self.hub.limits.max_ws_frame_bytes)
                data = check_command(frame)
            except ProtocolError as exc:
                channel, req = _peek(raw)
                if exc.code not in ("unknown_event", "bad_request"):
                    channel = "system"  # the frame itself is broken: no channel to trust
                self.error(channel, exc.code, exc.message, req)
                continue
            handler = HANDLERS.get((frame.channel, frame.event))
            if handler is None:
                self.error(frame.channel, "unsupported", f"{frame.event} is not served yet",
                           data.get("req"))
                continue
            await self._limit.acquire()
            nursery.start_soon(self._handle, handler, frame, data)

    async def _handle(self, handler: Handler, frame: WsFrame, data: dict[str, Any]) -> None:
        try:
            await handler(self, data)
        except HubError as exc:
            self.error(frame.channel, exc.code, exc.message, data.get("req"))
        except ProtocolError as exc:
            self.error(frame.channel, exc.code, exc.message, data.get("req"))
        finally:
            self._limit.release()


def _peek(raw: str | bytes) -> tuple[str, str | None]:
    """Channel and ``req`` of a frame that failed a check, for the error answer."""
    try:
        frame = decode_ws_frame(raw, allowed=None)
    except ProtocolError:
        return "system", None
    req = frame.data.get("req")
    return frame.channel, req if type(req) is str and len(req) <= 64 else None


def _with_req(data: dict[str, Any], req: str | None) -> dict[str, Any]:
    if req is not None:
        data["req"] = req
    return data


# --- system ---------------------------------------------------------------------------


async def _system_hello(t: TabSession, d: dict[str, Any]) -> None:
    t.push("system", "hello", _with_req({"node_id": t.hub.identity.node_id,
                                         "version": __version__}, d.get("req")))


async def _system_ping(t: TabSession, d: dict[str, Any]) -> None:
    t.push("system", "pong", _with_req({}, d.get("req")))


# --- network --------------------------------------------------------------------------


async def _list_peers(t: TabSession, d: dict[str, Any]) -> None:
    t.push("network", "peers", _with_req({"self": t.hub.self_info(),
                                          "peers": t.hub.list_peers()}, d.get("req")))


async def _connect(t: TabSession, d: dict[str, Any]) -> None:
    conn = await t.hub.dial(d["address"], expected_node_id=d.get("node_id"))
    t.push("network", "peer_update", _with_req({"peer": t.hub.peer_info(conn.peer_id)},
                                               d.get("req")))


async def _disconnect(t: TabSession, d: dict[str, Any]) -> None:
    await t.hub.disconnect(d["node_id"])
    t.push("network", "peer_update", _with_req({"peer": t.hub.peer_info(d["node_id"])},
                                               d.get("req")))


async def _invite_create(t: TabSession, d: dict[str, Any]) -> None:
    ttl = d.get("ttl")
    inv = t.hub.pairing.create_invite(None if ttl is None else ttl * 1000)
    t.push("network", "invite", _with_req(inv, d.get("req")))


async def _invite_list(t: TabSession, d: dict[str, Any]) -> None:
    t.push("network", "invites", _with_req({"invites": t.hub.pairing.list_invites()}, d.get("req")))


async def _invite_revoke(t: TabSession, d: dict[str, Any]) -> None:
    t.hub.pairing.revoke_invite(d["token_id"])
    t.push("network", "invites", _with_req({"invites": t.hub.pairing.list_invites()}, d.get("req")))


async def _pair_redeem(t: TabSession, d: dict[str, Any]) -> None:
    try:
        peer = await t.hub.pairing.pair_redeem(d["invite"])
    except HubError as exc:
        t.push("network", "pair_result",
               _with_req({"ok": False, "error": exc.code, "message": exc.message},
                         d.get("req")))
        return
    t.push("network", "pair_result", _with_req({"ok": True, "peer": peer}, d.get("req")))


async def _set_trust(t: TabSession, d: dict[str, Any]) -> None:
    info = t.hub.set_trust(d["node_id"], d["trusted"], d.get("blocked"))
    t.push("network", "peer_update", _with_req({"peer": info}, d.get("req")))


async def _list_metrics(t: TabSession, d: dict[str, Any]) -> None:
    t.push("network", "peer_metrics", _with_req({"metrics": t.hub.metrics_view()},
                                                d.get("req")))


# --- collab and peerchat (SPEC 6.1, 6.2, 9) ---------------------------------------------


def _collab(event: str) -> Handler:
    async def handler(t: TabSession, d: dict[str, Any]) -> None:
        assert t.tab is not None
        await t.hub.features.collab_command(t.tab, event, dict(d))

    return handler


def _peerchat(event: str) -> Handler:
    async def handler(t: TabSession, d: dict[str, Any]) -> None:
        assert t.tab is not None
        await t.hub.features.chat_command(t.tab, event, dict(d))

    return handler


async def _bench(t: TabSession, d: dict[str, Any]) -> None:
    result = await t.hub.bench(d["node_id"], d.get("count"), d.get("size"))
    t.push("network", "bench_result", _with_req(result, d.get("req")))


HANDLERS: dict[tuple[str, str], Handler] = {
    ("system", "hello"): _system_hello,
    ("system", "ping"): _system_ping,
    ("network", "list_peers"): _list_peers,
    ("network", "connect"): _connect,
    ("network", "disconnect"): _disconnect,
    ("network", "invite_create"): _invite_create,
    ("network", "invite_list"): _invite_list,
    ("network", "invite_revoke"): _invite_revoke,
    ("network", "pair_redeem"): _pair_redeem,
    ("network", "set_trust"): _set_trust,
    ("network", "list_metrics"): _list_metrics,
    ("network", "bench"): _bench,
    **{("collab", e): _collab(e) for e in ("join", "leave", "op", "share", "unshare")},
    **{("peerchat", e): _peerchat(e) for e in ("open", "send", "read", "unread", "close")},
}
