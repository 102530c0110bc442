"""One WebSocket over a trio stream, driven by wsproto (either side of the connection).

Why not trio-websocket: it runs a background reader task per connection, hands messages
over through a memory channel one at a time, and leaked the client socket after a
server-initiated close (ENV.md). Links between nodes carry tens of thousands of small
frames per second, so this module is pull-based instead: the task that wants messages
reads the socket itself and gets every complete message already buffered in one call
(``receive_some``), and the task that sends writes a whole batch with one ``send_all``
(``send_many``). No task, no channel, no per-message checkpoint.

Concurrency contract: at most one task reads and at most one task writes at a time; the
two may run concurrently. Control frames the reader must answer (pong, the close reply)
are written under the same lock as data; when the writer holds the lock they are queued
and the writer flushes them right after its current write, so the reader never blocks
behind a slow writer and trio never sees two concurrent ``send_all`` calls
(BusyResourceError).

Robustness: every limit a remote party could abuse is enforced (message size, fragments
per message, pings per 10 s) and answered with the RFC 6455 close code; every wait on the
network has a deadline except the caller's own ``receive_some`` and ``send_many`` (the
caller decides how long it waits for a peer).

This module does the I/O, the write lock and the close handshake. What the bytes read
mean (reassembly and the limits) is decided in :mod:`hd_shell.ws.inbound`, opening a client
connection in :mod:`hd_shell.ws.dial`; ``DialError`` stays importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from hd_shell import link as transport
from hd_shell.ws.dial import DialError, open_ws, peer_ip
from hd_shell.ws.inbound import MAX_EVENTS_PER_PASS, Inbound, WsBudget

from ..logs import logger

LINGER_S = 0.3  # after a violation: time to let our close frame reach the peer
LINGER_BYTES = 256 * 1024

RECV_CHUNK = 256 * 1024
"""Bytes asked of the socket per read: large enough that a burst of small frames is
parsed in one pass, small enough to bound the memory one read can pin."""

CONTROL_SEND_TIMEOUT_S = 5.0
"""Deadline for the reader's own writes (pong, close reply) when the write lock is free."""

CLOSE_NORMAL = 1000

_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class LinkClosed(transport.LinkClosed):
    """The link is gone: closed by either side, broken, or a protocol/limit violation."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"link closed code={code} reason={reason}" if code is not None
                         else f"link closed: {reason}")


class WsLink:
    """One WebSocket connection (either side) over a trio.abc.Stream, driven by wsproto.

    Pull-based: no background task. One task reads (receive_some), one task writes
    (send_many); they may run concurrently with each other. Build one with
    :meth:`server` (after an HTTP upgrade) or :func:`dial_ws`.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        connection: Connection,
        remote_addr: str | None,
        *,
        kind: str = "direct",
        max_message_size: int = 1 << 20,
        max_fragments: int = 1024,
        max_pings: int = 20,
        close_timeout: float = 2.0,
        preauth: WsBudget | None = None,
        on_violation: Callable[[str], None] | None = None,
    ) -> None:
        self.kind = kind
        self.remote_addr = remote_addr
        self._stream = stream
        self._conn = connection
        self._close_timeout = close_timeout
        # Reassembly, limits, why reading ended, whether our close frame is out.
        self._in = Inbound(connection, remote_addr, kind, max_message_size=max_message_size,
                           max_fragments=max_fragments, max_pings=max_pings, preauth=preauth,
                           on_violation=on_violation)

        self._write_lock = trio.Lock()
        self._pending = bytearray()  # control frames queued while another task writes
        self._eof = False
        self._closing = False  # aclose() started
        self._broken = False  # a write was interrupted: the byte stream is unusable
        self._stream_closed = False
        self._reading = False
        self._reader_left: trio.Event | None = None

    @classmethod
    def server(
        cls,
        stream: trio.abc.Stream,
        connection: Connection,
        remote_addr: str | None,
        *,
        initial_data: bytes = b"",
        kind: str = "direct",
        max_message_size: int = 1 << 20,
        max_fragments: int = 1024,
        max_pings: int = 20,
        close_timeout: float = 2.0,
        preauth: WsBudget | None = None,
        on_violation: Callable[[str], None] | None = None,
    ) -> WsLink:
        """Wrap the server side of an upgraded connection.

        ``connection``: wsproto's frame-level server side, OPEN (the caller sent the
        101, RFC 6455 4.2.2: the 101 does not pass through wsproto); ``initial_data`` is
        whatever the HTTP server read past the request head, i.e. the first frames.
        """
        conn = connection
        if conn.state is not ConnectionState.OPEN:
            raise ValueError("the WebSocket handshake is not complete")
        if initial_data:
            conn.receive_data(initial_data)
        return cls(stream, conn, remote_addr, kind=kind, max_message_size=max_message_size,
                   max_fragments=max_fragments, max_pings=max_pings,
                   close_timeout=close_timeout, preauth=preauth, on_violation=on_violation)

    # --- state ------------------------------------------------------------------------

    def authenticated(self) -> None:
        """The peer proved who it is: lift the pre-authentication budget."""
        self._in.lift()

    @property
    def closed(self) -> bool:
        return (self._closing or self._broken or self._stream_closed or self._in.close_sent
                or self._in.failure is not None
                or self._conn.state is not ConnectionState.OPEN)

    def _closed_error(self) -> LinkClosed:
        f = self._in.failure
        if f is not None:
            return LinkClosed(*f)
        if self._broken:
            return LinkClosed(None, "link broken")
        return LinkClosed(None, "link closed")

    # --- reading ----------------------------------------------------------------------

    async def receive_some(self) -> list[str | bytes]:
        """Wait for at least one complete message; return every complete one buffered.

        Text comes as ``str``, binary as ``bytes``, in order. Raises LinkClosed once the
        link is closed (and on every later call).
        """
        inbound = self._in
        if inbound.ready:
            return inbound.take_ready()
        if (inbound.failure is not None or self._closing or self._broken
                or self._stream_closed):
            raise self._closed_error()
        if self._reading:
            raise trio.BusyResourceError("another task is already reading this link")
        self._reading = True
        try:
            while True:
                control = inbound.process(self._closing)
                if control:
                    await self._send_control(control)
                if inbound.ready:
                    return inbound.take_ready()
                if inbound.failure is not None:
                    raise self._closed_error()
                if inbound.more_buffered:
                    await trio.lowlevel.checkpoint()
                    continue
                await self._read_more()
        finally:
            self._reading = False
            if self._reader_left is not None:
                self._reader_left.set()

    async def _read_more(self) -> None:
        """One read from the stream into wsproto; EOF and errors become the failure."""
        try:
            data = await self._stream.receive_some(RECV_CHUNK)
        except _TRANSPORT_ERRORS as exc:
            self._eof = True
            self._in.fail(None, f"connection lost ({type(exc).__name__})")
            return
        if not data:
            self._eof = True
            self._in.fail(None, "connection closed without a close frame")
            return
        self._in.note_bytes(len(data))
        try:
            self._conn.receive_data(data)  # type: ignore[arg-type]  # trio gives bytes
        except Exception as exc:  # wsproto refuses data once CLOSED: nothing more to read
            self._in.fail(None, f"data after close ({type(exc).__name__})")

    # --- writing ----------------------------------------------------------------------

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send every message (text if str, binary if bytes) with one write.

        Raises LinkClosed if the link is closed or breaks. A write interrupted by
        cancellation or an error leaves a partial frame on the wire: the link is then
        marked broken for good.
        """
        if self.closed:
            raise self._closed_error()
        if not messages:
            return
        await self._write_lock.acquire()
        try:
            if self.closed:
                raise self._closed_error()
            send = self._conn.send
            chunks: list[bytes] = []
            for m in messages:
                if isinstance(m, str):
                    chunks.append(send(TextMessage(data=m)))
                else:
                    chunks.append(send(BytesMessage(data=m)))
            if self._pending:
                chunks.insert(0, bytes(self._pending))
                self._pending.clear()
            await self._send_locked(b"".join(chunks))
        finally:
            self._write_lock.release()

    async def _send_locked(self, data: bytes) -> None:
        """Write ``data`` then every control frame queued meanwhile. Caller holds the lock.

        No checkpoint between the last look at ``_pending`` and the caller's release.
        """
        try:
            await self._stream.send_all(data)
            while self._pending:
                more = bytes(self._pending)
                self._pending.clear()
                await self._stream.send_all(more)
        except BaseException as exc:
            self._broken = True
            if isinstance(exc, _TRANSPORT_ERRORS):
                self._in.fail(None, f"connection lost ({type(exc).__name__})")
                raise LinkClosed(None, f"connection lost ({type(exc).__name__})") from None
            raise

    async def _send_control(self, data: bytes) -> None:
        """Send control frames from the reader without ever waiting for the writer."""
        if self._broken or self._stream_closed:
            return
        try:
            self._write_lock.acquire_nowait()
        except trio.WouldBlock:
            self._pending += data  # the lock holder flushes it after its current write
            return
        try:
            with trio.move_on_after(CONTROL_SEND_TIMEOUT_S) as scope:
                try:
                    await self._send_locked(data)
                except LinkClosed:
                    return
            if scope.cancelled_caught:
                self._broken = True
                self._in.fail(None, "control frame write timed out")
        finally:
            self._write_lock.release()

    # --- closing ----------------------------------------------------------------------

    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the link: close frame, wait for the reply (bounded), close the stream.

        Idempotent, never raises (trio.Cancelled still propagates, after the stream is
        closed).
        """
        if self._closing:
            return
        self._closing = True
        try:
            if not self._broken and not self._stream_closed:
                with trio.move_on_after(self._close_timeout):
                    await self._close_handshake(code, reason)
        except Exception as exc:  # best effort: the stream is closed below anyway
            logger("ws").debug("ws close handshake failed remote=%s error=%s",
                      self.remote_addr, type(exc).__name__)
        finally:
            self._in.fail(code, "closed locally")
            self._stream_closed = True
            with trio.CancelScope(shield=True):
                try:
                    await self._stream.aclose()
                except Exception as exc:
                    logger("ws").debug("ws stream close failed remote=%s error=%s",
                              self.remote_addr, type(exc).__name__)

    async def _close_handshake(self, code: int, reason: str) -> None:
        await self._write_lock.acquire()
        try:
            if self._broken:
                return
            if self._conn.state is ConnectionState.OPEN:
                self._in.close_sent = True
                self._pending += self._conn.send(
                    CloseConnection(code=code, reason=reason or None))
            if self._pending:
                data = bytes(self._pending)
                self._pending.clear()
                try:
                    await self._send_locked(data)
                except LinkClosed:
                    return
        finally:
            self._write_lock.release()
        if self._in.close_sent and self._in.expect_reply:
            await self._await_close_reply()
        elif self._in.close_sent:
            await self._linger()

    async def _linger(self) -> None:
        """After a violation: half-close and drop what the peer still sends, briefly.

        Closing a socket with unread input makes the kernel send a reset, which can
        destroy our close frame before the peer reads it; so the close frame goes out,
        then FIN, then we discard input until the peer's EOF — for at most
        ``LINGER_S`` and ``LINGER_BYTES``, so a peer that keeps streaming is still cut
        off at once."""
        stream = self._stream
        with trio.move_on_after(LINGER_S):
            try:
                if isinstance(stream, trio.SocketStream):
                    await stream.send_eof()
                left = LINGER_BYTES
                while left > 0:
                    data = await stream.receive_some(RECV_CHUNK)
                    if not data:
                        return
                    left -= len(data)
            except _TRANSPORT_ERRORS:
                return

    async def _await_close_reply(self) -> None:
        """Wait for the peer's close frame (or EOF), discarding data meanwhile.

        When another task is inside receive_some it is the one reading: wait for it to
        see the reply or to leave, then read here if still needed.
        """
        inbound = self._in
        while inbound.expect_reply and not (inbound.peer_close_seen or self._eof
                                            or self._broken):
            if self._reading:
                left = self._reader_left = trio.Event()
                await left.wait()
                continue
            inbound.process(self._closing)
            if inbound.peer_close_seen or not inbound.expect_reply:
                return
            if inbound.more_buffered:
                await trio.lowlevel.checkpoint()
                continue
            await self._read_more()
            if self._eof:
                return


async def dial_ws(
    url: str,
    *,
    timeout_s: float = 10.0,
    max_message_size: int = 1 << 20,
    extra_headers: Sequence[tuple[str, str]] = (),
    kind: str = "direct",
    max_fragments: int = 1024,
    max_pings: int = 20,
    close_timeout: float = 2.0,
    preauth: WsBudget | None = None,
) -> WsLink:
    """Open a WebSocket to ``url`` (ws://host[:port]/path[?query]) within ``timeout_s``.

    The whole dial (DNS, connect, handshake) runs under one deadline. Every failure is a
    DialError, with the stream closed first. The dial itself is
    :func:`hd_shell.ws.dial.open_ws`; wrapping its result cannot fail.
    """
    stream, conn, host = await open_ws(url, timeout_s=timeout_s, extra_headers=extra_headers)
    return WsLink(stream, conn, peer_ip(stream) or host, kind=kind,
                  max_message_size=max_message_size, max_fragments=max_fragments,
                  max_pings=max_pings, close_timeout=close_timeout, preauth=preauth)


__all__ = ["MAX_EVENTS_PER_PASS", "DialError", "LinkClosed", "WsBudget", "WsLink", "dial_ws",
           "peer_ip"]
