"""The bus that lets several lobby or relay instances share state: NATS, seen from trio.

nats-py speaks asyncio only; it runs on this process's :class:`~hd_shell.aiothread.
AsyncioThread` (the one trio/asyncio bridge of the code base) and this module is its
trio face. What the servers need of NATS, and nothing else:

- core subjects: ``publish``/``publish_many`` (messages of at most ``max_payload``) and
  ``subscribe`` (at most once; a bounded queue, what overflows is dropped and counted);
- KV buckets (``hd_shell.kv.Bucket``): ``get``, ``create`` (fails if the key exists),
  ``update`` (compare-and-set on the revision), ``put``, ``delete``, ``keys``, ``watch``,
  and many writes or reads in one call (``write_many``, ``get_many``).

Every call has a deadline. A bus that is not connected, or a call that misses it, raises
:class:`ClusterUnavailable` (``code`` ``unavailable``): a server never accepts what it
cannot keep, and never exits because the bus went away (nats-py keeps reconnecting).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from .aiothread import AsyncioThread, LoopGone, trio_caller
from .kv import Bucket, Burst, Entry, KeyExists, Write, WrongRevision
from .logs import logger

T = TypeVar("T")

CALL_TIMEOUT_S = 2.0
LEADER_WAIT_S = 10.0  # for a new replicated bucket to elect its leader
INBOX_LIMIT = 1024  # messages waiting for one subscriber's trio task


class ClusterUnavailable(Exception):
    """The bus cannot do it now (not connected, or no answer in time)."""

    code = "unavailable"


@dataclass(frozen=True, slots=True)
class BusMessage:
    subject: str
    data: bytes


DEFAULT_PAYLOAD = 1 << 20  # nats-server's max_payload unless configured


class Bus:
    """One NATS connection (to any of ``urls``) for one server process."""

    def __init__(self, urls: Sequence[str], *, name: str,
                 call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.urls = list(urls)
        self.name = name
        self.call_timeout_s = call_timeout_s
        self.connected = False
        self.changed = trio.Event()  # set (and replaced) whenever ``connected`` flips
        self.dropped = 0  # subscriber messages that found a full queue (ours or nats-py's)
        self.errors = 0  # calls that raised ClusterUnavailable
        self.lag_s = 0.0  # the last measured round trip (``monitor``)
        self._thread = AsyncioThread(f"hd-nats-{name}")
        self._nc: Any = None
        self._js: Any = None

    # --- life ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Bus]:
        """Connect in the background (it keeps trying) and close on the way out."""
        import nats  # the cluster extra: imported only by a process that has a bus
        import nats.errors

        log = logger("cluster")  # here: callbacks run outside the task, its name is ours
        to_trio = trio_caller()
        self._thread.start()

        def flip(up: bool) -> None:
            if up != self.connected:
                self.connected = up
                log.info("bus %s name=%s", "connected" if up else "lost", self.name)
                self.changed.set()
                self.changed = trio.Event()

        async def up() -> None:
            to_trio(flip, True)

        async def down() -> None:
            to_trio(flip, False)

        def slow() -> None:
            self.dropped += 1

        async def error(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):  # nats-py's queue was full
                return to_trio(slow)
            log.debug("bus error name=%s error=%s", self.name, exc)

        async def connect() -> Any:
            return await nats.connect(
                servers=self.urls, name=self.name, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2,
                ping_interval=5, max_outstanding_pings=2, disconnected_cb=down,
                reconnected_cb=up, error_cb=error, closed_cb=down)

        async def first_connection() -> None:
            """Until the bus is there once (after that, nats-py reconnects by itself)."""
            delay = 0.1
            while True:
                with trio.move_on_after(5):
                    try:
                        nc = await self._thread.run(connect)
                    except Exception as exc:  # noqa: BLE001 - no server yet, or it refused
                        log.info("bus not reachable name=%s error=%s", self.name,
                                 type(exc).__name__)
                    else:
                        self._nc, self._js = nc, nc.jetstream(timeout=self.call_timeout_s)
                        flip(bool(nc.is_connected))
                        return
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)

        try:
            async with trio.open_nursery() as n:
                n.start_soon(first_connection)
                try:
                    yield self
                finally:
                    n.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if self._nc is not None:
                    with trio.move_on_after(2), _quiet():
                        await self._thread.run(self._nc.close)
                await self._thread.stop()

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(*args)`` on the asyncio side, within the deadline, as ClusterUnavailable."""
        import nats.errors

        if self._nc is None or not self.connected:
            self.errors += 1
            raise ClusterUnavailable("the cluster bus is not connected")
        with trio.move_on_after(self.call_timeout_s):
            try:
                return await self._thread.run(fn, *args)
            except (nats.errors.Error, LoopGone, OSError) as exc:  # KV answers pass as they are
                self.errors += 1
                raise ClusterUnavailable(f"the cluster bus failed: {type(exc).__name__}") from None
        self.errors += 1
        raise ClusterUnavailable("the cluster bus did not answer in time")

    async def call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``fn(js)`` on the asyncio side (``js``: nats-py's JetStream context), within the
        deadline; a bus that is gone raises ClusterUnavailable. For a server's own stream
        (the relay's mailbox): ``fn`` is an asyncio coroutine function, and nats-py's own
        answers other than connection trouble pass through as they are."""
        return await self._call(fn, self._js)

    async def monitor(self, every_s: float = 5.0) -> None:
        """Measure the bus round trip (``lag_s``) every ``every_s`` while connected."""
        import time

        while True:
            if self.connected and self._nc is not None:
                t0 = time.perf_counter()
                try:
                    await self._call(self._nc.flush)
                except ClusterUnavailable:
                    pass
                else:
                    self.lag_s = time.perf_counter() - t0
            with trio.move_on_after(every_s):
                await self.changed.wait()

    def register_metrics(self, registry: Any) -> None:
        """``hd_cluster_*`` on a Prometheus registry."""
        from prometheus_client import Gauge

        for name, doc, fn in (
                ("hd_cluster_connected", "1 while the cluster bus is connected",
                 lambda: 1.0 if self.connected else 0.0),
                ("hd_cluster_errors", "Bus calls that failed (not connected, no answer)",
                 lambda: float(self.errors)),
                ("hd_cluster_dropped", "Bus messages dropped at a full subscriber queue",
                 lambda: float(self.dropped)),
                ("hd_cluster_lag_seconds", "Round trip to the bus at the last measure",
                 lambda: self.lag_s)):
            Gauge(name, doc, registry=registry).set_function(fn)

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` says of the bus."""
        return {"connected": self.connected, "instance": self.name, "errors": self.errors,
                "lag_ms": round(self.lag_s * 1000, 1)}

    # --- core subjects ---------------------------------------------------------------------

    async def publish(self, subject: str, data: bytes) -> None:
        await self._call(self._nc.publish, subject, data)

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Each ``(subject, data)`` in order, with one crossing to the asyncio side."""
        async def publish_all(nc: Any) -> None:
            for subject, data in messages:
                await nc.publish(subject, data)

        if messages:
            await self._call(publish_all, self._nc)

    @property
    def max_payload(self) -> int:
        """The largest message the server takes (its INFO; before it, NATS's default)."""
        mp = getattr(self._nc, "max_payload", 0)
        return mp if type(mp) is int and mp > 0 else DEFAULT_PAYLOAD

    @contextlib.asynccontextmanager
    async def subscribe(self, subject: str, limit: int = INBOX_LIMIT
                        ) -> AsyncIterator[trio.MemoryReceiveChannel[BusMessage]]:
        """What arrives on ``subject`` (wildcards allowed) while the block runs."""
        send, recv = trio.open_memory_channel[BusMessage](limit)
        to_trio = trio_caller()

        def put(msg: BusMessage) -> None:
            try:
                send.send_nowait(msg)
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

        async def cb(msg: Any) -> None:
            to_trio(put, BusMessage(msg.subject, bytes(msg.data)))

        async def sub() -> Any:
            return await self._nc.subscribe(subject, cb=cb, pending_msgs_limit=limit)

        subscription = await self._call(sub)
        try:
            async with recv:
                yield recv
        finally:
            send.close()
            with trio.CancelScope(shield=True), trio.move_on_after(2), _quiet():
                await self._thread.run(subscription.unsubscribe)

    # --- KV ------------------------------------------------------------------------------

    async def bucket(self, name: str, *, replicas: int = 1,
                     max_bytes: int | None = None) -> Bucket:
        """The KV bucket ``name``, made if it is not there yet."""
        import nats.js.api

        config = nats.js.api.KeyValueConfig(bucket=name, history=1, replicas=replicas,
                                            max_bytes=max_bytes)
        kv = await self._call(self._js.create_key_value, config)
        if replicas > 1:  # a replicated stream answers once its replicas chose a leader
            with trio.move_on_after(LEADER_WAIT_S):
                while not await self._has_leader(f"KV_{name}"):
                    await trio.sleep(0.1)
        return Bucket(self, name, kv)

    async def _has_leader(self, stream: str) -> bool:
        try:
            info = await self._call(self._js.stream_info, stream)
        except ClusterUnavailable:
            return False
        return info.cluster is not None and bool(info.cluster.leader)


async def sessions(bus: Bus, session: Callable[[], Awaitable[None]], *,
                   on_end: Callable[[ClusterUnavailable], None]) -> None:
    """``session()`` each time the bus is connected, one after another, until cancelled:
    a session ends with ClusterUnavailable, raised by it or by any task in its nurseries
    (``on_end`` hears why), and the next one starts when the bus is back."""
    while True:
        while not bus.connected:
            await bus.changed.wait()
        try:
            await session()
        except* ClusterUnavailable as group:  # from the session, or one of its tasks
            on_end(_first(group))
        await trio.sleep(0.2)


def _first(group: BaseExceptionGroup[ClusterUnavailable]) -> ClusterUnavailable:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def retried(bus: Bus, call: Callable[[], Awaitable[T]], *, tries: int = 3) -> T:
    """``call()``, again after a short pause while the bus stays connected but did not
    answer in time; ClusterUnavailable when it is gone or ``tries`` are spent. For a
    write to shared state: let that end the session (``sessions``), whose successor
    writes all it holds again — a write dropped on a bus that stays connected would
    never be made good."""
    for attempt in range(tries):
        try:
            return await call()
        except ClusterUnavailable:
            if not bus.connected or attempt == tries - 1:
                raise
            await trio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


async def keep_running(bus: Bus) -> None:
    """``bus`` connected (and reconnecting) until cancelled: a server's background task,
    started once it listens, so the bus's lines are the server's own."""
    async with bus.running():
        await trio.sleep_forever()


def _quiet() -> contextlib.suppress:
    return contextlib.suppress(Exception)  # what closing a connection already gone raises


__all__ = ["Bucket", "Burst", "Bus", "BusMessage", "ClusterUnavailable", "Entry", "KeyExists",
           "Write", "WrongRevision", "keep_running", "retried", "sessions"]
