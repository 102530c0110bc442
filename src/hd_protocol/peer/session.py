"""The post-handshake session pipeline (SPEC 5).

Inbound, in order: decode -> v -> src is the peer -> dst is us -> signature with the
pinned key -> seq greater than the last accepted -> box opens -> level allows the type.
Nothing is acted on before every check passes; each failure is counted and 16 close
the session. Outbound, every envelope is sealed with the next ``seq`` and signed.

Request/reply: a request registers its pending reply before it is sent; replies are
matched by ``re``; timeouts fire from ``on_timer(now)``; late replies are dropped.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..effects import Send
from ..envelope import (
    Envelope,
    decode_envelope,
    make_envelope,
    new_msg_id,
    verify_envelope,
    wire_size,
)
from ..errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ..identity import Identity, Rng
from ..limits import DEFAULT_LIMITS, Limits
from ..seal import open_with, seal_sign_encode
from .handshake import HandshakeResult

# The session policies live in hd_protocol.peer.policy; importable from here as before.
from .policy import NO_REDIAL_REASONS, keep_new_session, reconnect_delay_ms, should_redial

# SPEC 5 core types plus the feature types of SPEC 6.
CORE_TYPES = frozenset({"ping", "pong", "presence", "bye", "error"})
FEATURE_TYPES = frozenset({
    "collab_op", "collab_join", "collab_leave",
    "peer_chat", "peer_chat_ack",
    "agent_request", "agent_stream", "agent_result", "agent_cancel",
    "bench_echo",
})
KNOWN_TYPES = CORE_TYPES | FEATURE_TYPES
# SPEC 4.1: a guest may ping, presence, chat and collab (pane permission is the
# collab machine's business); everything else is `forbidden`.
GUEST_TYPES = CORE_TYPES | frozenset({
    "peer_chat", "peer_chat_ack", "collab_op", "collab_join", "collab_leave",
})
HANDSHAKE_TYPES = frozenset({"hello", "hello_ack", "auth", "auth_result"})
_EXPIRED_MEMORY = 256


# --- outputs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """A verified, opened, permitted inbound envelope for the application."""

    type: str
    msg_id: str
    re: str | None
    data: dict[str, Any]
    ts: int


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one of our requests (``request_id`` is the request's msg_id)."""

    request_id: str
    message: Message


@dataclass(frozen=True, slots=True)
class Timeout:
    request_id: str
    type: str


@dataclass(frozen=True, slots=True)
class Pong:
    request_id: str
    rtt_ms: int


@dataclass(frozen=True, slots=True)
class PeerError:
    code: str
    message: str
    re: str | None


@dataclass(frozen=True, slots=True)
class Dropped:
    """An inbound frame failed a check (counted toward the close threshold)."""

    code: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str
    remote: bool = False


Output = Send | Message | Reply | Timeout | Pong | PeerError | Dropped | Closed


@dataclass(slots=True)
class _Pending:
    type: str
    sent_at: int
    deadline: int


@dataclass(slots=True)
class Stats:
    msgs_in: int = 0
    msgs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: int = 0
    failures: int = 0
    timeouts: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


class Session:
    """One authenticated, sealed session with one peer."""

    def __init__(
        self,
        identity: Identity,
        result: HandshakeResult,
        *,
        rng: Rng,
        now: int,
        link: str = "direct",
        limits: Limits = DEFAULT_LIMITS,
        known_types: frozenset[str] = KNOWN_TYPES,
    ) -> None:
        self.identity = identity
        self.peer_id = result.peer.node_id
        self.peer_key = result.peer.public_key
        self.peer_name = result.peer.node_name
        self.peer_capabilities = result.peer.capabilities
        self.level = result.level
        self.role = result.role
        self.link = link
        self.rng = rng
        self.limits = limits
        self.known_types = known_types
        self.opened_at = now
        self.last_seen = now
        self.tx_seq = result.tx_seq
        self.rx_seq = result.rx_seq
        self._tx = ChaCha20Poly1305(result.key_tx)
        self._rx = ChaCha20Poly1305(result.key_rx)
        self._pending: dict[str, _Pending] = {}
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._error_replied_at: dict[str, int] = {}
        self.stats = Stats()
        self.ping_misses = 0
        self.closed: Closed | None = None
        self._wall: int | None = None  # wall clock of the receive() in progress

    @property
    def dialer_id(self) -> str:
        """Node id of the side that dialled this session (for the duplicate tie-break)."""
        return self.identity.node_id if self.role == "dialer" else self.peer_id

    # --- outbound ---------------------------------------------------------------------

    def send(
        self,
        type: str,
        data: dict[str, Any],
        now: int,
        *,
        re: str | None = None,
        msg_id: str | None = None,
        wall: int | None = None,
    ) -> tuple[str, list[Output]]:
        """Seal, sign and encode one envelope. Returns (msg_id, [Send]).

        ``msg_id`` may be given when the id is part of the feature's state (a chat
        message's id is the msg_id of its ``peer_chat`` envelope, SPEC 6.2). ``now``
        drives timers; ``wall`` (default: ``now``) is the envelope's ``ts`` (SPEC 5).
        """
        if self.closed is not None:
            raise LocalProtocolError("closed", "the session is closed")
        if type in HANDSHAKE_TYPES:
            raise LocalProtocolError("bad_type", "handshake types are not session messages")
        env = make_envelope(
            type, msg_id=msg_id or new_msg_id(self.rng), re=re, src=self.identity.node_id,
            dst=self.peer_id, ts=now if wall is None else wall, seq=self.tx_seq,
        )
        wire = seal_sign_encode(self._tx, self.identity, env, data)
        size = wire_size(wire)
        if size > self.limits.max_envelope_bytes:
            raise LocalProtocolError("too_large", "envelope over the size limit")
        self.tx_seq += 1
        self.stats.msgs_out += 1
        self.stats.bytes_out += size
        return env.msg_id, [Send(wire)]

    def request(
        self, type: str, data: dict[str, Any], now: int, *, timeout_ms: int | None = None,
        wall: int | None = None,
    ) -> tuple[str, list[Output]]:
        """Send a request whose reply (``re`` = its msg_id) is awaited until a deadline."""
        msg_id, out = self.send(type, data, now, wall=wall)
        # SPEC 5: the pending reply exists before the request leaves (send() only
        # returns the frame; the shell writes it after this returns).
        t = self.limits.request_timeout_ms if timeout_ms is None else timeout_ms
        self._pending[msg_id] = _Pending(type, now, now + t)
        return msg_id, out

    def ping(self, now: int, *, wall: int | None = None) -> tuple[str, list[Output]]:
        return self.request("ping", {}, now, timeout_ms=self.limits.ping_timeout_ms, wall=wall)

    def close(self, reason: str, now: int, *, wall: int | None = None) -> list[Output]:
        """Orderly close: a ``bye`` to the peer, then ``Closed``."""
        if self.closed is not None:
            return []
        out: list[Output] = []
        with contextlib.suppress(ProtocolError):
            out.extend(self.send("bye", {"reason": reason}, now, wall=wall)[1])
        self.closed = Closed(reason, remote=False)
        out.append(self.closed)
        self._pending.clear()
        return out

    def cancel_request(self, request_id: str) -> None:
        if self._pending.pop(request_id, None) is not None:
            self._remember_expired(request_id)

    @property
    def pending_requests(self) -> int:
        return len(self._pending)

    # --- timers -----------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        if self.closed is not None or not self._pending:
            return None
        return min(p.deadline for p in self._pending.values())

    def on_timer(self, now: int, *, wall: int | None = None) -> list[Output]:
        out: list[Output] = []
        for msg_id, p in list(self._pending.items()):
            if now >= p.deadline:
                del self._pending[msg_id]
                self._remember_expired(msg_id)
                self.stats.timeouts += 1
                out.append(Timeout(msg_id, p.type))
                if p.type == "ping":
                    self.ping_misses += 1
        if (self.closed is None
                and self.ping_misses >= self.limits.ping_misses_before_close):
            # A peer that answers no ping for this long is gone even if TCP never said
            # so (a cut cable, a sleeping laptop): close, so reconnect can take over.
            out.extend(self.close("timeout", now, wall=wall))
        return out

    def _remember_expired(self, msg_id: str) -> None:
        self._expired[msg_id] = None
        while len(self._expired) > _EXPIRED_MEMORY:
            self._expired.popitem(last=False)

    # --- inbound ----------------------------------------------------------------------

    def receive(self, frame: str | bytes | Envelope, now: int, *,
                wall: int | None = None) -> list[Output]:
        """Run one inbound frame through every SPEC 5 check, then act on it.

        ``now`` drives timers (RTT, rate limits); ``wall`` (default: ``now``) is the
        ``ts`` of anything sent back (a pong, an error)."""
        if self.closed is not None:
            return []
        self._wall = wall
        try:
            env, payload = self._check(frame)
        except RemoteProtocolError as exc:
            return self._failure(exc.code, exc.message, now)
        self.rx_seq = env.seq  # type: ignore[assignment]
        self.last_seen = now
        self.stats.msgs_in += 1
        self.stats.bytes_in += (wire_size(frame) if not isinstance(frame, Envelope)
                                else len(env.box or "") + 360)
        msg = Message(env.type, env.msg_id, env.re, payload, env.ts)
        if env.type not in self.known_types:
            return self._error_reply("unknown_type", f"unknown type {env.type}", env, now)
        if self.level != "trusted" and env.type not in GUEST_TYPES:
            return self._failure("forbidden", f"{env.type} needs a trusted peer", now, env)
        return self._act(msg, now)

    def _check(self, frame: str | bytes | Envelope) -> tuple[Envelope, dict[str, Any]]:
        # decode (a relayed envelope arrives decoded: envelope_from_obj did the same), v
        env = frame if isinstance(frame, Envelope) else decode_envelope(
            frame, max_bytes=self.limits.max_envelope_bytes)
        if env.src != self.peer_id:
            raise RemoteProtocolError("src", "src is not the session's peer")
        if env.dst != self.identity.node_id:
            raise RemoteProtocolError("dst", "envelope is not addressed to us")
        if not verify_envelope(env, self.peer_key):
            raise RemoteProtocolError("sig", "signature does not verify with the pinned key")
        if env.seq is None or env.seq <= self.rx_seq:
            raise RemoteProtocolError("seq", "replayed or reordered envelope")
        if env.box is None:
            raise RemoteProtocolError("not_sealed", "session envelopes are sealed")
        return env, open_with(self._rx, env)

    def _act(self, msg: Message, now: int) -> list[Output]:
        t = msg.type
        if t == "ping":
            return self.send("pong", {}, now, re=msg.msg_id, wall=self._wall)[1]
        if msg.re is not None:
            pending = self._pending.pop(msg.re, None)
            if pending is not None:
                if t == "pong":
                    self.ping_misses = 0
                    return [Pong(msg.re, max(0, now - pending.sent_at))]
                if t == "error":
                    return [Reply(msg.re, msg), _peer_error(msg)]
                return [Reply(msg.re, msg)]
            if msg.re in self._expired:
                self.stats.dropped += 1
                return [Dropped("late", "reply after its request timed out")]
        if t == "pong":
            self.stats.dropped += 1
            return [Dropped("late", "pong for no ping")]
        if t == "bye":
            reason = msg.data.get("reason")
            self.closed = Closed(reason if type(reason) is str else "bye", remote=True)
            self._pending.clear()
            return [self.closed]
        if t == "error":
            return [_peer_error(msg)]
        return [msg]

    def _failure(
        self, code: str, message: str, now: int, env: Envelope | None = None
    ) -> list[Output]:
        self.stats.failures += 1
        self.stats.dropped += 1
        self.stats.by_code[code] = self.stats.by_code.get(code, 0) + 1
        out: list[Output] = [Dropped(code, message)]
        if env is not None:
            out.extend(self._error_reply(code, message, env, now))
        if self.stats.failures >= self.limits.session_failures_before_close:
            out.extend(self.close("too_many_errors", now, wall=self._wall))
        return out

    def _error_reply(self, code: str, message: str, env: Envelope, now: int) -> list[Output]:
        """``error {code}`` with ``re``, at most one per code per interval (SPEC 5)."""
        last = self._error_replied_at.get(code)
        if last is not None and now - last < self.limits.unknown_type_reply_interval_ms:
            return []
        self._error_replied_at[code] = now
        return self.send("error", {"code": code, "message": message}, now, re=env.msg_id,
                         wall=self._wall)[1]

    def reply_error(
        self, code: str, message: str, re: str, now: int, *, wall: int | None = None
    ) -> list[Output]:
        """An application-level ``error`` reply (e.g. ``forbidden`` from collab)."""
        return self.send("error", {"code": code, "message": message}, now, re=re, wall=wall)[1]


def _peer_error(msg: Message) -> PeerError:
    code = msg.data.get("code")
    text = msg.data.get("message")
    return PeerError(
        code if type(code) is str else "unknown", text if type(text) is str else "", msg.re
    )



__all__ = [
    "KNOWN_TYPES", "NO_REDIAL_REASONS", "Closed", "Dropped", "Message", "Output", "PeerError",
    "Pong", "Reply", "Send", "Session", "Stats", "Timeout", "keep_new_session",
    "reconnect_delay_ms", "should_redial",
]
