"""The relay broker (SPEC 7.7) as one sans-IO machine: attach, route, store and forward.

A relay routes sealed envelopes between attached nodes and can do nothing else with
them: it checks that an envelope is well formed, that its ``src`` is the node attached
on that connection, that its ``dst`` is the ``to`` it was sent to and that its ``ttl``
allows one more hop — then it lowers ``ttl`` (the one field nobody signs) and passes it
on. It never opens a box, and since ``dst`` and ``seq`` are signed it cannot forge,
re-address or replay anything the receiver would accept.

Store and forward: an envelope for a node that is not attached (or whose connection is
congested, or that still has older envelopes waiting: order is kept) is handed to the
shell to store (``StoreQueued``) *before* the sender gets ``relay_ack queued``; when
the node attaches, the shell loads its queue (``LoadQueued``) and the machine sends it
out in order (``deliver``) with a ``qid`` each; the node's ``ack {qids}`` deletes them
(``DeleteQueued``). At least once: a node drops duplicates by ``msg_id``/``seq``.

For the cluster mailbox (issue 19; the live path between instances: ``relay_cluster``):
``deferred_acks`` (``stored`` answers each ``StoreQueued``: the ack or ``error
unavailable|queue_full``; one ``LoadQueued`` per connection at a time, answered by
``deliver`` or ``load_failed``) and ``shared_store`` (others add to the mailbox: counts
are our view, corrected by each short load; an attach always loads; ``mail_arrived``:
another stored for it).

The shell moves frames (``ToConn``/``CloseConn``) and persists; ``connect``,
``receive``, ``disconnect`` and ``on_timer`` take a monotonic ``now``; the wall clock
(``wall``) only dates queued envelopes for their 24 h expiry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..envelope import envelope_from_obj
from ..errors import LocalProtocolError, RemoteProtocolError
from ..identity import Identity, Rng, b64encode, is_node_id
from ..limits import DEFAULT_LIMITS, Limits
from .frames import (
    ServerHello,
    TokenBucket,
    attach_bytes,
    challenge,
    check_identity_proof,
    decode_frame,
    encode_frame,
    error_frame,
    fields,
    queued_size,
    relay_delivery,
    relayed_wire,
)

FRAME_SLACK = 4096  # a relay frame is an envelope and a few members around it
MAX_ACK_QIDS = 1000
BAD_FRAMES_BEFORE_CLOSE = 16


@dataclass(frozen=True, slots=True)
class ToConn:
    conn: int
    frame: str


@dataclass(frozen=True, slots=True)
class CloseConn:
    conn: int
    code: int = 1000
    reason: str = ""


@dataclass(frozen=True, slots=True)
class QueuedEnvelope:
    """One stored envelope: ``qid`` is the store's order and key."""

    qid: int
    dst: str
    src: str
    envelope: dict[str, Any] = field(hash=False)
    size: int = 0


@dataclass(frozen=True, slots=True)
class StoreQueued:
    """Store this envelope durably (the sender's ack follows, or waits for ``stored``)."""

    dst: str
    src: str
    msg_id: str
    envelope: dict[str, Any] = field(hash=False)
    size: int
    expires: int  # wall clock, ms
    conn: int = 0  # the sender's connection: with deferred acks ``stored`` answers it


@dataclass(frozen=True, slots=True)
class LoadQueued:
    """Load up to ``limit`` envelopes for ``node``, oldest first, for ``deliver``."""

    conn: int
    node: str
    limit: int


@dataclass(frozen=True, slots=True)
class DeleteQueued:
    node: str
    qids: tuple[int, ...]
    below: int = field(default=0, compare=False)  # all below this qid are done (oldest first)


Output = ToConn | CloseConn | StoreQueued | LoadQueued | DeleteQueued


@dataclass(slots=True)
class _Conn:
    id: int
    nonce: str
    frames: TokenBucket  # control frames (attach, ack)
    data: TokenBucket  # relay frames: sized for sessions, not for chatter
    node: str | None = None
    bad: int = 0
    congested: bool = False
    in_flight: dict[int, int] = field(default_factory=dict)  # delivered qid -> size
    loading: bool = False  # deferred: a LoadQueued is out
    stored_meanwhile: list[int] = field(default_factory=lambda: [0, 0])  # it may miss these
    more: bool = False  # shared: the store may hold more for this node than counted


_REFUSALS = frozenset({"not_found", "queue_full", "unavailable"})


class RelayServer:
    """Every connection of one relay broker."""

    def __init__(self, identity: Identity, *, rng: Rng, limits: Limits = DEFAULT_LIMITS,
                 queued: Mapping[str, tuple[int, int]] | None = None, delivery_batch: int = 256,
                 data_rate_per_s: int = 20_000, data_burst: int = 40_000,
                 deferred_acks: bool = False, shared_store: bool = False) -> None:
        self.identity = identity
        self.deferred_acks, self.shared_store = deferred_acks, shared_store  # see above
        self.rng = rng
        self.limits = limits
        self.delivery_batch = delivery_batch
        self.data_rate = (data_rate_per_s, data_burst)
        self._conns: dict[int, _Conn] = {}
        self._attached: dict[str, int] = {}  # node id -> conn
        # node id -> [envelopes, bytes] in the store (the shell's at start, then ours).
        self._queued: dict[str, list[int]] = {k: [n, b] for k, (n, b) in (queued or {}).items()}
        # node id -> [envelopes, bytes] handed to the store, not answered yet (deferred).
        self._pending: dict[str, list[int]] = {}
        self.max_frame = limits.max_envelope_bytes + FRAME_SLACK

    # --- queries --------------------------------------------------------------------------

    def attached(self, node: str) -> int | None:
        return self._attached.get(node)

    def nodes(self) -> list[str]:
        return list(self._attached)  # every node attached here

    def queued(self, node: str) -> tuple[int, int]:
        return (q[0], q[1]) if (q := self._queued.get(node)) else (0, 0)

    def in_flight(self) -> frozenset[int]:
        """Delivered, not acknowledged: a purge leaves these to their ack (no double count)."""
        return frozenset(q for c in self._conns.values() for q in c.in_flight)

    @property
    def total_queued_bytes(self) -> int:
        return sum(b for _, b in self._queued.values())

    # --- connection life ------------------------------------------------------------------

    def connect(self, conn: int, now: int) -> list[Output]:
        nonce = self.rng(32)
        lim = self.limits
        self._conns[conn] = _Conn(conn, b64encode(nonce),
                                  TokenBucket(lim.rate_per_s, lim.rate_burst, now),
                                  TokenBucket(self.data_rate[0], self.data_rate[1], now))
        return [ToConn(conn, challenge(self.identity, nonce))]

    def disconnect(self, conn: int, now: int = 0) -> list[Output]:
        del now  # nothing here depends on time; the signature matches the lobby's
        c = self._conns.pop(conn, None)
        if c is not None and c.node is not None and self._attached.get(c.node) == conn:
            del self._attached[c.node]
        return []

    def congested(self, conn: int, congested: bool) -> list[Output]:
        """The shell's writer for ``conn`` is full (or has drained): new envelopes for
        that node go to the store meanwhile, so a slow receiver costs disk, not memory."""
        c = self._conns.get(conn)
        if c is None:
            return []
        c.congested = congested
        return self._maybe_load(c) if not congested else []  # (_maybe_load checks node)

    # --- frames in ------------------------------------------------------------------------

    def receive(self, conn: int, text: str | bytes, now: int, wall: int) -> list[Output]:
        c = self._conns.get(conn)
        if c is None:
            return []
        try:
            frame = decode_frame(text, self.max_frame)
            t = frame["type"]
            bucket = c.data if t == "relay" and c.node is not None else c.frames
            if not bucket.take(now):
                raise RemoteProtocolError("rate_limited", "too many frames")
            if c.node is None:
                if t != "attach":
                    raise RemoteProtocolError("unregistered", "attach first")
                return self._on_attach(c, frame)
            if t == "relay":
                return self._on_relay(c, frame, wall, text)
            if t == "ack":
                return self._on_ack(c, frame)
            raise RemoteProtocolError("bad_request", f"no frame {t} here")
        except RemoteProtocolError as exc:
            return self._bad(c, exc)

    def _bad(self, c: _Conn, exc: RemoteProtocolError) -> list[Output]:
        code = exc.code if exc.code in ("bad_frame", "unregistered", "auth", "not_found",
                                        "rate_limited", "too_large", "bad_request",
                                        "queue_full", "unavailable") else "bad_frame"
        out: list[Output] = [ToConn(c.id, error_frame(code, exc.message))]
        if code in _REFUSALS:
            return out  # an honest answer to an honest frame: not held against the node
        c.bad += 1
        if code == "auth" or c.bad >= BAD_FRAMES_BEFORE_CLOSE:
            out.append(CloseConn(c.id, 1008, "too many bad frames" if code != "auth"
                                 else "authentication failed"))
            self.disconnect(c.id)
        return out

    def _on_attach(self, c: _Conn, frame: dict[str, Any]) -> list[Output]:
        fields(frame, ("node_id", "public_key", "sig"))
        signed = attach_bytes(c.nonce, self.identity.node_id, str(frame["node_id"]),
                              str(frame["public_key"]))
        node = check_identity_proof(frame["node_id"], frame["public_key"], frame["sig"], signed)
        out: list[Output] = []
        old = self._attached.get(node)
        if old is not None and old != c.id:
            out += [ToConn(old, error_frame("replaced", "the node attached again")),
                    CloseConn(old, 1000, "replaced")]
            self.disconnect(old)
        c.node = node
        self._attached[node] = c.id
        c.more = self.shared_store  # another instance may have stored for it
        n, _ = self.queued(node)
        out.append(ToConn(c.id, encode_frame("attached", {"queued": n})))
        return out + self._maybe_load(c)

    def _on_relay(self, c: _Conn, frame: dict[str, Any], wall: int, text: str | bytes
                  ) -> list[Output]:
        fields(frame, ("to", "envelope"))
        to, env_obj = frame["to"], frame["envelope"]
        assert c.node is not None
        relayed = check_relayed(env_obj, c.node, to)
        tc = self._local(to)
        wire = relayed_wire(text, to, relayed)  # once: for the receiver, a size, the bus
        if tc is not None and not tc.congested and self.queued(to)[0] == 0:
            return [ToConn(tc.id, relay_delivery(c.node, wire))]
        size = queued_size(wire)
        if tc is None and (live := self._elsewhere(c.node, to, relayed, size, wire)) is not None:
            return live
        # Store and forward: durably stored first, then acknowledged (SPEC 7.7).
        n, b = self.queued(to)
        lim = self.limits
        # A shared store counts what every instance queued and refuses past its limits
        # itself; this instance's counts do not see what the others stored or delivered.
        if not self.shared_store and (
                n + 1 > lim.relay_queue_envelopes or b + size > lim.relay_queue_bytes
                or self.total_queued_bytes + size > lim.relay_total_bytes):
            raise RemoteProtocolError("queue_full", f"the queue for {to} is full")
        self._queued[to] = [n + 1, b + size]
        msg_id = relayed["msg_id"]
        store = StoreQueued(to, c.node, msg_id, relayed, size, wall + lim.relay_queue_age_ms,
                            c.id)
        if self.deferred_acks:  # the ack waits for ``stored``
            _add(self._pending.setdefault(to, [0, 0]), 1, size)
            return [store]
        return [store, ToConn(c.id, _queued_ack(msg_id))]

    def _on_ack(self, c: _Conn, frame: dict[str, Any]) -> list[Output]:
        fields(frame, ("qids",))
        qids = frame["qids"]
        if (type(qids) is not list or not 0 < len(qids) <= MAX_ACK_QIDS
                or any(type(q) is not int for q in qids)):
            raise RemoteProtocolError("bad_request", "qids is a list of 1..1000 integers")
        assert c.node is not None
        # Only what we gave this node, each qid once (an ack may name one twice).
        known = tuple(dict.fromkeys(q for q in qids if q in c.in_flight))
        if not known:
            return []
        freed = sum(c.in_flight.pop(q) for q in known)
        self._take_back(c.node, len(known), freed)
        below = min(c.in_flight) if c.in_flight else max(known) + 1
        return [DeleteQueued(c.node, known, below), *self._maybe_load(c)]

    def _elsewhere(self, src: str, to: str, env: dict[str, Any], size: int, wire: str
                   ) -> list[Output] | None:
        return None  # ``to`` is not attached here: a cluster may send it live (or None: store)

    # --- store and forward, the shell's side ------------------------------------------------

    def deliver(self, conn: int, items: Sequence[QueuedEnvelope]) -> list[Output]:
        """Send what ``LoadQueued`` loaded, in order, each with its ``qid``."""
        c = self._conns.get(conn)
        if c is None or c.node is None:
            return []
        c.loading = False
        mine = [it for it in items if it.dst == c.node]
        if self.shared_store and len(items) < self.delivery_batch:
            # A short load is all the store held for the node: with what is on its way
            # in and what was stored while it ran, that is the count (others' included).
            p, m = self._pending.get(c.node, (0, 0)), c.stored_meanwhile
            n = len(mine) + p[0] + m[0]
            if n:
                self._queued[c.node] = [n, sum(it.size for it in mine) + p[1] + m[1]]
            else:
                self._queued.pop(c.node, None)
        elif self.shared_store:
            c.more = True  # a full batch: there may be more behind it
        out: list[Output] = []
        for it in (it for it in mine if it.qid not in c.in_flight):
            c.in_flight[it.qid] = it.size
            out.append(ToConn(conn, encode_frame("relay", {"from": it.src, "qid": it.qid,
                                                           "envelope": it.envelope})))
        if not c.in_flight and c.more:  # mail came while the load ran, or was missed
            out += self._maybe_load(c)
        return out

    def load_failed(self, conn: int) -> list[Output]:
        """``LoadQueued`` failed (the store is away): the next occasion loads again."""
        c = self._conns.get(conn)
        if c is not None:
            c.loading = False
            c.more = True
        return []

    def stored(self, conn: int, dst: str, msg_id: str, size: int, ok: bool,
               code: str = "unavailable", duplicate: bool = False) -> list[Output]:
        """The store's answer to a deferred ``StoreQueued``: ``relay_ack queued``, or
        ``error code`` (``unavailable``; ``queue_full`` past the store's limits) with the
        count taken back. ``duplicate``: the store had it already: acked, counted once."""
        if (p := self._pending.get(dst)) is not None and _add(p, -1, -size)[0] <= 0:
            del self._pending[dst]
        sender = conn in self._conns
        if not ok or duplicate:
            self._take_back(dst, 1, size)
        if not ok:
            code = code if code == "queue_full" else "unavailable"
            return [ToConn(conn, error_frame(code, f"cannot queue {msg_id} for {dst} now"))
                    ] if sender else []
        out: list[Output] = [ToConn(conn, _queued_ack(msg_id))] if sender else []
        if (tc := self._local(dst)) is not None and not duplicate:
            if tc.loading:  # the load under way may not have seen it
                _add(tc.stored_meanwhile, 1, size)
                tc.more = True
            out += self._maybe_load(tc)
        return out

    def mail_arrived(self, node: str) -> list[Output]:
        """Another instance stored for ``node``: load it if it is attached here, idle."""
        if (c := self._local(node)) is None:
            return []
        c.more = True
        return self._maybe_load(c)

    def recount(self, counts: Mapping[str, tuple[int, int]]) -> None:
        """The store's own counts per destination, plus what is on its way in."""
        self._queued = {k: [n, b] for k, (n, b) in counts.items() if n > 0}
        for dst, (n, b) in self._pending.items():
            _add(self._queued.setdefault(dst, [0, 0]), n, b)

    def expired(self, node: str, count: int, size: int) -> None:
        self._take_back(node, count, size)  # the shell dropped these, past their 24 h

    def _local(self, node: str) -> _Conn | None:
        return self._conns.get(self._attached.get(node, -1))

    def _take_back(self, node: str, count: int, size: int) -> None:
        n, b = self.queued(node)
        if n - count > 0:
            self._queued[node] = [n - count, max(0, b - size)]
        else:
            self._queued.pop(node, None)

    def _maybe_load(self, c: _Conn) -> list[Output]:
        if c.node is None or c.congested or c.in_flight or c.loading:
            return []
        if not c.more and self.queued(c.node)[0] == 0:
            return []
        c.more = False
        if self.deferred_acks:
            c.loading = True
            c.stored_meanwhile = [0, 0]
        return [LoadQueued(c.id, c.node, self.delivery_batch)]


def _add(counts: list[int], n: int, size: int) -> list[int]:
    counts[0] += n
    counts[1] = max(0, counts[1] + size)
    return counts


def _queued_ack(msg_id: str) -> str:
    return encode_frame("relay_ack", {"msg_id": msg_id, "status": "queued"})


def check_relayed(env_obj: object, src: str, to: object) -> dict[str, Any]:
    """What a relay checks of an envelope before it passes it on (SPEC 7.7): strict
    form, ``src`` the attached sender, ``dst`` the ``to`` it was sent to, ``ttl`` > 0.
    Returns the envelope object with ``ttl`` lowered by one (the only change allowed)."""
    if not is_node_id(to):
        raise RemoteProtocolError("bad_request", "to is a node id")
    env = envelope_from_obj(env_obj)
    assert isinstance(env_obj, dict)
    if env.src != src:
        raise RemoteProtocolError("bad_request", "src is not the attached node")
    if env.dst != to:
        raise RemoteProtocolError("bad_request", "dst is not the node it is sent to")
    if env.ttl <= 0:
        raise RemoteProtocolError("bad_request", "ttl is spent")
    return {**env_obj, "ttl": env.ttl - 1}


# --- the node's side of a relay ------------------------------------------------------------


def attach_frame(identity: Identity, hello: ServerHello) -> str:
    """Our answer to a relay's (checked) challenge."""
    signed = attach_bytes(hello.nonce, hello.server_id, identity.node_id, identity.public_key)
    return encode_frame("attach", {"node_id": identity.node_id,
                                   "public_key": identity.public_key,
                                   "sig": identity.sign(signed)})


def relay_frame(to: str, envelope_wire: str) -> str:
    """``relay {to, envelope}`` around an envelope as it was encoded for the wire (its
    JSON text is spliced in whole: no second encoding)."""
    if not is_node_id(to):
        raise LocalProtocolError("bad_request", "to is a node id")
    return f'{{"type":"relay","to":"{to}","envelope":{envelope_wire}}}'


def ack_frame(qids: Sequence[int]) -> str:
    return encode_frame("ack", {"qids": list(qids)})
