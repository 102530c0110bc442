"""The relay broker service: ``RelayServer`` + its mailbox + frames over WebSocket.

Used by ``hd-relay`` (the relay is the whole server) and by ``hd-lobby`` (a bundled
relay at ``/relay-ws`` beside ``/lobby-ws``). The mailbox is one of two:

- ``QueueStore`` (SQLite in the data directory, one instance): every write commits
  inside the reader's batch, before the ack leaves; loads and deletes are immediate.
- ``ClusterMailbox`` (JetStream, shared by every instance on one NATS): the machine runs
  with deferred acks and a shared store. Stores go into a bounded channel (full, or the
  bus away: ``unavailable`` at once, never accepted) and one worker publishes them in
  batches, in order, and hands each answer back (``stored``); loads and deletes go to a
  few lanes by node (each lane in order, so a node's delete comes before its next load);
  every instance listens for the notes of new mail and tells its machine. When the bus
  goes away, what is live between nodes attached here keeps flowing; when it is back
  the stream is checked, counts are read again and every attached node gets a load.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from collections.abc import Sequence
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge

from hd_protocol import Identity
from hd_protocol.brokers.relay import (
    DeleteQueued,
    LoadQueued,
    RelayServer,
    StoreQueued,
    ToConn,
)
from hd_protocol.brokers.relay_cluster import ClusteredRelay
from hd_protocol.limits import Limits
from hd_shell.clock import wall_ms
from hd_shell.cluster import ClusterUnavailable
from hd_shell.server.frames import FrameServer
from hd_shell.ws.link import WsLink

from .cluster import RelayCluster
from .mailbox import NOTE, ClusterMailbox
from .queue import QueueStore

LOG = logging.getLogger("hd_relay")

PURGE_EVERY_S = 60.0
RECOUNT_EVERY_S = 30.0  # a cluster instance reads the stream's counts again
PATH = "/relay-ws"
STORE_QUEUE = 4096  # stores waiting for the bus, at most
STORE_BATCH = 512  # stores per publish round
LANES = 4  # load/delete workers (a node always on the same one)
LANE_QUEUE = 1024
RETRY_S = 1.0
DELETE_TRY_S = 30.0  # a delete the stream cannot do yet (a leader election) is tried again
DELETE_AGAIN_S = 0.25


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry, service: RelayService) -> None:
        r = registry
        self.frames_in = Counter("hd_relay_frames_in", "Frames received", registry=r)
        self.stored = Counter("hd_relay_envelopes_queued",
                              "Envelopes stored for a detached destination", registry=r)
        self.delivered = Counter("hd_relay_envelopes_acked",
                                 "Stored envelopes acknowledged by their destination", registry=r)
        self.refused = Counter("hd_relay_queue_refused",
                               "Envelopes the mailbox could not take (unavailable, full)",
                               registry=r)
        self.unkept = Counter("hd_relay_forwarded_unkept",
                              "Live envelopes from another instance this one could not store",
                              registry=r)
        g = Gauge("hd_relay_connections", "Open /relay-ws connections", registry=r)
        g.set_function(lambda: service.frames.connections)
        q = Gauge("hd_relay_queued_bytes", "Bytes waiting in the queue", registry=r)
        q.set_function(lambda: service.machine.total_queued_bytes)


class RelayService:
    def __init__(self, identity: Identity, store: QueueStore | ClusterMailbox, limits: Limits,
                 registry: CollectorRegistry, log: logging.Logger = LOG) -> None:
        """``log``: the logger of the binary it runs in (``hd-lobby`` bundles one)."""
        self.store = store
        self.log = log
        # A cluster's counts come from the stream once the bus is there (``_upkeep``);
        # its instances send each other live what needs no mailbox (``cluster``).
        self.cluster: RelayCluster | None = None
        self.machine: RelayServer
        if isinstance(store, ClusterMailbox):
            self.machine = clustered = ClusteredRelay(identity, rng=os.urandom, limits=limits,
                                                      instance=store.bus.name)
            self.cluster = RelayCluster(store.bus, clustered, lambda outs: self.frames.apply(
                outs), registry, log, replicas=store.replicas)
        else:
            self.machine = RelayServer(identity, rng=os.urandom, limits=limits,
                                       queued=store.counts())
        timer = self.machine if isinstance(self.machine, ClusteredRelay) else None
        self.frames = FrameServer(_Counted(self), "relay", effect=self._effect,
                                  batch=store.batch if isinstance(store, QueueStore)
                                  else contextlib.nullcontext,
                                  on_congestion=self.machine.congested, log=log,
                                  timer=timer.on_timer if timer else None,
                                  next_deadline=timer.next_deadline if timer else None)
        self.metrics = RelayMetrics(registry, self)
        self._stores = trio.open_memory_channel[StoreQueued](STORE_QUEUE)
        self._lanes = [trio.open_memory_channel[LoadQueued | DeleteQueued](LANE_QUEUE)
                       for _ in range(LANES)]

    # --- the machine's effects --------------------------------------------------------

    def _effect(self, out: Any) -> Sequence[Any]:
        store = self.store
        if isinstance(store, ClusterMailbox):
            return self._cluster_effect(store, out)
        if isinstance(out, StoreQueued):
            store.put(out)  # in the reader's batch: committed before the ack leaves
            self.metrics.stored.inc()
            return []
        if isinstance(out, LoadQueued):
            return self.machine.deliver(out.conn, store.load(out.node, out.limit))
        if isinstance(out, DeleteQueued):
            store.delete(out.node, out.qids)
            self.metrics.delivered.inc(len(out.qids))
            return []
        return []

    def _cluster_effect(self, mailbox: ClusterMailbox, out: Any) -> Sequence[Any]:
        if self.cluster is not None and not isinstance(out, StoreQueued | LoadQueued
                                                       | DeleteQueued):
            return self.cluster.effect(out)
        if isinstance(out, StoreQueued):
            if mailbox.bus.connected and mailbox.ready:
                try:
                    self._stores[0].send_nowait(out)
                    return []
                except trio.WouldBlock:
                    pass
            self._refused(out)  # never accept what it cannot keep
            return self.machine.stored(out.conn, out.dst, out.msg_id, out.size, False,
                                       "unavailable")
        if isinstance(out, LoadQueued | DeleteQueued):
            try:
                self._lanes[_lane(out.node)][0].send_nowait(out)
            except trio.WouldBlock:
                if isinstance(out, LoadQueued):
                    return self.machine.load_failed(out.conn)
                # It stays in the mailbox and comes again: at least once (SPEC 7.7).
                self.log.info("relay delete dropped: lane full dst=%s count=%d", out.node,
                              len(out.qids))
        return []

    async def serve(self, link: WsLink) -> None:
        await self.frames.serve(link)

    # --- background work --------------------------------------------------------------

    async def run(self) -> None:
        """SQLite: expire envelopes older than their 24 h, every minute. Cluster: the
        store worker, the load/delete lanes, the new-mail notes and the stream's upkeep."""
        store = self.store
        if isinstance(store, ClusterMailbox):
            async with trio.open_nursery() as n:
                n.start_soon(self._store_worker, store)
                for _, recv in self._lanes:
                    n.start_soon(self._lane_worker, store, recv)
                n.start_soon(self._notes, store)
                n.start_soon(self._upkeep, store)
                if self.cluster is not None:
                    n.start_soon(self.cluster.run)
                    n.start_soon(self.frames.run_timer)
            return
        while True:
            await trio.sleep(PURGE_EVERY_S)
            for node, (count, size) in store.purge_expired(
                    wall_ms(), keep=self.machine.in_flight()).items():
                self.machine.expired(node, count, size)
                self.log.info("expired queued envelopes dst=%s count=%d", node, count)

    async def _store_worker(self, mailbox: ClusterMailbox) -> None:
        recv = self._stores[1]
        while True:
            batch = [await recv.receive()]
            while len(batch) < STORE_BATCH:
                try:
                    batch.append(recv.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                results = await mailbox.put_many(batch)
            except ClusterUnavailable as exc:
                self.log.info("relay mailbox unavailable: %d refused error=%s", len(batch), exc)
                results = None
            m = self.machine
            outs: list[Any] = []
            for i, it in enumerate(batch):
                r = results[i] if results is not None else None
                ok = r is not None and r.ok
                if ok:
                    self.metrics.stored.inc()
                else:
                    self._refused(it)
                outs += m.stored(it.conn, it.dst, it.msg_id, it.size, ok,
                                 r.code if r is not None and r.code else "unavailable",
                                 duplicate=r is not None and r.duplicate)
            self.frames.apply(outs)

    def _refused(self, it: StoreQueued) -> None:
        self.metrics.refused.inc()
        if it.conn == 0:  # a live envelope from another instance: no one to answer
            self.metrics.unkept.inc()
            self.log.info("relay live envelope from another instance not kept dst=%s", it.dst)

    async def _lane_worker(self, mailbox: ClusterMailbox,
                           recv: trio.MemoryReceiveChannel[LoadQueued | DeleteQueued]) -> None:
        while True:
            op = await recv.receive()
            if isinstance(op, DeleteQueued):
                await self._delete(mailbox, op)
                continue
            try:
                items = await mailbox.load(op.node, op.limit)
            except ClusterUnavailable as exc:
                self.log.info("relay load failed dst=%s error=%s", op.node, exc)
                self.frames.apply(self.machine.load_failed(op.conn))
                if mailbox.bus.connected:  # slow, or a stream electing its leader: again
                    await trio.sleep(RETRY_S)  # (a bus that is back loads all: _upkeep)
                    self._poke(op.node)
                continue
            self.frames.apply(self.machine.deliver(op.conn, items))

    async def _delete(self, mailbox: ClusterMailbox, op: DeleteQueued) -> None:
        """Until the stream says they are gone (the node's next load, behind this on
        the lane, must not see them again), while the bus is there, for a while."""
        left, below = list(op.qids), op.below
        deadline = trio.current_time() + DELETE_TRY_S
        while True:
            with contextlib.suppress(ClusterUnavailable):
                left = await mailbox.delete(op.node, left, below)
                below = 0 if not left or min(left) >= below else below
            if not left:
                break
            if not mailbox.bus.connected or trio.current_time() > deadline:
                # They stay in the mailbox and come again: at least once (SPEC 7.7).
                self.log.info("relay delete failed dst=%s count=%d", op.node, len(left))
                break
            await trio.sleep(DELETE_AGAIN_S)
        self.metrics.delivered.inc(len(op.qids) - len(left))

    async def _notes(self, mailbox: ClusterMailbox) -> None:
        """New mail stored by any instance: the machine loads it for nodes attached here.
        The subscription outlives a lost bus (nats-py subscribes again on reconnect)."""
        bus = mailbox.bus
        while True:
            try:
                async with bus.subscribe(f"{NOTE}*") as inbox:
                    self._poke_all()  # what came before the subscription
                    async for msg in inbox:
                        self._poke(msg.subject[len(NOTE):])
                        while True:  # a burst: each node once
                            try:
                                more = inbox.receive_nowait()
                            except trio.WouldBlock:
                                break
                            self._poke(more.subject[len(NOTE):])
            except ClusterUnavailable:
                with trio.move_on_after(RETRY_S):
                    await bus.changed.wait()

    async def _upkeep(self, mailbox: ClusterMailbox) -> None:
        """The stream exists (made once the bus is there), counts are the stream's; on
        every return of the bus, again, and every attached node is loaded."""
        bus = mailbox.bus
        while True:
            while not bus.connected:
                await bus.changed.wait()
            try:
                await mailbox.ensure()
                self.machine.recount(await mailbox.counts())
            except ClusterUnavailable as exc:
                self.log.info("relay mailbox not ready error=%s", exc)
                await trio.sleep(RETRY_S)
                continue
            self._poke_all()
            while bus.connected:  # recount now and then (what others delivered)
                with trio.move_on_after(RECOUNT_EVERY_S):
                    await bus.changed.wait()
                if bus.connected:
                    try:
                        self.machine.recount(await mailbox.counts())
                    except ClusterUnavailable:
                        pass

    def _poke(self, node: str) -> None:
        self.frames.apply(self.machine.mail_arrived(node))

    def _poke_all(self) -> None:
        for node in self.machine.nodes():
            self._poke(node)


class _Counted:
    """The relay machine as the frame server sees it, counting every frame it is fed
    (``hd_relay_frames_in``: what a test reads to know a path carried nothing)."""

    def __init__(self, service: RelayService) -> None:
        self.service = service
        self.machine = service.machine

    def connect(self, conn: int, now: int) -> list[Any]:
        return self.machine.connect(conn, now)

    def receive(self, conn: int, raw: str | bytes, now: int, wall: int) -> list[Any]:
        self.service.metrics.frames_in.inc()
        return self.machine.receive(conn, raw, now, wall)

    def disconnect(self, conn: int, now: int) -> list[Any]:
        return self.machine.disconnect(conn, now)


def _lane(node: str) -> int:
    return zlib.crc32(node.encode()) % LANES


def relay_frame_limit(limits: Limits) -> int:
    return limits.max_envelope_bytes + 4096


__all__ = ["PATH", "RelayService", "ToConn", "relay_frame_limit"]
