"""The reading half of one WebSocket, without I/O: wsproto events in, whole messages and
the control frames to answer with out.

Why apart from :class:`~hd_shell.ws.link.WsLink`: everything a remote party can abuse by
what it sends (message size, fragments per message, pings per 10 s, malformed frames) is
decided here, in plain synchronous code that never waits; WsLink only moves bytes
between the socket and this state and owns the write lock and the close handshake.

Limits are answered with the RFC 6455 close code; the first terminal event (a close, a
violation) ends parsing and is recorded in :attr:`Inbound.failure`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from ..logs import logger

# The link's own logger: these lines are about the link, whichever module decides them.

MAX_EVENTS_PER_PASS = 2048
"""wsproto events parsed before giving other tasks a turn: 256 KiB of minimal frames is
~40k events (a few hundred ms of parsing), which must not stall the whole node."""

PING_WINDOW_S = 10.0

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009


@dataclass(frozen=True)
class WsBudget:
    """What one WebSocket may send before its owner says the peer authenticated.

    An hd handshake is two small frames each way: a peer that has not proved who it is
    gets room for exactly that and little more (message size, fragments per message,
    pings, total bytes). Past it the link is closed at once (1008), before it can burn
    CPU or memory; ``WsLink.authenticated()`` lifts the budget to the link's limits."""

    max_message_size: int = 32 * 1024
    max_fragments: int = 4
    max_pings: int = 2
    max_bytes: int = 64 * 1024


class Inbound:
    """Reader-side state of one WebSocket: reassembly, limits, and why reading ended.

    The owner feeds bytes into ``conn`` (shared with its writer), calls :meth:`process`
    and writes the bytes it returns; complete messages collect in :attr:`ready`.
    ``remote_addr`` and ``kind`` only label log lines.
    """

    def __init__(
        self,
        conn: Connection,
        remote_addr: str | None,
        kind: str,
        *,
        max_message_size: int,
        max_fragments: int,
        max_pings: int,
        preauth: WsBudget | None = None,
        clock: Callable[[], float] = trio.current_time,
        on_violation: Callable[[str], None] | None = None,
    ) -> None:
        self.conn = conn
        self._on_violation = on_violation  # counts it (metrics); never raises
        self._clock = clock  # for the ping budget (a test or fuzz harness may pass its own)
        self.remote_addr = remote_addr
        self.kind = kind
        self._full = (max_message_size, max_fragments, max_pings)
        self._preauth = preauth
        self.bytes_in = 0
        if preauth is not None:
            max_message_size = min(max_message_size, preauth.max_message_size)
            max_fragments = min(max_fragments, preauth.max_fragments)
            max_pings = min(max_pings, preauth.max_pings)
        self._max_message = max_message_size
        self._max_fragments = max_fragments
        self._max_pings = max_pings

        self.ready: list[str | bytes] = []  # complete messages not yet handed out
        # The message being reassembled (fragmented, or split across reads).
        self._parts: list[str | bytes] = []
        self._part_bytes = 0
        self._part_frames = 0
        self._pings: deque[float] = deque()

        self.failure: tuple[int | None, str] | None = None  # (code, reason) reading ended
        self.close_sent = False  # our close frame is encoded (sent or queued)
        self.expect_reply = True  # False after a parse error: the peer's bytes are garbage
        self.peer_close_seen = False
        self.more_buffered = False  # the last parse pass stopped at MAX_EVENTS_PER_PASS

    def lift(self) -> None:
        """The peer authenticated: from now on the link's own limits apply."""
        self._preauth = None
        self._max_message, self._max_fragments, self._max_pings = self._full

    def note_bytes(self, n: int) -> None:
        """Count bytes read; only matters while the pre-authentication budget holds."""
        self.bytes_in += n

    def fail(self, code: int | None, reason: str) -> None:
        """Record why reading ended; the first reason wins."""
        if self.failure is None:
            self.failure = (code, reason)

    def take_ready(self) -> list[str | bytes]:
        out = self.ready
        self.ready = []
        return out

    def process(self, closing: bool) -> bytes:
        """Turn buffered wsproto events into messages; return control bytes to send.

        ``closing``: the owner is closing the link (its close handshake is reading).
        Stops at the first terminal event (close, violation); frames after it stay
        unparsed. Messages completed before it are still delivered.
        """
        if self.failure is not None and not closing:
            return b""
        if self._preauth is not None and self.bytes_in > self._preauth.max_bytes:
            return self._violation(CLOSE_POLICY_VIOLATION, "pre-authentication budget spent")
        try:
            return self._parse_events(self.close_sent or closing)
        except Exception:
            # wsproto turns malformed input into close events; anything else escaping
            # it is a bug there, which a remote party must still not turn into a crash.
            logger("ws").warning("ws frame parsing failed remote=%s kind=%s", self.remote_addr,
                        self.kind, exc_info=True)
            self.expect_reply = False
            return self._violation(CLOSE_PROTOCOL_ERROR, "unparseable frame")

    def _parse_events(self, discard: bool) -> bytes:
        """One pass of at most MAX_EVENTS_PER_PASS events; ``discard`` drops data (our
        close is out, so nobody will read it)."""
        conn = self.conn
        out = bytearray()
        ready = self.ready
        n = 0  # events parsed this pass, read after the loop
        for n, ev in enumerate(islice(conn.events(), MAX_EVENTS_PER_PASS), 1):  # noqa: B007
            t = type(ev)
            if t is TextMessage or t is BytesMessage:
                if discard:
                    continue
                data = ev.data  # type: ignore[attr-defined]
                if type(data) is bytearray:
                    data = bytes(data)
                if ev.message_finished and not self._parts:  # type: ignore[attr-defined]
                    # Fast path: a whole message in one event.
                    size = len(data)
                    if size > self._max_message or (
                        size * 4 > self._max_message and _size(data) > self._max_message
                    ):
                        out += self._violation(CLOSE_TOO_BIG, "message too big")
                        break
                    ready.append(data)
                    continue
                self._parts.append(data)
                self._part_bytes += _size(data)
                if ev.frame_finished:  # type: ignore[attr-defined]
                    self._part_frames += 1
                if self._part_bytes > self._max_message:
                    out += self._violation(CLOSE_TOO_BIG, "message too big")
                    break
                if self._part_frames > self._max_fragments:
                    out += self._violation(CLOSE_TOO_BIG, "too many fragments")
                    break
                if ev.message_finished:  # type: ignore[attr-defined]
                    parts = self._parts
                    self._parts = []
                    self._part_bytes = 0
                    self._part_frames = 0
                    if type(parts[0]) is str:
                        ready.append("".join(parts))  # type: ignore[arg-type]
                    else:
                        ready.append(b"".join(parts))  # type: ignore[arg-type]
            elif t is Ping:
                if discard:
                    continue  # our close is out: no more pongs, no more budget
                if not self._ping_allowed():
                    out += self._violation(CLOSE_POLICY_VIOLATION, "too many pings")
                    break
                if conn.state is ConnectionState.OPEN:
                    out += conn.send(ev.response())  # type: ignore[attr-defined]
            elif t is Pong:
                continue
            elif t is CloseConnection:
                out += self._on_close(ev)  # type: ignore[arg-type]
                break
        # A full pass may have left events in wsproto: parse them before reading more.
        self.more_buffered = n == MAX_EVENTS_PER_PASS and self.failure is None
        return bytes(out)

    def _ping_allowed(self) -> bool:
        """Count one ping against the budget (max_pings per PING_WINDOW_S)."""
        now = self._clock()
        pings = self._pings
        pings.append(now)
        while pings and pings[0] < now - PING_WINDOW_S:
            pings.popleft()
        return len(pings) <= self._max_pings

    def _on_close(self, ev: CloseConnection) -> bytes:
        code = int(ev.code)
        reason = ev.reason or ""
        state = self.conn.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer starts the close: answer it (RFC 6455 5.5.1) before telling our
            # caller.
            self.peer_close_seen = True
            reply = self.conn.send(ev.response())
            self.fail(code, reason)
            return reply
        if state is ConnectionState.CLOSED:
            # The reply to our own close.
            self.peer_close_seen = True
            self.fail(code, reason)
            return b""
        # wsproto reports a frame it could not parse as a close event while the state
        # stays put: a protocol error by the peer (1002 / 1007).
        self.expect_reply = False
        return self._violation(code, reason or "protocol error")

    def _violation(self, code: int, reason: str) -> bytes:
        """The peer broke a rule: close with ``code`` and stop reading."""
        logger("ws").info("ws link violation remote=%s kind=%s code=%s why=%s",
                 self.remote_addr, self.kind, code, reason)
        self.fail(code, reason)
        if self._on_violation is not None:
            self._on_violation(reason)
        # A party that broke a rule gets our close frame but not the courtesy of a close
        # handshake: waiting for its reply would let it hold the connection (and keep
        # streaming at us) for the whole close timeout.
        self.expect_reply = False
        self._parts = []
        self._part_bytes = 0
        self._part_frames = 0
        if self.conn.state is ConnectionState.OPEN:
            self.close_sent = True
            return self.conn.send(CloseConnection(code=code, reason=reason))
        return b""


def _size(data: str | bytes) -> int:
    """Bytes a message part takes on the wire (UTF-8 for text)."""
    if type(data) is str:
        return len(data) if data.isascii() else len(data.encode("utf-8", "surrogatepass"))
    return len(data)


__all__ = ["CLOSE_POLICY_VIOLATION", "CLOSE_PROTOCOL_ERROR", "CLOSE_TOO_BIG",
           "MAX_EVENTS_PER_PASS", "PING_WINDOW_S", "Inbound", "WsBudget"]
