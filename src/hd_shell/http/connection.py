"""One HTTP connection of the listener: its h11 request loop and the WebSocket upgrade.

Why apart from :mod:`hd_shell.http.server`: the listener decides which connections to take
(budgets, accept errors); everything a connection's client can do wrong once taken is
handled here, where every wait has a deadline: the request head, the body, writing a
response, the idle time between keep-alive requests. A request that breaks a rule gets
a small JSON error and the connection ends; a WebSocket upgrade hands the app a
:class:`~hd_shell.ws.link.WsLink` it owns until it returns.
"""

from __future__ import annotations

import base64
import binascii
import http
import json
from collections.abc import Callable
from urllib.parse import parse_qs

import h11
import trio
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.utilities import generate_accept_token

from hd_shell.http.api import App, Request, Response, ServerLimits
from hd_shell.ws.link import WsLink

from ..logs import logger

# The server's logger: these lines are about the listener's connections.

HTTP_CHUNK = 64 * 1024
LINGER_S = 1.0
"""After an error answer sent before the request was fully read (413, 431, 400), keep
reading (and discarding) this long before closing: closing a socket with unread data
sends RST, and the client may then lose our answer."""
LINGER_BYTES = 1 << 20
_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _Timeout(Exception):
    """A read deadline passed: the caller answers 408 (or just closes)."""


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _raw_error(status: int, error: str, message: str) -> bytes:
    """A complete ``connection: close`` JSON error response, built without h11 (usable
    whatever state h11 is in, e.g. after it refused the request)."""
    body = json.dumps({"error": error, "message": message}, separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {_phrase(status)}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "cache-control: no-store\r\nx-content-type-options: nosniff\r\n"
            "connection: close\r\n\r\n")
    return head.encode("latin-1") + body


RAW_500 = _raw_error(500, "internal", "internal error")


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",")]


def _is_ws_upgrade(method: str, headers: tuple[tuple[str, str], ...]) -> bool:
    if method != "GET":
        return False
    upgrade = connection = False
    for k, v in headers:
        if k == "upgrade" and "websocket" in _tokens(v):
            upgrade = True
        elif k == "connection" and "upgrade" in _tokens(v):
            connection = True
    return upgrade and connection


def _valid_ws_key_and_version(headers: tuple[tuple[str, str], ...]) -> bool:
    keys = [v for k, v in headers if k == "sec-websocket-key"]
    versions = [v for k, v in headers if k == "sec-websocket-version"]
    if len(keys) != 1 or versions != ["13"]:
        return False
    try:
        return len(base64.b64decode(keys[0].strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


class HttpConnection:
    """One accepted connection: requests in order until it closes, errs or upgrades.

    :meth:`run` may raise (transport errors, bugs): the listener's per-connection task
    catches everything, releases the budget and closes ``stream``.
    """

    def __init__(self, app: App, limits: ServerLimits, count: Callable[[str], None],
                 name: str, stream: trio.SocketStream, remote: str | None) -> None:
        self.app = app
        self.limits = limits
        self.count = count
        self.name = name
        self.stream = stream
        self.remote = remote
        self.h11 = h11.Connection(h11.SERVER,
                                  max_incomplete_event_size=limits.max_head_bytes)
        self.eof = False
        self.fed = 0  # bytes given to h11 since the current request head began
        self.waiting_first = True  # no complete request head yet (evictable when full)
        self.scope = trio.CancelScope()

    # --- reading ----------------------------------------------------------------------

    async def _next_event(self, deadline: float) -> object:
        """The next h11 event, reading as needed until ``deadline`` (then _Timeout)."""
        conn = self.h11
        while True:
            ev = conn.next_event()
            if ev is not h11.NEED_DATA:
                return ev
            if conn.they_are_waiting_for_100_continue:
                await self._send(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            with trio.move_on_at(deadline):
                data = await self.stream.receive_some(HTTP_CHUNK)
                if not data:
                    self.eof = True
                self.fed += len(data)
                conn.receive_data(data)
                continue
            raise _Timeout

    async def _read_head(self, first: bool) -> h11.Request | None:
        """The next request head, or None when the client closed or stayed idle."""
        conn = self.h11
        limits = self.limits
        # h11 bounds only an *incomplete* head; a complete one that arrived in a single
        # read would pass whatever its size. Count what we feed to measure it.
        self.fed = len(conn.trailing_data[0])
        started = first or self.fed > 0
        if not started:
            # Idle keep-alive connection: wait for the next request's first bytes.
            with trio.move_on_after(limits.keepalive_timeout_s):
                data = await self.stream.receive_some(HTTP_CHUNK)
                if not data:
                    return None
                self.fed += len(data)
                conn.receive_data(data)
                started = True
            if not started:
                logger("http").debug("http keep-alive idle name=%s remote=%s", self.name,
                                     self.remote)
                return None
        ev = await self._next_event(trio.current_time() + limits.head_timeout_s)
        if isinstance(ev, h11.Request):
            if self.fed - len(conn.trailing_data[0]) > limits.max_head_bytes:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            return ev
        return None

    async def _read_body(self, req: h11.Request) -> bytes | None:
        """The whole body within the limits, or None (then an answer went out)."""
        limits = self.limits
        for k, v in req.headers:
            # h11 checked the syntax (digits only); the length bounds the number.
            if k == b"content-length" and (len(v) > 18 or int(v) > limits.max_body_bytes):
                await self._refuse(413, "body_too_large", "request body too large",
                                   linger=True)
                return None
        deadline = trio.current_time() + limits.body_timeout_s
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                ev = await self._next_event(deadline)
            except _Timeout:
                await self._refuse(408, "body_timeout", "request body too slow")
                return None
            except _TRANSPORT_ERRORS:
                raise
            except Exception:  # h11.RemoteProtocolError: bad chunked framing and the like
                if not self.eof:
                    await self._refuse(400, "bad_request", "malformed request body",
                                       linger=True)
                return None
            if isinstance(ev, h11.Data):
                total += len(ev.data)
                if total > limits.max_body_bytes:
                    await self._refuse(413, "body_too_large", "request body too large",
                                       linger=True)
                    return None
                chunks.append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                return None

    # --- writing ----------------------------------------------------------------------

    async def _send(self, data: bytes) -> bool:
        """Write within response_timeout_s; False (and counted) when too slow."""
        with trio.move_on_after(self.limits.response_timeout_s):
            await self.stream.send_all(data)
            return True
        self.count("response_timeout")
        logger("http").info("http client refused name=%s remote=%s why=response_timeout",
                 self.name, self.remote)
        return False

    async def _refuse(self, status: int, why: str, message: str, *,
                      linger: bool = False) -> None:
        """Count, log and answer a request we will not serve, then let the caller close."""
        self.count(why)
        logger("http").info("http request refused name=%s remote=%s why=%s status=%s",
                 self.name, self.remote, why, status)
        if await self._send(_raw_error(status, why, message)) and linger:
            await self._linger()

    async def _linger(self) -> None:
        """Half-close, then discard what the client still sends (bounded)."""
        try:
            await self.stream.send_eof()
            with trio.move_on_after(LINGER_S):
                got = 0
                while got < LINGER_BYTES:
                    data = await self.stream.receive_some(HTTP_CHUNK)
                    if not data:
                        return
                    got += len(data)
        except _TRANSPORT_ERRORS:
            return

    async def _respond(self, method: str, response: Response, *, close: bool = False) -> bool:
        """Send the app's response through h11; False means close the connection."""
        status = response.status
        body = response.body
        try:
            headers: list[tuple[bytes, bytes]] = [
                (b"content-type", response.content_type.encode("latin-1")),
            ]
            if status not in (204, 304):
                headers.append((b"content-length", str(len(body)).encode()))
            headers += [(b"cache-control", b"no-store"),
                        (b"x-content-type-options", b"nosniff")]
            headers += [(k.encode("latin-1"), v.encode("latin-1"))
                        for k, v in response.headers]
            if close:
                headers.append((b"connection", b"close"))
            conn = self.h11
            data = conn.send(h11.Response(status_code=status, headers=headers,
                                          reason=_phrase(status).encode()))
            if body and method != "HEAD" and status not in (204, 304):
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except Exception:
            self.count("handler_error")
            logger("http").exception("http response invalid name=%s remote=%s status=%s",
                          self.name, self.remote, status)
            await self._send(RAW_500)
            return False
        return await self._send(data) and not close

    # --- the request loop -------------------------------------------------------------

    async def run(self) -> None:
        first = True
        while True:
            try:
                req = await self._read_head(first)
            except _Timeout:
                await self._refuse(408, "head_timeout", "request head too slow")
                return
            except _TRANSPORT_ERRORS:
                raise
            except Exception as exc:  # h11.RemoteProtocolError, or h11 choking on input
                if self.eof:
                    return  # the client went away mid-head
                if getattr(exc, "error_status_hint", None) == 431:
                    await self._refuse(431, "head_too_large", "request head too large",
                                       linger=True)
                else:
                    await self._refuse(400, "bad_request", "malformed request", linger=True)
                return
            if req is None:
                return
            first = False
            self.waiting_first = False
            if not await self._handle(req):
                return
            conn = self.h11
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _handle(self, req: h11.Request) -> bool:
        """Serve one request; True if the connection may carry another."""
        method = req.method.decode("latin-1")
        target = req.target.decode("latin-1")
        path, _, qs = target.partition("?")
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers)
        websocket = _is_ws_upgrade(method, headers)
        body = await self._read_body(req)
        if body is None:
            return False
        request = Request(method=method, path=path, query=parse_qs(qs) if qs else {},
                          headers=headers, remote_addr=self.remote, body=body,
                          websocket=websocket)
        if websocket:
            await self._websocket(req, request)
            return False
        try:
            response = await self.app.http(request)
            if not isinstance(response, Response):
                raise TypeError(f"app.http returned {type(response).__name__}")
        except Exception:
            self.count("handler_error")
            logger("http").exception("http handler failed name=%s remote=%s method=%s path=%s",
                          self.name, self.remote, method, path)
            await self._send(RAW_500)
            return False
        return await self._respond(method, response)

    async def _websocket(self, req: h11.Request, request: Request) -> None:
        if request.body:
            await self._refuse(400, "bad_request", "WebSocket upgrade with a body")
            return
        try:
            refusal = self.app.websocket_check(request)
            if refusal is not None and not isinstance(refusal, Response):
                raise TypeError(f"websocket_check returned {type(refusal).__name__}")
        except Exception:
            self.count("handler_error")
            logger("http").exception("websocket check failed name=%s remote=%s path=%s",
                          self.name, self.remote, request.path)
            await self._send(RAW_500)
            return
        if refusal is not None:
            logger("http").debug("websocket refused by app name=%s remote=%s path=%s status=%s",
                      self.name, self.remote, request.path, refusal.status)
            await self._respond(request.method, refusal, close=True)
            return
        upgraded = False
        try:
            if req.http_version != b"1.1" or not _valid_ws_key_and_version(request.headers):
                await self._refuse(400, "bad_request", "bad Sec-WebSocket-Key or -Version")
                return
            # The 101 from our own h11 connection, the frames to wsproto's frame-level
            # Connection: wsproto's handshake object would serialise the request we
            # parsed and parse it again with an h11 of its own (60 us a connection).
            key = next(v for k, v in req.headers if k == b"sec-websocket-key")
            accept = self.h11.send(h11.InformationalResponse(
                status_code=101, reason=b"Switching Protocols", headers=[
                (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
                (b"sec-websocket-accept", generate_accept_token(key.strip()))]))
            trailing = self.h11.trailing_data[0]
            if not await self._send(accept):
                return
            limits = self.limits
            ws = Connection(ConnectionType.SERVER)
            link = WsLink.server(self.stream, ws, self.remote, initial_data=trailing,
                                 max_message_size=limits.ws_max_message_bytes,
                                 max_fragments=limits.ws_max_fragments,
                                 max_pings=limits.ws_max_pings, preauth=limits.ws_preauth,
                                 on_violation=lambda why: self.count("ws_violation"))
            # The link keeps what it needs; the handshake's objects (an h11 connection of
            # wsproto's own, the parsed request) would live as long as the WebSocket.
            del ws, accept, trailing
            upgraded = True
            try:
                await self.app.websocket(request, link)
            except Exception:
                self.count("handler_error")
                logger("http").exception("websocket handler failed name=%s remote=%s path=%s",
                              self.name, self.remote, request.path)
            finally:
                await link.aclose()
        finally:
            if not upgraded:
                # The app took a resource in websocket_check (a handshake slot) that
                # websocket() will never give back: tell it the upgrade did not happen.
                abandoned = getattr(self.app, "websocket_abandoned", None)
                if abandoned is not None:
                    abandoned(request)


__all__ = ["HttpConnection"]
