"""One link's whole life as one sans-IO machine: handshake -> session -> keepalive.

In the manner of aioquic's ``QuicConnection``: the shell feeds in what arrived
(``receive``), what its user wants (``send``, ``request``, ``admit``, ``close``) and the
passage of time (``handle_timer`` at ``next_deadline()``), and pulls out what to do:
``frames_to_send()`` — the frames to write, in order, by the link's one writer — and
``next_event()`` — what happened. Every call returns at once and nothing here waits on
a writer, so a shell needs no lock: the order of ``frames_to_send()`` is the ``seq``
order of the sealed envelopes, whatever task called ``send``.

Two clocks (SPEC 5): ``now`` is a monotonic millisecond clock and drives every timer
(the handshake deadline, pings, request deadlines); ``wall`` is Unix time in
milliseconds and only becomes the envelope ``ts``.

Inside: the handshake machine (``Dialer``/``Acceptor``, SPEC 4) until it ends, then a
``Session`` (SPEC 5) plus the keepalive of SPEC 6.4 — a ping every
``limits.ping_interval_ms`` with a ``limits.ping_timeout_ms`` deadline, the session
closes with ``bye {reason: "timeout"}`` after ``limits.ping_misses_before_close``
unanswered pings in a row. Every pong feeds the RFC 6298 RTT estimator and every
ping timeout and envelope is counted by the session's ``monitor``
(``hd_protocol.peer.monitor.LinkMonitor``: the figures of the SPEC 6.4 peer monitor).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..effects import Send
from ..envelope import Envelope, wire_size
from ..errors import LocalProtocolError
from ..identity import Identity, Rng
from ..limits import DEFAULT_LIMITS, Limits
from .admission import Decision
from .handshake import Acceptor, Dialer, Established, NeedAdmission, PeerHello
from .handshake import Failed as _HsFailed
from .handshake import Output as _HsOutput
from .monitor import LinkFigures, LinkMonitor, RttEstimator
from .session import (
    KNOWN_TYPES,
    Closed,
    Dropped,
    Message,
    PeerError,
    Pong,
    Reply,
    Session,
    Stats,
    Timeout,
)
from .session import Output as _SessionOutput

FIRST_PING_MS = 1000  # after a session opens; then every ``limits.ping_interval_ms``

Role = Literal["dialer", "acceptor"]


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """The link ended before a session existed. ``remote``: the peer refused us (an
    ``auth_result ok:false``) or hung up; ``peer``: who answered, if its hello verified."""

    reason: str
    message: str = ""
    remote: bool = False
    peer: PeerHello | None = None


Event = (
    NeedAdmission | Established | HandshakeFailed | Message | Reply | Timeout | Pong
    | PeerError | Dropped | Closed
)


class Connection:
    """One link (direct, relay, WebRTC or LAN) from the first frame to the last."""

    _next_ping: int | None = None  # when the next ping goes (set once the session opens)

    def __init__(
        self,
        identity: Identity,
        role: Role,
        *,
        rng: Rng,
        now: int,
        wall: int,
        limits: Limits = DEFAULT_LIMITS,
        link: str = "direct",
        node_name: str = "",
        capabilities: Sequence[str] = (),
        expected_node_id: str | None = None,
        token: str | None = None,
        attest: dict[str, Any] | None = None,
        known_types: frozenset[str] = KNOWN_TYPES,
    ) -> None:
        self.identity = identity
        self.role: Role = role
        self.rng = rng
        self.limits = limits
        self.link = link
        self.known_types = known_types
        self.state = State.HANDSHAKE
        self.session: Session | None = None
        self.failure: HandshakeFailed | None = None
        self.closed: Closed | None = None
        self.monitor = LinkMonitor()
        self.rtt: RttEstimator = self.monitor.rtt
        self._out: deque[str] = deque()
        self._out_bytes = 0
        self._events: deque[Event] = deque()
        hs_kw: dict[str, Any] = {
            "rng": rng, "now": now, "node_name": node_name,
            "capabilities": list(capabilities),
            "timeout_ms": limits.handshake_timeout_ms,
            "max_capabilities": limits.capabilities, "max_bytes": limits.max_envelope_bytes,
        }
        self.handshake: Dialer | Acceptor
        if role == "dialer":
            self.handshake = Dialer(identity, expected_node_id=expected_node_id, token=token,
                                    attest=attest, **hs_kw)
            self._absorb_handshake(self.handshake.start(now, wall=wall))
        elif role == "acceptor":
            self.handshake = Acceptor(identity, **hs_kw)
        else:
            raise LocalProtocolError("bad_role", "role is dialer or acceptor")

    @classmethod
    def dial(cls, identity: Identity, *, rng: Rng, now: int, wall: int,
             **kw: Any) -> Connection:
        """A dialer: its ``hello`` is ready in ``frames_to_send()`` at once."""
        return cls(identity, "dialer", rng=rng, now=now, wall=wall, **kw)

    @classmethod
    def accept(cls, identity: Identity, *, rng: Rng, now: int, wall: int,
               **kw: Any) -> Connection:
        """An acceptor: it waits for the dialer's ``hello``."""
        return cls(identity, "acceptor", rng=rng, now=now, wall=wall, **kw)

    # --- what the shell reads -----------------------------------------------------------

    @property
    def peer(self) -> PeerHello | None:
        """The peer whose hello verified (known from mid-handshake on)."""
        return self.handshake.peer

    @property
    def peer_id(self) -> str | None:
        return self.handshake.peer.node_id if self.handshake.peer is not None else None

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN

    @property
    def stats(self) -> Stats:
        return self.session.stats if self.session is not None else Stats()

    @property
    def pending_bytes(self) -> int:
        """Bytes of frames waiting in ``frames_to_send()``."""
        return self._out_bytes

    @property
    def pending_frames(self) -> int:
        return len(self._out)

    def figures(self, now: int) -> LinkFigures:
        """The SPEC 6.4 monitor figures at ``now``: RTT, ping timeouts, traffic totals
        and rates over the last 10 s (still readable after the session closed)."""
        return self.monitor.figures(now, self.stats)

    def frames_to_send(self) -> list[str]:
        """Every frame to write, in order (each exactly once)."""
        frames = list(self._out)
        self._out.clear()
        self._out_bytes = 0
        return frames

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        """Every event so far, oldest first (each exactly once)."""
        out = list(self._events)
        self._events.clear()
        return out

    def next_deadline(self) -> int | None:
        """When ``handle_timer`` must be called next (monotonic ms), or None."""
        if self.state is State.HANDSHAKE:
            return self.handshake.next_deadline()
        if self.state is State.CLOSED or self.session is None:
            return None
        times = [t for t in (self.session.next_deadline(), self._next_ping) if t is not None]
        return min(times, default=None)

    # --- what the shell feeds in ----------------------------------------------------------

    def receive(self, frame: str | bytes | Envelope, now: int, wall: int) -> None:
        """One inbound frame from the link. A frame after the end is ignored."""
        if self.state is State.HANDSHAKE:
            self._absorb_handshake(self.handshake.receive(frame, now, wall=wall), now)
        elif self.state is State.OPEN:
            assert self.session is not None
            self._absorb(self.session.receive(frame, now, wall=wall))
            self._count(now)

    def admit(self, decision: Decision, now: int, wall: int) -> None:
        """The shell's admission decision for the pending ``NeedAdmission``."""
        if self.state is not State.HANDSHAKE:
            raise LocalProtocolError("state", "no admission is pending")
        self._absorb_handshake(self.handshake.admit(decision, now, wall=wall), now)

    def send(
        self, type: str, data: dict[str, Any], now: int, wall: int, *,
        re: str | None = None, msg_id: str | None = None,
    ) -> str:
        """Seal, sign and queue one envelope; returns its msg_id (SPEC 5)."""
        session = self._open_session()
        mid, outs = session.send(type, data, now, re=re, msg_id=msg_id, wall=wall)
        self._absorb(outs)
        self._count(now)
        return mid

    def request(
        self, type: str, data: dict[str, Any], now: int, wall: int, *,
        timeout_ms: int | None = None,
    ) -> str:
        """Queue a request; its ``Reply`` or ``Timeout`` (at its own deadline:
        ``timeout_ms``, default ``limits.request_timeout_ms``) comes as an event."""
        session = self._open_session()
        mid, outs = session.request(type, data, now, timeout_ms=timeout_ms, wall=wall)
        self._absorb(outs)
        self._count(now)
        return mid

    def cancel_request(self, request_id: str) -> None:
        """Stop waiting for a reply: no event will come for it, a late reply is dropped."""
        if self.session is not None:
            self.session.cancel_request(request_id)

    def reply_error(self, code: str, message: str, re: str, now: int, wall: int) -> None:
        """Answer the peer's envelope ``re`` with ``error {code, message}``."""
        session = self._open_session()
        self._absorb(session.reply_error(code, message, re, now, wall=wall))
        self._count(now)

    def close(self, reason: str, now: int, wall: int) -> None:
        """End the link on purpose: ``bye {reason}`` on an open session (then
        ``Closed``), or ``HandshakeFailed(reason)`` during the handshake."""
        if self.state is State.HANDSHAKE:
            self._fail_handshake(HandshakeFailed(reason, "closed locally", False, self.peer))
        elif self.state is State.OPEN:
            assert self.session is not None
            self._absorb(self.session.close(reason, now, wall=wall))
            self._count(now)

    def link_lost(self, reason: str = "link closed") -> None:
        """The transport says the link is gone: nothing can be sent any more."""
        if self.state is State.HANDSHAKE:
            self._fail_handshake(HandshakeFailed(
                "closed", "the link closed during the handshake", True, self.peer))
        elif self.state is State.OPEN:
            assert self.session is not None
            self.session.closed = Closed(reason, remote=True)
            self._set_closed(self.session.closed)
        self._out.clear()
        self._out_bytes = 0

    def handle_timer(self, now: int, wall: int) -> None:
        """Fire whatever is due at ``now``: the handshake deadline, request deadlines
        (their ``Timeout``), the ping-miss rule, the next ping."""
        if self.state is State.HANDSHAKE:
            self._absorb_handshake(self.handshake.on_timer(now, wall=wall))
            return
        if self.state is not State.OPEN:
            return
        assert self.session is not None
        self._absorb(self.session.on_timer(now, wall=wall))
        if self.state is State.OPEN and self._next_ping is not None and now >= self._next_ping:
            self._next_ping = now + self.limits.ping_interval_ms
            _, outs = self.session.ping(now, wall=wall)
            self._absorb(outs)
        self._count(now)

    # --- internals ------------------------------------------------------------------------

    def _open_session(self) -> Session:
        if self.state is not State.OPEN or self.session is None:
            raise LocalProtocolError("not_open", "the connection has no open session")
        return self.session

    def _count(self, now: int) -> None:
        if self.session is not None:
            self.monitor.sync(now, self.session.stats)

    def _queue(self, wire: str) -> None:
        self._out.append(wire)
        self._out_bytes += wire_size(wire)

    def _absorb_handshake(self, outs: list[_HsOutput], now: int | None = None) -> None:
        """``now`` is needed only where the handshake can end (``receive``, ``admit``):
        ``start`` and the deadline never establish a session."""
        for out in outs:
            if isinstance(out, Send):
                self._queue(out.wire)
            elif isinstance(out, Established):
                assert now is not None
                self.session = Session(
                    self.identity, out.result, rng=self.rng, now=now, link=self.link,
                    limits=self.limits, known_types=self.known_types,
                )
                self.state = State.OPEN
                # The first ping soon (a person sees an RTT within a second), then
                # every interval (SPEC 6.4).
                self._next_ping = now + min(FIRST_PING_MS, self.limits.ping_interval_ms)
                self._events.append(out)
            elif isinstance(out, _HsFailed):
                self._fail_handshake(
                    HandshakeFailed(out.reason, out.message, out.remote, self.peer))
            else:
                self._events.append(out)

    def _fail_handshake(self, failed: HandshakeFailed) -> None:
        if self.state is not State.HANDSHAKE:
            return
        self.state = State.CLOSED
        self.failure = failed
        self._events.append(failed)

    def _absorb(self, outs: list[_SessionOutput]) -> None:
        for out in outs:
            if isinstance(out, Send):
                self._queue(out.wire)
                continue
            if isinstance(out, Pong):
                self.monitor.pong(out.rtt_ms)
            elif isinstance(out, Timeout) and out.type == "ping":
                self.monitor.ping_timed_out()
            if isinstance(out, Closed):
                self._set_closed(out)
            else:
                self._events.append(out)

    def _set_closed(self, closed: Closed) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.closed = closed  # no ping after this: next_deadline and handle_timer see CLOSED
        self._events.append(closed)


__all__ = [
    "Closed", "Connection", "Dropped", "Established", "Event", "HandshakeFailed", "Message",
    "LinkFigures", "LinkMonitor", "NeedAdmission", "PeerError", "PeerHello", "Pong", "Reply",
    "RttEstimator", "State", "Timeout",
]
