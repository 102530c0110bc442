"""The client side of a WebSocket's opening: URL checks, TCP connect, the HTTP handshake.

Why apart from :mod:`hd_shell.ws.link`: dialing is all about a remote party that is not a
WebSocket yet (bad URLs, unreachable hosts, HTTP errors, servers that answer garbage),
and every one of those ends as a :class:`DialError`; once the handshake is done the open
wsproto connection is handed to :func:`hd_shell.ws.link.dial_ws`, which wraps it in a
WsLink. This module knows nothing of WsLink, so wslink can import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request

from hd_shell.errors import url_host

RECV_CHUNK = 256 * 1024
"""Bytes asked of the socket per read, as WsLink does: frames the server sends right
after its 101 may arrive in the same read."""

MAX_REJECT_BODY = 16 * 1024

_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class DialError(Exception):
    """An outbound WebSocket dial failed. Never anything else escapes dial_ws (except
    trio.Cancelled).

    ``code`` is one of "unreachable", "timeout", "http_status", "bad_handshake",
    "bad_url"; ``status`` is the HTTP status for "http_status"; ``body`` holds at most
    16 KiB of a rejection's body (so a caller can show the server's own error).
    """

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 body: bytes = b"") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.body = body


def _parse_ws_url(url: str) -> tuple[str, int, str, str, str]:
    """(host, port, target, Host header, URL without query) or DialError("bad_url")."""
    def bad(why: str) -> DialError:
        return DialError("bad_url", f"bad WebSocket URL ({why})")

    if not isinstance(url, str) or not url.isascii() or any(c <= " " or c == "\x7f"
                                                            for c in url):
        raise bad("must be printable ASCII without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parts.scheme == "wss":
        raise DialError("bad_url", "wss is not supported yet")
    if parts.scheme != "ws":
        raise bad("scheme must be ws://")
    host = parts.hostname
    if not host:
        raise bad("no host")
    if parts.username is not None or parts.password is not None:
        raise bad("credentials in the URL are not supported")
    if parts.fragment or url.endswith("#"):
        raise bad("fragments are not allowed")
    if port is None:
        port = 80
    if port == 0:
        raise bad("port 0")
    try:
        host.encode("idna")
    except UnicodeError:
        raise bad("invalid host name") from None
    path = parts.path or "/"
    target = path + ("?" + parts.query if parts.query else "")
    host_header = f"{url_host(host)}:{port}"
    # Messages never carry the query: it may hold a token.
    shown = f"ws://{host_header}{path}"
    return host, port, target, host_header, shown


def _encode_headers(extra_headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for name, value in extra_headers:
        try:
            n = name.encode("ascii")
            v = value.encode("latin-1")
        except (UnicodeError, AttributeError):
            raise DialError("bad_url", "extra header is not encodable") from None
        if (not n or any(c in n for c in b" \t\r\n:") or b"\r" in v or b"\n" in v
                or b"\0" in v):
            raise DialError("bad_url", "extra header is invalid")
        out.append((n, v))
    return out


async def open_ws(
    url: str,
    *,
    timeout_s: float,
    extra_headers: Sequence[tuple[str, str]],
) -> tuple[trio.SocketStream, Connection, str]:
    """Connect to ``url`` and complete the client handshake within ``timeout_s``.

    Returns the stream, the OPEN wsproto connection (holding any bytes the server sent
    after its 101) and the host name dialled. The whole dial (DNS, connect, handshake)
    runs under one deadline. Every failure is a DialError, with the stream closed first.
    """
    host, port, target, host_header, shown = _parse_ws_url(url)
    headers = _encode_headers(extra_headers)
    status: list[tuple[int, bytes]] = []  # set once the server answered a non-101 status
    with trio.move_on_after(timeout_s) as scope:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise DialError("unreachable",
                            f"{shown} unreachable: {exc.strerror or exc}") from None
        except Exception as exc:  # e.g. a host name getaddrinfo refuses outright
            raise DialError("unreachable",
                            f"{shown} unreachable: {type(exc).__name__}") from None
        try:
            ws = await _client_handshake(stream, host_header, target, headers, shown, status)
            return stream, ws, host
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            if isinstance(exc, DialError | trio.Cancelled):
                raise
            if isinstance(exc, Exception):
                raise DialError("bad_handshake",
                                f"{shown} failed: {type(exc).__name__}") from None
            raise
    if scope.cancelled_caught and status:
        code, body = status[0]
        raise DialError("http_status", f"{shown} answered HTTP {code}", status=code, body=body)
    raise DialError("timeout", f"{shown} did not answer within {timeout_s:g} s")


async def _client_handshake(
    stream: trio.SocketStream,
    host_header: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
    shown: str,
    status: list[tuple[int, bytes]],
) -> Connection:
    """Run the client side of the opening handshake; return the open wsproto connection.

    Bytes the server sent after its 101 are already inside the returned connection.
    """
    ws = WSConnection(ConnectionType.CLIENT)
    try:
        hello = ws.send(Request(host=host_header, target=target, extra_headers=headers))
    except Exception as exc:
        raise DialError("bad_url", f"{shown}: cannot build the request "
                                   f"({type(exc).__name__})") from None
    try:
        await stream.send_all(hello)
    except _TRANSPORT_ERRORS as exc:
        raise DialError("unreachable", f"{shown} dropped the connection "
                                       f"({type(exc).__name__})") from None
    received = 0
    reject_status: int | None = None
    body = bytearray()
    while True:
        try:
            data = await stream.receive_some(RECV_CHUNK)
        except _TRANSPORT_ERRORS as exc:
            if reject_status is not None:
                break
            raise DialError("unreachable", f"{shown} dropped the connection "
                                           f"({type(exc).__name__})") from None
        if not data:
            if reject_status is not None:
                break
            if received == 0:
                raise DialError("unreachable", f"{shown} closed the connection without "
                                               "answering")
            raise DialError("bad_handshake", f"{shown} closed the connection mid-answer")
        received += len(data)
        finished = False
        try:
            ws.receive_data(data)
            for ev in ws.events():
                if isinstance(ev, AcceptConnection):
                    if reject_status is not None:
                        raise DialError("bad_handshake", f"{shown} sent a confused answer")
                    conn = ws.connection
                    assert conn is not None
                    return conn
                if isinstance(ev, RejectConnection):
                    reject_status = int(ev.status_code)
                    status.append((reject_status, b""))
                    if not ev.has_body:
                        finished = True
                        break
                elif isinstance(ev, RejectData):
                    room = MAX_REJECT_BODY - len(body)
                    body += ev.data[:room]
                    status[0] = (status[0][0], bytes(body))
                    if ev.body_finished or len(body) >= MAX_REJECT_BODY:
                        finished = True
                        break
                else:
                    raise DialError("bad_handshake", f"{shown} sent an unexpected answer")
        except DialError:
            raise
        except Exception as exc:  # wsproto RemoteProtocolError, h11 errors, bad encodings
            if reject_status is not None:
                break
            raise DialError("bad_handshake",
                            f"{shown} did not answer as a WebSocket server "
                            f"({type(exc).__name__})") from None
        if finished:
            break
    assert reject_status is not None
    raise DialError("http_status", f"{shown} answered HTTP {reject_status}",
                    status=reject_status, body=bytes(body))




def peer_ip(stream: trio.abc.Stream) -> str | None:
    """The peer's IP as text (IPv4-mapped IPv6 addresses reduced to IPv4), or None.

    getpeername fails with ENOTCONN once the peer has gone: that is not an error here.
    """
    sock = getattr(stream, "socket", None)
    if sock is None:
        return None
    try:
        addr = sock.getpeername()
    except OSError:
        return None
    if not isinstance(addr, tuple) or not addr:
        return None
    ip = str(addr[0])
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip


__all__ = ["MAX_REJECT_BODY", "DialError", "open_ws", "peer_ip"]
