"""zeroconf, as ``hd_node.discovery.lan`` uses it: where it listens, what we announce, lookups
(from its cache alone, or asking the network) turned into plain data, and ``Names``:
the names its browser reports, resolved on trio's side.

Every function here blocks or reads what zeroconf's own loop thread writes: call them
from a worker thread, never from trio's (``Names`` does so).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio
from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)

from hd_protocol.reach.lan import MAX_LAN_PEERS, SERVICE_TYPE
from hd_shell.clock import mono_ms, trio_deadline

from ..transports.addresses import interface_addresses

log = logging.getLogger("hd_node.lan")

EVENT_QUEUE = 256  # browser events waiting for trio; more are dropped (and counted)
RESOLVE_TIMEOUT_MS = 3000
RESOLVERS = 4  # lookups asking the network in flight at once (each may wait 3 s)
SLOW_BACKLOG = 16  # names waiting for such a lookup; more wait for the next rescan
CACHE_READERS = 2  # threads reading zeroconf's cache (never waits on the network)
MAX_RESOLVING = 2 * MAX_LAN_PEERS  # names being resolved at once; more: a rescan
CATCH_UP_MS = 2_000  # after dropping names: rescan zeroconf's cache this soon
REFRESH_MS = 45_000  # rescan anyway (re-confirms held names: hd_protocol's live 150 s)


def open_zeroconf(host: str) -> Zeroconf:
    """zeroconf on the peer listener's interface (all of them when it is bound to all).
    ``ValueError`` for a host name: mDNS needs an address to bind to."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - bound to all is a fact here
        return Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
    if host == "::":
        return Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.All)
    ip = ipaddress.ip_address(host)
    return Zeroconf(interfaces=[str(ip)],
                    ip_version=IPVersion.V4Only if ip.version == 4 else IPVersion.V6Only)


def announced_addresses(host: str, include_loopback: bool) -> list[str]:
    """The addresses we announce: the listener's bound address, or, bound to all, the
    machine's interface addresses (loopback only if nothing else is there)."""
    if host not in ("", "0.0.0.0", "::"):  # noqa: S104
        return [host]
    addrs = [a for a in interface_addresses(include_loopback)
             if host == "::" or ":" not in a]
    return addrs or ["127.0.0.1"]


@dataclass(frozen=True)
class Resolved:
    """What one lookup found, as plain data for ``hd_protocol.reach.lan.parse_announcement``."""

    properties: dict[bytes, bytes | None]
    addresses: list[str]
    port: int | None


def _resolved(info: ServiceInfo) -> Resolved:
    return Resolved(dict(info.properties), info.parsed_scoped_addresses(), info.port)


def cached(zc: Zeroconf, name: str) -> Resolved | None:
    """The service ``name`` from zeroconf's cache only (never waits on the network);
    None when the cache does not hold all of it (SRV, TXT and an address)."""
    try:
        info = ServiceInfo(SERVICE_TYPE, name)
        if not info.load_from_cache(zc):
            return None
    except Exception as exc:  # a name zeroconf refuses, zeroconf closing: nothing here
        log.debug("lan cache lookup failed service=%s error=%s", name, type(exc).__name__)
        return None
    return _resolved(info)


def cached_names(zc: Zeroconf) -> list[str]:
    """The instance names of our service type that zeroconf's cache holds (bounded by
    its own cache: zeroconf keeps at most ``_MAX_CACHE_RECORDS`` records)."""
    try:
        records = zc.cache.entries_with_name(SERVICE_TYPE)
    except Exception as exc:  # zeroconf closing under us
        log.debug("lan cache listing failed error=%s", type(exc).__name__)
        return []
    now = current_time_millis()
    # The PTR records (the only ones with an alias: the instance name) still alive.
    return sorted({alias for r in records
                   if isinstance(alias := getattr(r, "alias", None), str)
                   and not r.is_expired(now)})


def lookup(zc: Zeroconf, name: str, timeout_ms: int) -> Resolved | None:
    """The service ``name`` from zeroconf's cache, else asked on the network (at most
    ``timeout_ms``); None when nothing answered or zeroconf is closing under us."""
    try:
        info = zc.get_service_info(SERVICE_TYPE, name, timeout=timeout_ms)
    except Exception as exc:  # zeroconf closed meanwhile, a name it refuses: nothing found
        log.debug("lan lookup failed service=%s error=%s", name, type(exc).__name__)
        return None
    if info is None:
        return None
    return _resolved(info)


class Names:
    """The instance names zeroconf's browser reports, resolved on trio's side.

    zeroconf's browser thread only hands ``(state, name)`` to trio (``on_change``:
    ``run_sync_soon`` into a bounded channel). Anyone on the LAN may announce anything
    as fast as it likes, so every stage is bounded and nothing dropped is lost for good:

    - a full channel, or ``MAX_RESOLVING`` names in resolution, drops the event and
      counts it (``overflow``), and asks for a rescan ``CATCH_UP_MS`` later (one runs
      every ``REFRESH_MS`` anyway): every name zeroconf's cache holds is resolved again,
      the held ones first, and a held name the cache no longer has is ``gone`` (its
      goodbye may have been an event we dropped);
    - a name is resolved from zeroconf's cache first; only one the cache cannot complete
      asks the network, ``RESOLVERS`` at a time with at most ``SLOW_BACKLOG`` in line
      (more are counted ``unresolved`` and left to the next rescan), so announcements
      that never resolve cannot hold up the ones that do.

    ``found(name, resolved)`` and ``gone(name)`` are called on the trio thread;
    ``held()`` lists the names the caller keeps; ``count(reason)`` counts."""

    def __init__(self, *, found: Callable[[str, Resolved], None],
                 gone: Callable[[str], None], held: Callable[[], list[str]],
                 count: Callable[[str], None]) -> None:
        self._found, self._gone, self._held, self._count = found, gone, held, count
        self._zc: Zeroconf | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._send, self._recv = trio.open_memory_channel[tuple[str, str]](EVENT_QUEUE)
        self._nursery: trio.Nursery | None = None
        self._limiter = trio.CapacityLimiter(RESOLVERS)
        self._cache_limiter = trio.CapacityLimiter(CACHE_READERS)
        self._slots = trio.Semaphore(MAX_RESOLVING)  # one per name in _resolving
        self._resolving: set[str] = set()
        self._again: set[str] = set()  # changed while being resolved: resolve once more
        # Bumped when a name being resolved is removed: its late lookup is stale.
        self._generation: dict[str, int] = {}
        self._touched: set[str] | None = None  # names found while a rescan lists
        self._slow = 0  # names waiting for (or in) a network lookup
        self._next_rescan = 0
        self._catch_up: int | None = None  # when to rescan for names we dropped
        self._wake = trio.Event()

    def listen(self) -> None:
        """Take events from now on (trio thread; before the browser starts)."""
        self._token = trio.lowlevel.current_trio_token()

    def close(self) -> None:
        self._token = None
        self._send.close()

    def on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        """The browser's handler, on its thread: hand over, never block."""
        token = self._token
        if token is None:
            return
        try:
            token.run_sync_soon(self._enqueue, state_change.name, name)
        except trio.RunFinishedError:
            pass

    def _enqueue(self, state: str, name: str) -> None:  # trio thread
        try:
            self._send.send_nowait((state, name))
        except trio.WouldBlock:
            self._dropped(name)
        except trio.ClosedResourceError:
            pass

    def _dropped(self, name: str) -> None:
        self._count("overflow")
        log.debug("lan event dropped service=%s", name)
        if self._catch_up is None:
            self._catch_up = mono_ms() + CATCH_UP_MS
            self._wake.set()

    async def run(self, zc: Zeroconf) -> None:
        """Resolve what the browser reports on ``zc``, and rescan, until cancelled."""
        self._zc = zc
        try:
            async with trio.open_nursery() as n:
                self._nursery = n
                n.start_soon(self._rescans)
                async for state, name in self._recv:
                    if state == ServiceStateChange.Removed.name:
                        if name in self._resolving:
                            self._generation[name] = self._generation.get(name, 0) + 1
                        self._again.discard(name)
                        self._gone(name)
                    else:
                        self._resolve_soon(name)
                n.cancel_scope.cancel()  # closed: we are done
        finally:
            self._nursery = self._zc = None

    def _resolve_soon(self, name: str) -> None:
        if name in self._resolving:
            self._again.add(name)
        elif self._nursery is not None:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                self._dropped(name)
                return
            self._start(name)

    def _start(self, name: str) -> None:  # holds a slot
        assert self._nursery is not None
        self._resolving.add(name)
        self._nursery.start_soon(self._resolve, name)

    async def _resolve(self, name: str) -> None:
        try:
            while True:
                self._again.discard(name)
                generation = self._generation.get(name, 0)
                got = await trio.to_thread.run_sync(self._cached, name,
                                                    limiter=self._cache_limiter,
                                                    abandon_on_cancel=True)
                if got is None:
                    got = await self._ask(name)
                if got is not None and self._generation.get(name, 0) == generation:
                    if self._touched is not None:
                        self._touched.add(name)
                    self._found(name, got)
                if name not in self._again:
                    return
        finally:
            self._resolving.discard(name)
            self._again.discard(name)
            self._generation.pop(name, None)
            self._slots.release()

    async def _ask(self, name: str) -> Resolved | None:
        """A lookup that asks the network (what the cache could not complete)."""
        if self._slow >= SLOW_BACKLOG:
            self._count("unresolved")
            log.debug("lan lookup put off to the next rescan service=%s", name)
            return None
        self._slow += 1
        try:
            return await trio.to_thread.run_sync(self._lookup, name, limiter=self._limiter,
                                                 abandon_on_cancel=True)
        finally:
            self._slow -= 1

    def _cached(self, name: str) -> Resolved | None:  # worker thread
        zc = self._zc
        return cached(zc, name) if zc is not None else None

    def _lookup(self, name: str) -> Resolved | None:  # worker thread
        zc = self._zc
        return lookup(zc, name, RESOLVE_TIMEOUT_MS) if zc is not None else None

    def _cached_names(self) -> list[str]:  # worker thread
        zc = self._zc
        return cached_names(zc) if zc is not None else []

    async def _rescans(self) -> None:
        while True:
            now = mono_ms()
            if now >= self._next_rescan or (self._catch_up is not None
                                            and now >= self._catch_up):
                self._next_rescan, self._catch_up = now + REFRESH_MS, None
                await self._rescan()
                continue
            self._wake = trio.Event()
            deadline = min(t for t in (self._next_rescan, self._catch_up) if t is not None)
            with trio.move_on_at(trio_deadline(deadline)):
                await self._wake.wait()

    async def _rescan(self) -> None:
        """Resolve again every held name and every name zeroconf's cache holds, waiting
        for room rather than dropping; a held name the cache no longer has is gone."""
        held = self._held()
        self._touched = set()
        try:
            names = await trio.to_thread.run_sync(self._cached_names,
                                                  limiter=self._cache_limiter,
                                                  abandon_on_cancel=True)
            alive = set(names) | self._touched
        finally:
            self._touched = None
        still = set(self._held())
        for name in held:
            if name in still and name not in alive and name not in self._resolving:
                log.info("lan service gone from the mDNS cache service=%s", name)
                self._gone(name)
        for name in dict.fromkeys(self._held() + names):
            if name in self._resolving:
                self._again.add(name)
                continue
            await self._slots.acquire()
            if name in self._resolving or self._nursery is None:
                self._slots.release()
                continue
            self._start(name)
