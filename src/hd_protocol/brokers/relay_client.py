"""The node's side of a relay broker (SPEC 7.7) as one sans-IO machine, across reconnects.

One ``RelayClient`` per relay the node attaches to. It decides when to dial (``Dial``,
with backoff between attempts), answers the relay's challenge with a signed ``attach``
and gives up on a relay that does not attach in time, turns what the node's virtual
links send into ``relay {to, envelope}`` (``send``), and routes what arrives — live, or
from the store-and-forward mailbox with a ``qid`` — to the peer it comes from
(``Deliver``). The shell moves the bytes, fires ``on_timer`` at ``next_deadline`` and
reports what became of every ``Deliver`` (``delivered``).

The ack rule: a stored envelope is acknowledged (``ack {qids}``: the relay deletes it)
only once the node is done with it — handed to a link (``delivered`` says how many of a
``Deliver`` the shell handed on), or one the node had already taken (a duplicate), or
one it can never take (not addressed to it, not from whom the relay says, or a session
envelope for a peer it has no link with: a session that is gone). What the node could
not take *yet* (the link's queue is full, the hub has no handshake slot) is never
acknowledged: the machine holds it (bounded) and offers it again after a short backoff,
keeping each peer's envelopes in the order the relay sent them. What does not fit even
there stays in the relay's mailbox, and once nothing is held the machine closes the
connection (``Close``, reason ``redeliver``) so the relay sends it again on the next
attach. Acks leave on the next ``on_timer`` (due at once), one frame per batch.

Time is only ``now`` (monotonic ms); randomness only the injected ``rng`` (the jitter of
the reconnect backoff). Nothing the relay sends can raise out of ``receive``: a frame
that breaks a rule becomes ``Dropped`` (and, before the attach, a ``Close``).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..effects import Send
from ..envelope import Envelope, envelope_from_obj, wire_size
from ..errors import LocalProtocolError, RemoteProtocolError
from ..identity import Identity, Rng, is_node_id
from ..limits import DEFAULT_LIMITS, Limits
from ..peer.policy import reconnect_delay_ms
from .frames import decode_frame, fields, parse_challenge
from .relay import FRAME_SLACK, MAX_ACK_QIDS, ack_frame, attach_frame, relay_frame

ATTACH_TIMEOUT_MS = 10_000  # from the connection being up to ``attached``
DIAL_TIMEOUT_MS = 10_000
RETRY_MS = 250  # first re-offer of a held envelope; doubles up to RETRY_CAP_MS
RETRY_CAP_MS = 5_000
MAX_HELD = 1024  # envelopes held for a later offer, all peers together
MAX_HELD_BYTES = 16 << 20
DEDUP_IDS = 2048  # msg ids remembered per link (at-least-once: duplicates are dropped)
REDELIVER = "redeliver"  # the reason of our Close that asks for the mailbox again


# --- what the machine hands the shell ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dial:
    """Open a WebSocket to the relay now (and say ``connected`` or ``disconnected``)."""

    timeout_ms: int = DIAL_TIMEOUT_MS


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection to the relay (then say ``disconnected``)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Attached:
    queued: int  # envelopes the relay holds for us, as it says


@dataclass(frozen=True, slots=True)
class Incoming:
    envelope: Envelope
    qid: int | None  # set: from the mailbox, acknowledged once taken
    size: int


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand these envelopes, in order, to ``peer``'s link, as many as it takes, and say
    how many (``delivered``). ``opens``: no link with ``peer`` yet and the first one is
    its ``hello`` — an inbound link, if the hub has a handshake slot."""

    peer: str
    items: tuple[Incoming, ...]
    opens: bool = False


@dataclass(frozen=True, slots=True)
class Queued:
    """The relay stored an envelope we sent (its destination is not attached)."""

    msg_id: str


@dataclass(frozen=True, slots=True)
class RelayError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """Something from the relay broke a rule, or did not fit: ignored (and logged)."""

    code: str
    message: str


Output = Send | Dial | Close | Attached | Deliver | Queued | RelayError | Dropped


# --- the machine ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Waiting:
    """A peer with a ``Deliver`` out (``offered``: the shell has not said yet what it
    took) or envelopes not taken yet (oldest first, offered again ``at``). Whatever
    comes from the peer meanwhile waits here behind them: order is kept."""

    items: deque[Incoming]
    at: int | None = None
    tries: int = 0
    offered: bool = False


class RelayClient:
    """States: ``idle`` (waiting to dial) → ``dialing`` → ``challenged`` (connected,
    waiting for the challenge) → ``attaching`` (``attach`` sent) → ``attached``; from
    any of them ``closing`` (we said ``Close``), and back to ``idle`` on
    ``disconnected``."""

    def __init__(self, identity: Identity, *, rng: Rng, limits: Limits = DEFAULT_LIMITS,
                 pinned_key: str | None = None, max_held: int = MAX_HELD,
                 max_held_bytes: int = MAX_HELD_BYTES) -> None:
        self.identity = identity
        self.rng = rng
        self.pinned_key = pinned_key
        self.max_frame = limits.max_envelope_bytes + FRAME_SLACK
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes
        self.state = "idle"
        self._attempt = 0
        self._dial_at: int | None = 0  # the first dial is due at once
        self._attach_by: int | None = None
        self._links: dict[str, OrderedDict[str, None]] = {}  # peer -> msg ids taken
        self._held: dict[str, _Waiting] = {}
        self._held_count = 0
        self._held_bytes = 0
        self._to_ack: dict[int, None] = {}
        self._due: int | None = None  # acks (or a redelivery) due since this time
        # Peers with a stored envelope we had no room to hold: it stays in the relay's
        # mailbox, and so does everything after it from that peer (order is kept).
        self._left: set[str] = set()

    # --- queries ---------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return self.state == "attached"

    @property
    def held(self) -> int:
        """Envelopes waiting for a later offer (all peers)."""
        return self._held_count

    def has_link(self, peer: str) -> bool:
        return peer in self._links

    # --- time ------------------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        dls = [t for t in (self._dial_at, self._attach_by, self._due) if t is not None]
        dls += [w.at for w in self._held.values() if w.at is not None and not w.offered]
        return min(dls, default=None)

    def on_timer(self, now: int) -> list[Output]:
        out: list[Output] = []
        if self._dial_at is not None and now >= self._dial_at and self.state == "idle":
            self._dial_at = None
            self.state = "dialing"
            out.append(Dial())
        if self._attach_by is not None and now >= self._attach_by:
            self._attach_by = None
            out.append(self._close(1000, "the relay did not attach us in time"))
        for peer in [p for p, w in self._held.items()
                     if not w.offered and w.at is not None and now >= w.at]:
            out += self._offer_held(peer, now)
        if self._due is not None and now >= self._due:
            self._due = None
            out += self._flush_acks()
            if self._left and not self._held and self.attached:
                self._left.clear()  # the next attach brings them again, in order
                out.append(self._close(1000, REDELIVER))
        return out

    def _flush_acks(self) -> list[Output]:
        qids = list(self._to_ack)
        self._to_ack.clear()
        if not self.attached:
            return []
        return [Send(ack_frame(qids[i:i + MAX_ACK_QIDS]))
                for i in range(0, len(qids), MAX_ACK_QIDS)]

    def _close(self, code: int, reason: str) -> Close:
        """Let the connection go: nothing is sent on it any more (``disconnected`` next)."""
        self.state = "closing"
        self._attach_by = None
        return Close(code, reason)

    def _mark_due(self, now: int) -> None:
        self._due = now if self._due is None else min(self._due, now)

    # --- the connection --------------------------------------------------------------------

    def connected(self, now: int) -> list[Output]:
        """The WebSocket is up: the relay's challenge must come, and the attach be done,
        within ``ATTACH_TIMEOUT_MS``."""
        self.state = "challenged"
        self._attach_by = now + ATTACH_TIMEOUT_MS
        return []

    def disconnected(self, now: int, *, retry_in_ms: int | None = None) -> list[Output]:
        """The connection is gone (or the dial failed): dial again after a backoff, or
        after ``retry_in_ms`` (the shell fails over between instances of the relay). What
        came from the mailbox and was not taken the relay sends again, so what we held
        of it is let go (live envelopes, which the relay does not keep, stay held)."""
        self.state = "idle"
        self._attach_by = None
        backoff = reconnect_delay_ms(self._attempt, self.rng)
        self._dial_at = now + (backoff if retry_in_ms is None else max(0, retry_in_ms))
        self._attempt += 1
        self._to_ack.clear()
        self._due = None
        self._left.clear()
        for peer, w in list(self._held.items()):
            stored = [it for it in w.items if it.qid is not None]
            self._unhold(stored)
            w.items = deque(it for it in w.items if it.qid is None)
            if not w.items and not w.offered:
                del self._held[peer]
        return []

    # --- links -----------------------------------------------------------------------------

    def open_link(self, peer: str) -> None:
        """The shell made a link to ``peer`` (dialled, or inbound from its ``hello``)."""
        if peer not in self._links:
            self._links[peer] = OrderedDict()

    def close_link(self, peer: str, now: int) -> list[Output]:
        """The link to ``peer`` is gone. Its held envelopes go with it: nobody can take
        them any more, so the stored ones among them are acknowledged."""
        self._links.pop(peer, None)
        w = self._held.pop(peer, None)
        if w is not None:
            self._unhold(w.items)
            for it in w.items:
                self._done(it.qid, now)
        self._check_left(now)
        return []

    def send(self, peer: str, wires: Sequence[str | bytes]) -> list[Send]:
        """What a link sends: one ``relay {to: peer, envelope}`` per envelope, its wire
        text spliced in whole."""
        if not self.attached:
            raise LocalProtocolError("unregistered", "not attached to the relay")
        return [Send(relay_frame(peer, w if isinstance(w, str) else w.decode()))
                for w in wires]

    # --- what the shell did with a ``Deliver`` ------------------------------------------

    def delivered(self, d: Deliver, taken: int, now: int) -> list[Output]:
        """The shell handed the first ``taken`` of ``d.items`` to the link (a prefix: a
        link takes envelopes in order). Those are acknowledged; the rest are held and
        offered again after a backoff, ahead of anything newer from that peer."""
        taken = max(0, min(taken, len(d.items)))
        seen = self._links.get(d.peer)
        for it in d.items[:taken]:
            if seen is not None:
                _remember(seen, it.envelope.msg_id)
            self._done(it.qid, now)
        rest = d.items[taken:]
        w = self._held.pop(d.peer, None) or _Waiting(deque())
        w.offered = False
        newer, w.items = w.items, deque()
        self._unhold(newer)  # and back, behind what was not taken
        out: list[Output] = [o for it in (*rest, *newer)
                             if (o := self._hold(d.peer, w, it)) is not None]
        if w.items:
            self._held[d.peer] = w
            w.tries = 0 if taken else min(w.tries + 1, 16)
            # Not all taken: the link is full, or the hub busy; try again in a while.
            # All taken, and newer ones came meanwhile: offer those at once.
            w.at = now + _retry_delay(w.tries) if rest else now
        self._check_left(now)
        return out

    def _hold(self, peer: str, w: _Waiting, it: Incoming) -> Dropped | None:
        """Keep ``it`` (behind ``w.items``) for a later offer, if there is room and
        nothing older from ``peer`` had to be left to the relay."""
        if peer not in self._left and (
                self._held_count < self.max_held
                and self._held_bytes + it.size <= self.max_held_bytes):
            w.items.append(it)
            self._held_count += 1
            self._held_bytes += it.size
            return None
        # No room: a stored one stays in the relay's mailbox (not acked) and comes back
        # after a reattach, with all that follows it; a live one is lost (the session
        # notices the gap).
        if it.qid is not None:
            self._left.add(peer)
        return Dropped("full", f"no room to hold an envelope from {peer}")

    def _unhold(self, items: Sequence[Incoming] | deque[Incoming]) -> None:
        self._held_count -= len(items)
        self._held_bytes -= sum(it.size for it in items)

    def _check_left(self, now: int) -> None:
        if self._left and not self._held:
            self._mark_due(now)

    def _offer_held(self, peer: str, now: int) -> list[Output]:
        w = self._held[peer]
        items = tuple(w.items)
        self._unhold(items)
        w.items.clear()
        if peer not in self._links and (not items or items[0].envelope.type != "hello"):
            del self._held[peer]
            for it in items:  # the link went while they waited: nobody can take them
                self._done(it.qid, now)
            self._check_left(now)
            return []
        w.offered, w.at = True, None
        return [Deliver(peer, items, opens=peer not in self._links)]

    def _done(self, qid: int | None, now: int) -> None:
        """The node is done with this envelope: a stored one is acknowledged."""
        if qid is not None:
            self._to_ack[qid] = None
            self._mark_due(now)

    # --- frames in -------------------------------------------------------------------------

    def receive(self, raw: str | bytes, now: int) -> list[Output]:
        try:
            frame = decode_frame(raw, self.max_frame)
            return self._on(frame, wire_size(raw), now)
        except RemoteProtocolError as exc:
            out: list[Output] = [Dropped(exc.code, exc.message)]
            if self.state in ("challenged", "attaching"):
                out.append(self._close(1008, f"the relay broke the attach: {exc.message}"))
            return out

    def _on(self, f: dict[str, Any], size: int, now: int) -> list[Output]:
        t = f["type"]
        if t == "error":
            err = RelayError(str(f.get("code", "")), str(f.get("message", "")))
            if self.state in ("challenged", "attaching") or (
                    self.attached and err.code == "replaced"):
                return [err, self._close(1000, f"the relay said {err.code}")]
            return [err]
        if self.state == "challenged":
            if t != "challenge":
                raise RemoteProtocolError("bad_frame", f"{t} before the challenge")
            hello = parse_challenge(f, self.pinned_key)
            self.state = "attaching"
            return [Send(attach_frame(self.identity, hello))]
        if self.state == "attaching":
            queued = f.get("queued")
            if t != "attached" or type(queued) is not int:
                raise RemoteProtocolError("bad_frame", f"{t} instead of attached")
            self.state = "attached"
            self._attach_by = None
            self._attempt = 0
            return [Attached(queued)]
        if self.state != "attached":
            return []  # a frame after we let the connection go
        if t == "relay":
            return self._on_relay(f, size, now)
        if t == "relay_ack" and type(f.get("msg_id")) is str:
            return [Queued(f["msg_id"])]
        raise RemoteProtocolError("bad_frame", f"unexpected {t}")

    def _on_relay(self, f: dict[str, Any], size: int, now: int) -> list[Output]:
        fields(f, ("from", "envelope"), ("qid",))
        qid = f.get("qid")
        if qid is not None and (type(qid) is not int or qid < 0):
            raise RemoteProtocolError("bad_frame", "qid is an integer")
        peer = f["from"]
        try:
            env = envelope_from_obj(f["envelope"])
            if not is_node_id(peer) or env.src != peer:
                raise RemoteProtocolError("bad_frame", "not from whom the relay says")
            if env.dst != self.identity.node_id:
                raise RemoteProtocolError("bad_frame", "not addressed to us")
        except RemoteProtocolError as exc:
            self._done(qid, now)  # never ours to take: else it would come back for ever
            return [Dropped(exc.code, exc.message)]
        it = Incoming(env, qid, size)
        seen = self._links.get(peer)
        if seen is not None and env.msg_id in seen:
            self._done(qid, now)  # a duplicate of one we took (at least once)
            return []
        w = self._held.get(peer)
        if w is not None or peer in self._left:
            # Older ones from that peer wait (or were left): this one goes behind them.
            held = self._hold(peer, w if w is not None else _Waiting(deque()), it)
            return [held] if held is not None else []
        if seen is None and env.type != "hello":
            self._done(qid, now)  # a session that is gone: nobody will take it
            return [Dropped("not_found", f"no link with {peer}")]
        self._held[peer] = _Waiting(deque(), offered=True)
        return [Deliver(peer, (it,), opens=seen is None)]


def _retry_delay(tries: int) -> int:
    """RETRY_MS after an offer that took some, doubling with each that took none."""
    return min(RETRY_CAP_MS, RETRY_MS << max(tries - 1, 0))


def _remember(seen: OrderedDict[str, None], msg_id: str) -> None:
    seen[msg_id] = None
    if len(seen) > DEDUP_IDS:
        seen.popitem(last=False)
