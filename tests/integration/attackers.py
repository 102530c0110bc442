"""Attackers written from the wire format alone: raw TCP, a WebSocket upgrade done with
wsproto by hand, then whatever a hostile party would send. Each can bind its socket to
another loopback address (127.0.0.2, ...) to play "another host"."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, RejectConnection, Request, TextMessage


@dataclass
class Upgrade:
    status: int  # 101, or the HTTP status the node answered with (0: closed first)
    stream: trio.SocketStream | None
    ws: WSConnection


async def open_raw(port: int, local: str | None = None, host: str = "127.0.0.1"
                   ) -> trio.SocketStream:
    """A TCP connection to (host, port), its source bound to ``local`` if given."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if local is not None:
            await sock.bind((local, 0))
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def upgrade(port: int, path: str = "/peer-ws", local: str | None = None,
                  timeout: float = 5.0) -> Upgrade:
    """A WebSocket upgrade on a fresh connection; the stream is kept open on 101."""
    ws = WSConnection(ConnectionType.CLIENT)
    stream = await open_raw(port, local)
    try:
        with trio.fail_after(timeout):
            await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target=path)))
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    await stream.aclose()
                    return Upgrade(0, None, ws)
                ws.receive_data(data)
                for ev in ws.events():
                    if isinstance(ev, AcceptConnection):
                        return Upgrade(101, stream, ws)
                    if isinstance(ev, RejectConnection):
                        await stream.aclose()
                        return Upgrade(ev.status_code, None, ws)
    except (OSError, trio.BrokenResourceError, trio.TooSlowError):
        await stream.aclose()
        return Upgrade(0, None, ws)
    except BaseException:
        await stream.aclose()
        raise


async def stream_until_closed(up: Upgrade, kind: str, limit_s: float = 10.0) -> float:
    """Send 1-byte fragments (``kind="fragments"``) or pings (``"pings"``) as fast as
    the socket takes them; return the seconds until the node closed the connection (its
    EOF, or a write that fails), ``inf`` if it never did within ``limit_s``."""
    assert up.stream is not None
    stream, ws = up.stream, up.ws
    t0 = trio.current_time()
    closed_at: list[float] = []

    async def drain(cancel: trio.CancelScope) -> None:
        try:
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        closed_at.append(trio.current_time())
        cancel.cancel()

    frame = (TextMessage(data="x", message_finished=False) if kind == "fragments"
             else Ping(payload=b"p"))
    try:
        with trio.move_on_after(limit_s):
            async with trio.open_nursery() as n:
                n.start_soon(drain, n.cancel_scope)
                try:
                    while True:
                        await stream.send_all(b"".join(ws.send(frame) for _ in range(8)))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    closed_at.append(trio.current_time())
                    n.cancel_scope.cancel()
    finally:
        await stream.aclose()
    return (closed_at[0] - t0) if closed_at else float("inf")
