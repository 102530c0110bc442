"""The relay's cluster adapter: ``ClusteredRelay``'s live path to NATS and back
(docs/cluster.md, the order argument in ``hd_protocol.brokers.relay_cluster``).

- ``ClaimAttached``: the node's record in KV ``hd_relay_attached`` (node id ->
  ``{instance}``) — create, else a compare-and-set on the revision just read (newest
  wins); the revision written goes back to the machine (``claimed``);
- ``ReleaseAttached``: delete it, only if it is still the revision we wrote (or given);
- ``ToInstance``: one FIFO outbox, batched per instance per pass, one message (a JSON
  list) on ``hd.relay.to.<instance>``; an outbox that is full stores the envelope
  instead (``unsent``);
- the bucket is watched (``on_attached``); ``hd.relay.alive`` every 5 s says this
  instance is alive, and at once to an instance heard for the first time.

The bus can go: the machine forgets every instance at once (``bus_lost``: nothing goes
live into a bus that is not there, so what would have is stored, or refused as
``unavailable``); when the bus is back it claims its nodes again (``resync``) and a new
watch reads the map again.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter

from hd_protocol.brokers.cluster_view import pack
from hd_protocol.brokers.relay_cluster import (
    ALIVE_EVERY_MS,
    ClaimAttached,
    ClusteredRelay,
    ReleaseAttached,
    ToInstance,
)
from hd_shell.clock import mono_ms, wall_ms
from hd_shell.cluster import (
    Bucket,
    Bus,
    ClusterUnavailable,
    Entry,
    KeyExists,
    WrongRevision,
    retried,
    sessions,
)

ATTACHED = "hd_relay_attached"
ALIVE = "hd.relay.alive"
OUTBOX = 8192  # live envelopes and notes waiting for the bus
CLAIMS = 4096  # map writes waiting for the bus
BATCH = 1024  # outbox items per pass
MESSAGE_ITEMS = 128  # outbox items per bus message, at most
CLAIM_TRIES = 8


def inbox_subject(instance: str) -> str:
    return f"hd.relay.to.{instance}"


class RelayCluster:
    def __init__(self, bus: Bus, machine: ClusteredRelay,
                 apply: Callable[[Sequence[Any]], None], registry: CollectorRegistry,
                 log: logging.Logger, *, replicas: int = 1) -> None:
        """``apply``: carry out the machine's outputs (the relay's frame server)."""
        self.bus, self.machine, self._apply, self.log = bus, machine, apply, log
        self.replicas = replicas
        self._out = trio.open_memory_channel[ToInstance](OUTBOX)
        self._claims = trio.open_memory_channel[ClaimAttached | ReleaseAttached](CLAIMS)
        self._own: dict[str, int] = {}  # node -> the revision of the record we wrote
        r = registry
        self.forwarded = Counter("hd_relay_envelopes_forwarded",
                                 "Envelopes sent live to the instance their node is at",
                                 registry=r)
        self.taken = Counter("hd_relay_envelopes_from_instances",
                             "Live envelopes from another instance delivered here", registry=r)
        self.lost = Counter("hd_relay_forward_lost",
                            "Live envelopes the bus did not take (it was away)", registry=r)
        self.junk = Counter("hd_relay_bus_junk", "Messages from the bus that were not ours",
                            registry=r)

    # --- the machine's side -------------------------------------------------------------

    def effect(self, out: Any) -> Sequence[Any]:
        if isinstance(out, ToInstance):
            try:
                self._out[0].send_nowait(out)
            except trio.WouldBlock:
                return self.machine.unsent(out, wall_ms())  # stored instead
            if out.message.get("t") == "relay":
                self.forwarded.inc()
        elif isinstance(out, ClaimAttached | ReleaseAttached):
            try:
                self._claims[0].send_nowait(out)
            except trio.WouldBlock:
                self.log.info("relay map write dropped: queue full node=%s", out.node)
        return []

    # --- life ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Sessions with the bus, one after another, for as long as the relay runs."""
        def ended(exc: ClusterUnavailable) -> None:
            self.log.info("relay cluster session ended instance=%s reason=%s",
                          self.machine.instance, exc)
            self.machine.bus_lost()

        await sessions(self.bus, self._session, on_end=ended)

    async def _session(self) -> None:
        bucket = await self.bus.bucket(ATTACHED, replicas=self.replicas)
        async with self.bus.subscribe(inbox_subject(self.machine.instance)) as inbox, \
                self.bus.subscribe(ALIVE) as alive, trio.open_nursery() as n:
            for _, recv in (self._claims, self._out):  # stale: the resync says it again
                while True:
                    try:
                        recv.receive_nowait()
                    except trio.WouldBlock:
                        break
            self._own.clear()
            if not self.machine.bus_limit(self.bus.max_payload):
                self.log.warning(
                    "relay cluster: the bus carries messages of at most %d bytes, less "
                    "than the largest envelope: bigger ones get too_large (set "
                    "max_payload: 2MB in nats-server, docs/cluster.md)", self.bus.max_payload)
            self._apply(self.machine.resync(mono_ms()))
            n.start_soon(self._writer)
            n.start_soon(self._map_writer, bucket)
            n.start_soon(self._watch, bucket)
            n.start_soon(self._inbox, inbox)
            n.start_soon(self._alive_in, alive)
            n.start_soon(self._alive_out)
            while self.bus.connected:
                await self.bus.changed.wait()
            n.cancel_scope.cancel()
        raise ClusterUnavailable("the bus went away")

    # --- out -------------------------------------------------------------------------------

    async def _writer(self) -> None:
        recv = self._out[1]
        while True:
            batch = [await recv.receive()]
            while len(batch) < BATCH:
                try:
                    batch.append(recv.receive_nowait())
                except trio.WouldBlock:
                    break
            per: dict[str, list[ToInstance]] = defaultdict(list)
            for e in batch:  # in order within each instance: notes before later envelopes
                per[e.instance].append(e)
            # Messages of at most MESSAGE_ITEMS, and of what the bus takes: the other
            # instance delivers the first while this one still reads the next (one message
            # per pass made each hop wait for the whole pass: a window of 900 envelopes
            # crossed as one stop-and-wait), and one big envelope does not sink a batch.
            out: list[tuple[str, bytes]] = []
            live = 0  # envelopes among what goes on the bus
            for instance, items in per.items():
                lists, too_big = pack([(e.wire or json.dumps(e.message, separators=(",", ":"),
                                                             ensure_ascii=False)).encode()
                                       for e in items],
                                      max_bytes=self.bus.max_payload, max_items=MESSAGE_ITEMS)
                out += [(inbox_subject(instance), data) for data in lists]
                for i in too_big:  # the machine keeps them off the bus: not seen so far
                    self._apply(self.machine.unsent(items[i], wall_ms()))
                live += sum(1 for e in items if e.message.get("t") == "relay") - sum(
                    1 for i in too_big if items[i].message.get("t") == "relay")
            try:
                await self.bus.publish_many(out)
            except ClusterUnavailable:
                self.lost.inc(live)
                self.log.info("relay live envelopes lost: bus away count=%d", live)

    async def _map_writer(self, bucket: Bucket) -> None:
        recv = self._claims[1]
        while True:
            e = await recv.receive()
            # One the bus does not take ends the session; the next one claims all again.
            await retried(self.bus, partial(self._claim, bucket, e)
                          if isinstance(e, ClaimAttached) else partial(self._release, bucket, e))

    async def _claim(self, bucket: Bucket, e: ClaimAttached) -> None:
        value = json.dumps({"instance": e.instance}).encode()
        last = self._own.get(e.node)
        for _ in range(CLAIM_TRIES):
            try:
                rev = (await bucket.create(e.node, value) if last is None
                       else await bucket.update(e.node, value, last))
            except (KeyExists, WrongRevision):
                entry = await bucket.get(e.node)
                last = entry.revision if entry is not None else None
                continue
            self._own[e.node] = rev
            self.machine.claimed(e.node, rev)
            return
        self.log.info("relay map claim gave up node=%s", e.node)

    async def _release(self, bucket: Bucket, e: ReleaseAttached) -> None:
        rev = e.revision or self._own.pop(e.node, 0)
        if rev:
            try:
                await bucket.delete(e.node, last=rev)
            except WrongRevision:
                pass  # written since: someone else's now

    # --- in --------------------------------------------------------------------------------

    async def _watch(self, bucket: Bucket) -> None:
        async with bucket.watch() as next_batch:
            while True:
                batch = await next_batch()
                if batch is not None:
                    junk = self.machine.junk
                    self._apply(self.machine.on_attached([_change(e) for e in batch],
                                                         mono_ms()))
                    self._junk(junk)

    async def _inbox(self, inbox: trio.MemoryReceiveChannel[Any]) -> None:
        async for msg in inbox:
            try:
                items = json.loads(msg.data)
            except ValueError:
                items = None
            if not isinstance(items, list):
                self.junk.inc()
                continue
            now, wall = mono_ms(), wall_ms()
            m = self.machine
            taken, junk = m.taken, m.junk
            self._apply([o for it in items for o in m.on_message(it, now, wall)])
            if m.taken > taken:
                self.taken.inc(m.taken - taken)
            self._junk(junk)

    def _junk(self, before: int) -> None:
        if self.machine.junk > before:
            self.junk.inc(self.machine.junk - before)

    async def _alive_in(self, alive: trio.MemoryReceiveChannel[Any]) -> None:
        async for msg in alive:
            name = msg.data.decode("utf-8", "replace")
            if self.machine.instance_alive(name, mono_ms()):
                self.log.info("relay instance heard instance=%s", name)
                self._apply([])  # its deadline is the timer's now
                await self.bus.publish(ALIVE, self.machine.instance.encode())

    async def _alive_out(self) -> None:
        while True:
            await self.bus.publish(ALIVE, self.machine.instance.encode())
            await trio.sleep(ALIVE_EVERY_MS / 1000)


def _change(e: Entry) -> tuple[str, object, int]:
    if e.deleted:
        return (e.key, None, e.revision)
    try:
        rec = json.loads(e.value)
    except ValueError:
        rec = None
    return (e.key, rec.get("instance", 0) if isinstance(rec, dict) else 0, e.revision)
