"""The relay broker service: ``RelayServer`` + its SQLite queue + frames over WebSocket.

Used by ``hd-relay`` (the relay is the whole server) and by ``hd-lobby`` (a bundled
relay at ``/relay-ws`` beside ``/lobby-ws``).
"""

from __future__ import annotations

import logging
import os
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
from hd_protocol.limits import Limits
from hd_shell.clock import wall_ms
from hd_shell.server.frames import FrameServer
from hd_shell.ws.link import WsLink

from .queue import QueueStore

LOG = logging.getLogger("hd_relay")

PURGE_EVERY_S = 60.0
PATH = "/relay-ws"


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry, service: RelayService) -> None:
        r = registry
        self.frames_in = Counter("hd_relay_frames_in", "Frames received", registry=r)
        self.stored = Counter("hd_relay_envelopes_queued",
                              "Envelopes stored for a detached destination", registry=r)
        self.delivered = Counter("hd_relay_envelopes_acked",
                                 "Stored envelopes acknowledged by their destination", registry=r)
        g = Gauge("hd_relay_connections", "Open /relay-ws connections", registry=r)
        g.set_function(lambda: service.frames.connections)
        q = Gauge("hd_relay_queued_bytes", "Bytes waiting in the queue", registry=r)
        q.set_function(lambda: service.machine.total_queued_bytes)


class RelayService:
    def __init__(self, identity: Identity, store: QueueStore, limits: Limits,
                 registry: CollectorRegistry, log: logging.Logger = LOG) -> None:
        """``log``: the logger of the binary it runs in (``hd-lobby`` bundles one)."""
        self.store = store
        self.log = log
        self.machine = RelayServer(identity, rng=os.urandom, limits=limits,
                                   queued=store.counts())
        self.frames = FrameServer(_Counted(self), "relay", effect=self._effect,
                                  batch=store.batch, on_congestion=self.machine.congested,
                                  log=log)
        self.metrics = RelayMetrics(registry, self)

    def _effect(self, out: Any) -> Sequence[Any]:
        if isinstance(out, StoreQueued):
            self.store.put(out)  # in the reader's batch: committed before the ack leaves
            self.metrics.stored.inc()
            return []
        if isinstance(out, LoadQueued):
            return self.machine.deliver(out.conn, self.store.load(out.node, out.limit))
        if isinstance(out, DeleteQueued):
            self.store.delete(out.node, out.qids)
            self.metrics.delivered.inc(len(out.qids))
            return []
        return []

    async def serve(self, link: WsLink) -> None:
        await self.frames.serve(link)

    async def run(self) -> None:
        """Background work: expire envelopes older than their 24 h, every minute."""
        while True:
            await trio.sleep(PURGE_EVERY_S)
            for node, (count, size) in self.store.purge_expired(
                    wall_ms(), keep=self.machine.in_flight()).items():
                self.machine.expired(node, count, size)
                self.log.info("expired queued envelopes dst=%s count=%d", node, count)


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


def relay_frame_limit(limits: Limits) -> int:
    return limits.max_envelope_bytes + 4096


__all__ = ["PATH", "RelayService", "ToConn", "relay_frame_limit"]
