"""The tab bus: every browser tab (or script) on ``/ws`` is a subscriber (SPEC 9).

One bus per node; a second tab adds a subscriber, never a second peer connection.
Each tab has its own bounded outbound queue of encoded frames, written by that tab's
own writer task, so one slow tab never holds up the node or the other tabs:

- above ``soft_limit`` queued bytes the tab's *commands* are read more slowly (its
  reader waits for room before it takes the next one): a tab that produces events
  faster than they can be written is slowed down, never dropped;
- a tab whose queue passes ``hard_limit`` (events pushed at it by others while it does
  not read), or whose writes make no progress for ``stall_s``, has stopped reading: it
  is closed (1013) and reconnects when it can.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from hd_protocol.apps.ws import encode_ws_frame

from ..metrics import NodeMetrics

log = logging.getLogger("hd_node.tabs")


@dataclass(frozen=True)
class TabLimits:
    soft_limit: int = 1024 * 1024
    hard_limit: int = 64 * 1024 * 1024
    stall_s: float = 10.0
    concurrent_commands: int = 8  # long commands (dial, pair, bench) in flight per tab


class Tab:
    """One subscriber's outbound queue of encoded /ws frames."""

    def __init__(self, name: str, limits: TabLimits, on_overflow: Callable[[Tab], None]) -> None:
        self.name = name
        self.limits = limits
        self._queue: deque[str] = deque()
        self._bytes = 0
        self._on_overflow = on_overflow
        self.closed = False
        self.close_reason = ""
        self._wake = trio.Event()
        self._room = trio.Event()

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def push(self, channel: str, event: str, data: dict[str, Any]) -> None:
        self.push_text(encode_ws_frame(channel, event, data))

    def push_text(self, text: str) -> None:
        if self.closed:
            return
        self._queue.append(text)
        self._bytes += len(text)
        self._wake.set()
        if self._bytes > self.limits.hard_limit:
            self.close("overflow")
            self._on_overflow(self)

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
        self._queue.clear()
        self._bytes = 0
        self._wake.set()
        self._room.set()

    def take(self) -> list[str]:
        """Every queued frame, oldest first (the writer writes them in one go)."""
        frames = list(self._queue)
        self._queue.clear()
        self._bytes = 0
        self._room.set()
        return frames

    async def wait_frames(self) -> None:
        while not self._queue and not self.closed:
            self._wake = trio.Event()
            await self._wake.wait()

    async def wait_room(self) -> None:
        """Until the queue is below the soft limit: how a busy tab is slowed down."""
        while self._bytes > self.limits.soft_limit and not self.closed:
            self._room = trio.Event()
            await self._room.wait()


class TabBus:
    def __init__(self, metrics: NodeMetrics, limits: TabLimits = TabLimits()) -> None:
        self.metrics = metrics
        self.limits = limits
        self.tabs: set[Tab] = set()
        self._ids = itertools.count(1)
        self._gone: list[Callable[[Tab], None]] = []

    def on_tab_gone(self, fn: Callable[[Tab], None]) -> None:
        self._gone.append(fn)

    def subscribe(self) -> Tab:
        tab = Tab(f"tab-{next(self._ids)}", self.limits, self._overflowed)
        self.tabs.add(tab)
        self.metrics.tabs.set(len(self.tabs))
        return tab

    def unsubscribe(self, tab: Tab) -> None:
        if tab not in self.tabs:
            return
        self.tabs.discard(tab)
        tab.close(tab.close_reason or "gone")
        self.metrics.tabs.set(len(self.tabs))
        for fn in self._gone:
            fn(tab)

    def publish(self, channel: str, event: str, data: dict[str, Any], *,
                only: frozenset[str] | None = None, skip: frozenset[str] = frozenset()
                ) -> None:
        """One frame to every tab (encoded once, whatever the number of tabs); with
        ``only``, to the tabs of those names alone; never to those named in ``skip``."""
        tabs = [t for t in self.tabs if (only is None or t.name in only) and t.name not in skip]
        if not tabs:
            return
        text = encode_ws_frame(channel, event, data)
        for tab in tabs:
            tab.push_text(text)

    def _overflowed(self, tab: Tab) -> None:
        # Cut loose at once: no more events are queued for it, and the gauge shows it
        # gone even while its socket is still being closed.
        log.info("tab dropped: too slow tab=%s queued over %d bytes", tab.name,
                 self.limits.hard_limit)
        self.unsubscribe(tab)
