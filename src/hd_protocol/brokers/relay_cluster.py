"""A relay broker that is one of several instances over one bus (issue 19, docs/cluster.md).

``ClusteredRelay`` is ``RelayServer`` with the cluster mailbox (``deferred_acks``: the
shell answers each ``StoreQueued`` with ``stored``; ``shared_store``: every instance
appends to and delivers from one stream, ``mail_arrived`` says another stored) plus a
live path between instances, so that an envelope for a node attached elsewhere does not
go through the stream when it need not:

- **where nodes are**: each instance claims the nodes attached to it in a shared map
  (``ClaimAttached``: node -> instance; newest wins by the bus's revision) and releases
  them when they leave (``ReleaseAttached``: only if still at our revision). Every
  instance reads the map (``on_attached``) and hears the others' heartbeats
  (``instance_alive``); an instance not heard for ``instance_ttl_ms`` is gone (its
  records are released by whoever notices first). A lost bus drops the map at once
  (``bus_lost``); a bus that is back claims everything again (``resync``).
- **sending instance S**: ``relay {to}`` for a node not attached here, attached at an
  alive instance X, with no store for ``to`` still waiting for its ack at S: forwarded
  as ``ToInstance(X, {t: relay, to, from, envelope})`` (the shell batches per instance
  into one message), and the sender gets no ``relay_ack`` (as for a local live
  delivery). Otherwise it is stored as before.
- **receiving instance X** (``on_message``): a live envelope for a node attached here,
  not congested, with nothing queued, loading, pending or in flight is delivered as a
  local live one; otherwise it is stored (``StoreQueued`` with no sender: ``conn`` 0;
  a failed store has no one to answer, the shell counts and logs it).

Why the node gets S's envelopes in order, once: S's envelopes for ``to`` are either
stored (in the stream in S's order: one store worker, in order) or live (one outbox,
one subject ``hd.relay.to.X``, one NATS connection: in order). A live one is sent only
once every earlier store for ``to`` at S is acknowledged (``_pending`` empty); with the
ack (``stored``) S puts a note ``{t: note, to}`` for X into the same outbox, and when the
map first says ``to`` is at X while S has counted mail for it, S sends X a note too.
So X reads the note before any later live envelope — on the same subscription: the
broadcast note on ``hd.mailnote.<dst>`` is another subscription, another queue in X,
and two queues keep no order between them. The note makes X load (``loading``, then
``in_flight``), and a live envelope that comes while X has anything queued, loading or
in flight for ``to`` is stored behind the older ones (X's own store worker keeps that
order). A node that moved on is at most once on the live path (a message to an
instance that died with it is lost until the map drops it, at most ``instance_ttl_ms``)
and at least once on the stored one, as before.

The limit of that argument: when S stops sending ``to`` live (its map dropped X: 20 s
of silence, or S's bus went away) while a live envelope is on its way to X or to X's
store (X found ``to`` busy) and S stores a later one first, the two are in the stream
the other way round. On a bus that is there, an envelope is at X in milliseconds and the
map drops X after seconds; the window is a bus that held S's envelope through a
reconnect (nats-py sends what it buffered when it is back).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..envelope import envelope_from_obj
from ..errors import RemoteProtocolError
from ..identity import is_node_id
from .cluster_view import ALIVE_EVERY_MS, INSTANCE_TTL_MS, ToInstance
from .frames import encode_frame, encode_value, error_frame, queued_size
from .relay import Output, RelayServer, StoreQueued, ToConn

__all__ = ["ALIVE_EVERY_MS", "BUS_PAYLOAD", "BUS_SLACK", "ClaimAttached", "ClusteredRelay",
           "ReleaseAttached", "ToInstance"]


@dataclass(frozen=True, slots=True)
class ClaimAttached:
    """Write ``node -> instance`` in the shared map: the node is attached here now."""

    node: str
    instance: str


@dataclass(frozen=True, slots=True)
class ReleaseAttached:
    """Delete the map's record of ``node`` if still at ``revision`` (0: ours)."""

    node: str
    revision: int = 0


ClusterOutput = Output | ClaimAttached | ReleaseAttached | ToInstance

BUS_PAYLOAD = 1 << 20  # nats-server's default max_payload (1 MiB)
BUS_SLACK = 8 << 10  # room for the wrapping: a live item's fields, a stored one's headers
# One change to the shared map, as the shell read it: node, instance (None: deleted; any
# other value than a name is skipped), revision.
AttachedChange = tuple[str, object, int]


class ClusteredRelay(RelayServer):
    def __init__(self, *args: Any, instance: str, instance_ttl_ms: int = INSTANCE_TTL_MS,
                 bus_payload: int = BUS_PAYLOAD, **kw: Any) -> None:
        super().__init__(*args, deferred_acks=True, shared_store=True, **kw)
        self.instance = instance
        self.bus_limit(bus_payload)
        self.instance_ttl_ms = instance_ttl_ms
        self._where: dict[str, tuple[str, int]] = {}  # node -> (instance, revision) read
        self._seen: dict[str, int] = {}  # other instance -> last heard (monotonic ms)
        self._owed: set[str] = set()  # stored while no instance was known for them
        self._claimed: set[str] = set()  # nodes attached here whose record we keep
        self._left: set[str] = set()  # nodes that may have left since the last entry
        self._now = 0
        self._inside = False
        self.forwarded = 0  # envelopes sent live to another instance
        self.taken = 0  # live envelopes from another instance delivered here
        self.junk = 0  # messages from the bus that were not ours to take

    def bus_limit(self, payload: int) -> bool:
        """The bus carries messages of at most ``payload`` bytes (the NATS server's
        ``max_payload``, read at each connection): an envelope that would not fit one,
        with what goes around it, neither crosses live nor is stored (``too_large``).
        False: some envelopes a node may send (SPEC 11) will not fit."""
        self.bus_item_bytes = max(0, payload - BUS_SLACK)
        return self.bus_item_bytes >= self.limits.max_envelope_bytes

    # --- queries ----------------------------------------------------------------------

    def where(self, node: str) -> str | None:
        """The other, alive instance the map says ``node`` is attached at."""
        rec = self._where.get(node)
        if rec is None or rec[0] == self.instance or not self.is_alive(rec[0], self._now):
            return None
        return rec[0]

    def is_alive(self, instance: str, now: int) -> bool:
        last = self._seen.get(instance)
        return last is not None and now - last < self.instance_ttl_ms

    def instances(self) -> list[str]:
        return [i for i in self._seen if self.is_alive(i, self._now)]

    # --- entry points: note ``now``, release who left ----------------------------------

    def receive(self, conn: int, text: str | bytes, now: int, wall: int) -> list[Any]:
        self._now = now
        self._inside = True  # a connection closed in here is released on the way out
        try:
            out: list[Any] = super().receive(conn, text, now, wall)
        finally:
            self._inside = False
        return out + self._releases() if self._left else out

    def disconnect(self, conn: int, now: int = 0) -> list[Any]:
        c = self._conns.get(conn)
        if c is not None and c.node is not None:
            self._left.add(c.node)
        out = super().disconnect(conn, now)
        return out if self._inside else [*out, *self._releases()]

    def _releases(self) -> list[Any]:
        out: list[Any] = []
        for node in self._left:
            if node not in self._attached and node in self._claimed:
                self._claimed.discard(node)
                out.append(ReleaseAttached(node))
        self._left.clear()
        return out

    def _on_attach(self, c: Any, frame: dict[str, Any]) -> list[Output]:
        out: list[Any] = super()._on_attach(c, frame)
        if c.node is not None and self._attached.get(c.node) == c.id:
            self._claimed.add(c.node)  # each attach claims again: the newest record wins
            out.insert(0, ClaimAttached(c.node, self.instance))
        return out

    # --- the sending side -----------------------------------------------------------------

    def _elsewhere(self, sender: str, to: str, relayed: dict[str, Any], size: int, wire: str
                   ) -> list[Output] | None:
        if size > self.bus_item_bytes:  # within the node's limits: an honest refusal
            return [ToConn(self._attached[sender], error_frame(
                "too_large", f"cannot queue {relayed['msg_id']}: over {self.bus_item_bytes} "
                "bytes (one message of the bus)"))]
        if to in self._pending:
            return None  # an earlier store for ``to`` still waits: behind it, in order
        inst = self.where(to)
        if inst is None:
            return None
        self.forwarded += 1
        out: list[Output] = []
        if to in self._owed:  # stored while we knew no instance for it: X loads that first
            self._owed.discard(to)
            out.append(ToInstance(inst, {"t": "note", "to": to}))  # type: ignore[arg-type]
        message = {"t": "relay", "to": to, "from": sender, "envelope": relayed}
        encoded = (f'{{"t":"relay","to":{encode_value(to)},"from":{encode_value(sender)},'
                   f'"envelope":{wire}}}')  # the envelope's encoding spliced in, not redone
        out.append(ToInstance(inst, message, wire=encoded))  # type: ignore[arg-type]
        return out

    def stored(self, conn: int, dst: str, msg_id: str, size: int, ok: bool,
               code: str = "unavailable", duplicate: bool = False) -> list[Any]:
        out: list[Any] = super().stored(conn, dst, msg_id, size, ok, code, duplicate)
        if ok and (inst := self.where(dst)) is not None:
            # Before any later live envelope for ``dst``: X loads this one first.
            out.insert(0, ToInstance(inst, {"t": "note", "to": dst}))
        elif ok:
            self._owed.add(dst)  # the note goes ahead of our next live envelope for it
        return out

    def unsent(self, effect: ToInstance, wall: int) -> list[Any]:
        """The shell could not take a live envelope (its outbox is full): store it
        instead, answered to its sender (if still here) like any store."""
        m = effect.message
        if m.get("t") != "relay":
            return []
        self.forwarded -= 1
        return self._store_live(m["to"], m["from"], m["envelope"], wall,
                                self._attached.get(m["from"], 0))

    def _store_live(self, to: str, src: str, env: dict[str, Any], wall: int,
                    conn: int) -> list[Any]:
        msg_id = env.get("msg_id")
        if type(msg_id) is not str:
            self.junk += 1
            return []
        size = queued_size(encode_value(env))
        n, b = self.queued(to)
        self._queued[to] = [n + 1, b + size]
        p = self._pending.setdefault(to, [0, 0])
        p[0], p[1] = p[0] + 1, p[1] + size
        return [StoreQueued(to, src, msg_id, env, size, wall + self.limits.relay_queue_age_ms,
                            conn)]

    # --- the receiving side ---------------------------------------------------------------

    def on_message(self, msg: object, now: int, wall: int) -> list[Any]:
        """One item of a batch from another instance (``ToInstance`` there)."""
        self._now = now
        to = msg.get("to") if isinstance(msg, dict) else None
        if not isinstance(msg, dict) or not isinstance(to, str) or not is_node_id(to):
            self.junk += 1
            return []
        kind = msg.get("t")
        if kind == "note":
            return self.mail_arrived(to)
        src, env = msg.get("from"), msg.get("envelope")
        if kind != "relay" or not _sound(env, src, to):
            self.junk += 1
            return []
        assert isinstance(env, dict) and isinstance(src, str)
        tc = self._local(to)
        if (tc is not None and not tc.congested and not tc.in_flight and not tc.loading
                and not tc.more and to not in self._pending and self.queued(to)[0] == 0):
            self.taken += 1
            return [ToConn(tc.id, encode_frame("relay", {"from": src, "envelope": env}))]
        return self._store_live(to, src, env, wall, 0)  # no sender here to answer

    # --- the map, the heartbeats, the bus ------------------------------------------------

    def instance_alive(self, instance: str, now: int) -> bool:
        """A heartbeat; True when the instance was not known alive (answer it at once)."""
        self._now = now
        if instance == self.instance or not instance:
            return False
        new = not self.is_alive(instance, now)
        self._seen[instance] = now
        return new

    def on_attached(self, changes: Iterable[AttachedChange], now: int) -> list[Any]:
        """Records of the shared map, in the bus's order."""
        self._now = now
        out: list[Any] = []
        for node, inst, rev in changes:
            old = self._where.get(node)
            if old is not None and old[1] >= rev:
                continue
            if inst is None:
                self._where.pop(node, None)
                continue
            if not is_node_id(node) or type(inst) is not str or not inst:
                self.junk += 1  # not a record a relay wrote: skipped
                continue
            self._where[node] = (inst, rev)
            if inst == self.instance:
                if node not in self._attached:  # a record of ours from an earlier life
                    out.append(ReleaseAttached(node, rev))
                continue
            if (old is None or old[0] != inst) and self.where(node) is not None and (
                    self.queued(node)[0] > 0):
                out.append(ToInstance(inst, {"t": "note", "to": node}))  # see the docstring
        return out

    def claimed(self, node: str, revision: int) -> None:
        """The shell wrote our record of ``node`` at ``revision``."""
        old = self._where.get(node)
        if node in self._claimed and (old is None or old[1] < revision):
            self._where[node] = (self.instance, revision)

    def on_timer(self, now: int, wall: int) -> list[Any]:
        del wall
        self._now = now
        out: list[Any] = []
        for inst in [i for i, t in self._seen.items() if now - t >= self.instance_ttl_ms]:
            del self._seen[inst]
            for node, (i, rev) in list(self._where.items()):
                if i == inst:
                    del self._where[node]
                    out.append(ReleaseAttached(node, rev))  # whoever is first clears it
        return out

    def next_deadline(self) -> int | None:
        return min((t + self.instance_ttl_ms for t in self._seen.values()), default=None)

    def bus_lost(self) -> None:
        """Nothing can go live now: every other instance is unknown until heard again."""
        self._seen.clear()

    def resync(self, now: int) -> list[Any]:
        """The bus is back: claim every node attached here again; the map comes again
        with the shell's new watch."""
        self._now = now
        self._where.clear()
        self._claimed = set(self._attached)
        return [ClaimAttached(node, self.instance) for node in self._attached]


def _sound(env: object, src: object, to: str) -> bool:
    """An envelope from another instance in the form a local sender's must have: the bus
    is ours, but an older or broken instance must not hand our nodes what no relay
    would (the sending instance checked it and lowered its ttl already)."""
    try:
        e = envelope_from_obj(env)
    except RemoteProtocolError:
        return False
    return e.src == src and e.dst == to
