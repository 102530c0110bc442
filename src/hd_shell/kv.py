"""A KV bucket of the cluster bus (``Bus.bucket``): NATS JetStream key-value, seen from
trio, every call with the bus's deadline (``ClusterUnavailable`` past it).

Values carry revisions: ``create`` fails if the key has a value (KeyExists), ``update``
and a conditional ``delete`` only against the key's last revision (WrongRevision) — the
compare-and-set that makes "newest wins" hold across instances. ``write_many`` and
``get_many`` do many at once in one crossing to the asyncio thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import trio

from .aiothread import AsyncioThread

T = TypeVar("T")


class _Bus(Protocol):
    """What a bucket needs of ``hd_shell.cluster.Bus`` (which makes the buckets)."""

    _thread: AsyncioThread

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T: ...

WATCH_BATCH = 512  # entries handed to trio per hop
# In a burst (``Burst``) a change waits WATCH_LINGER_S for more: each hop to trio is a
# wakeup of the other thread, and in a registration storm one per change was a tenth of
# a lobby's time. Changes now and then go at once.
WATCH_LINGER_S = 0.01


class Burst:
    """Whether batches come in a burst: ``busy(now)`` notes a batch at ``now`` and says
    whether the last ``BURST_BATCHES`` all came within ``BURST_S``."""

    BURST_BATCHES = 4
    BURST_S = 0.1

    def __init__(self) -> None:
        self._at: collections.deque[float] = collections.deque(maxlen=self.BURST_BATCHES)

    def busy(self, now: float) -> bool:
        self._at.append(now)
        return len(self._at) == self.BURST_BATCHES and now - self._at[0] < self.BURST_S


class KeyExists(Exception):
    """``create`` of a key that has a value."""


class WrongRevision(Exception):
    """``update`` against a revision that is no longer the key's last one."""


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: bytes
    revision: int
    deleted: bool = False  # a delete (or purge, or expiry) of ``key`` at ``revision``


@dataclass(frozen=True, slots=True)
class Write:
    """One write of ``Bucket.write_many``. ``value`` None deletes. ``last``: None writes
    whatever the key holds; 0 creates (the key must have no value); a revision updates
    (or deletes) only if it is still the key's last one."""

    key: str
    value: bytes | None
    last: int | None = None


class Bucket:
    def __init__(self, bus: _Bus, name: str, kv: Any) -> None:
        self.bus, self.name, self._kv = bus, name, kv

    async def get(self, key: str) -> Entry | None:
        import nats.js.errors

        async def get() -> Entry | None:
            try:
                e = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:  # also a deleted or expired key
                return None
            return Entry(key, bytes(e.value or b""), int(e.revision))

        return await self.bus._call(get)

    async def create(self, key: str, value: bytes, *, ttl_s: float | None = None) -> int:
        """Write ``value`` if ``key`` has none (never written, deleted or expired), else
        KeyExists."""
        import nats.js.errors

        async def create() -> int:
            try:  # nats-py's create also takes over a key whose last word is a delete
                return int(await self._kv.create(key, value, msg_ttl=ttl_s))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise KeyExists(key) from None

        return await self.bus._call(create)

    async def update(self, key: str, value: bytes, last: int) -> int:
        """Write ``value`` if ``last`` is still the key's revision (else WrongRevision)."""
        import nats.js.errors

        async def update() -> int:
            try:
                return int(await self._kv.update(key, value, last=last))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise WrongRevision(key) from None

        return await self.bus._call(update)

    async def put(self, key: str, value: bytes) -> int:
        """Write ``value`` whatever the key holds (for a key only one writer owns)."""
        return int(await self.bus._call(self._kv.put, key, value))

    async def delete(self, key: str, last: int = 0) -> None:
        """Delete ``key``; with ``last``, only if that is still its revision (else
        WrongRevision)."""
        import nats.js.errors

        async def delete() -> None:
            try:
                await self._kv.delete(key, last=last or None)
            except nats.js.errors.APIError as exc:
                if exc.err_code in (10071, 10164):
                    raise WrongRevision(key) from None
                raise

        await self.bus._call(delete)

    async def write_many(self, writes: Sequence[Write]) -> list[int | KeyExists | WrongRevision]:
        """All of ``writes`` at once, in one crossing to the asyncio side (one per write
        was most of a busy lobby's bus cost): for each, its revision (0 for a delete) or
        the KeyExists/WrongRevision a single call would raise. Writes to one key in one
        call have no order among them; a bus error in any raises ClusterUnavailable for
        the call, after all of them ended (those that were made stay made: a caller tries
        them again, so each must be one that can be made twice)."""
        import nats.js.errors

        async def one(w: Write) -> int | KeyExists | WrongRevision:
            try:
                if w.value is None:
                    await self._kv.delete(w.key, last=w.last or None)
                    return 0
                if w.last is None:
                    return int(await self._kv.put(w.key, w.value))
                if w.last == 0:
                    return int(await self._kv.create(w.key, w.value))
                return int(await self._kv.update(w.key, w.value, last=w.last))
            except nats.js.errors.KeyWrongLastSequenceError:
                return KeyExists(w.key) if w.last == 0 else WrongRevision(w.key)
            except nats.js.errors.APIError as exc:
                if w.value is None and exc.err_code in (10071, 10164):
                    return WrongRevision(w.key)
                raise

        async def all_of() -> list[int | KeyExists | WrongRevision]:
            got = await asyncio.gather(*(one(w) for w in writes), return_exceptions=True)
            for r in got:  # an answer is returned; a raised one is the bus failing
                if isinstance(r, BaseException) and not isinstance(r, KeyExists | WrongRevision):
                    raise r
            return got  # type: ignore[return-value]  # no exception left in it

        return await self.bus._call(all_of) if writes else []

    async def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """``get`` of each of ``keys``, in one crossing."""
        import nats.js.errors

        async def one(key: str) -> Entry | None:
            try:
                e = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                return None
            return Entry(key, bytes(e.value or b""), int(e.revision))

        async def all_of() -> list[Entry | None]:
            return list(await asyncio.gather(*(one(k) for k in keys)))

        return await self.bus._call(all_of) if keys else []

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[Callable[[], Awaitable[list[Entry] | None]]]:
        """Every key's last value, then every change, in order, as batches: the block
        gets ``next_batch()``; a batch of ``None`` says the first values are all there
        (it comes once). Nothing is dropped: a reader that lags slows the watch down."""
        import nats.js.kv

        watcher = await self.bus._call(self._kv.watchall)
        gone = (nats.js.kv.KV_DEL, nats.js.kv.KV_PURGE)
        # nats-py's own marker (a None in its queue) can come before the first values: it
        # asks the server how many are pending once they may all be in flight to us, and
        # "none pending, none delivered" then reads as an empty bucket. Ours is sent after
        # the value the server says is the last pending (delta 0), or at nats-py's marker
        # only if the bucket was empty once the watch stood (it only grows but by expiry).
        empty = (await self.bus._call(self._kv.status)).values == 0
        marker = {"due": False, "sent": False}

        burst = Burst()

        def initial_marker(item: Any) -> bool:
            return item is None and empty and not marker["sent"]

        async def take() -> list[Entry] | None:
            while True:
                if marker["due"]:
                    marker["due"], marker["sent"] = False, True
                    return None
                first = await watcher._updates.get()
                if initial_marker(first):
                    marker["sent"] = True
                    return None
                items = [first] if first is not None else []
                if watcher._updates.empty() and burst.busy(asyncio.get_running_loop().time()):
                    await asyncio.sleep(WATCH_LINGER_S)  # in a burst: fewer, larger batches
                while len(items) < WATCH_BATCH:
                    try:
                        nxt = watcher._updates.get_nowait()  # the KeyWatcher's bounded queue
                    except asyncio.QueueEmpty:
                        break
                    if initial_marker(nxt):  # it goes out on its own, after this batch
                        marker["due"] = True
                        break
                    if nxt is not None:
                        items.append(nxt)
                entries = [e for e in items if not isinstance(e, nats.js.kv.StopIterSentinel)]
                if not marker["sent"] and any(e.delta == 0 for e in entries):
                    marker["due"] = True
                if entries:
                    return [Entry(e.key, bytes(e.value or b""), int(e.revision),
                                  e.operation in gone) for e in entries]

        async def next_batch() -> list[Entry] | None:
            return await self.bus._thread.run(take)  # waits as long as nothing changes

        try:
            yield next_batch
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2), _quiet():
                await self.bus._thread.run(watcher.stop)

    async def keys(self) -> list[str]:
        import nats.js.errors

        async def keys() -> list[str]:
            try:
                return list(await self._kv.keys())
            except nats.js.errors.NoKeysError:
                return []

        return await self.bus._call(keys)


def _quiet() -> contextlib.suppress:
    return contextlib.suppress(Exception)  # what closing a watcher already gone raises


__all__ = ["Bucket", "Burst", "Entry", "KeyExists", "Write", "WrongRevision"]
