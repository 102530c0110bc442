"""The peer monitor's figures for one session (SPEC 6.4), sans-IO.

A ``LinkMonitor`` rides on each ``Connection``: the RFC 6298 RTT estimator that every
pong feeds, the number of pings that timed out, and the traffic counted over a sliding
window (10 s) so that rates come out as "bytes (messages) in the window / 10 s".

Time only comes in as ``now`` (monotonic ms, SPEC 5); nothing here reads a clock, so a
test moves ``now`` and gets exact figures.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..errors import LocalProtocolError
from .session import Stats

RATE_WINDOW_MS = 10_000  # SPEC 6.4: rates over the last 10 s
RATE_RESOLUTION_MS = 100  # memory per counter: at most window / resolution entries


@dataclass(slots=True)
class RttEstimator:
    """Round-trip time per RFC 6298 §2 (SPEC 6.4: gains 1/8 and 1/4), in ms."""

    last_ms: int | None = None
    srtt_ms: float | None = None
    rttvar_ms: float | None = None
    samples: int = 0

    def observe(self, rtt_ms: int) -> None:
        r = max(0, rtt_ms)
        self.last_ms = r
        self.samples += 1
        if self.srtt_ms is None or self.rttvar_ms is None:
            self.srtt_ms = float(r)  # RFC 6298 2.2: first measurement
            self.rttvar_ms = r / 2
        else:
            # RFC 6298 2.3: RTTVAR first, with the SRTT from before this sample.
            self.rttvar_ms = 0.75 * self.rttvar_ms + 0.25 * abs(self.srtt_ms - r)
            self.srtt_ms = 0.875 * self.srtt_ms + 0.125 * r


class SlidingCounter:
    """An amount counted over the last ``window_ms`` of a monotonic ms clock.

    Arrivals are kept per slot of ``resolution_ms`` (``slot = t // resolution_ms``);
    the window at ``now`` is the ``window_ms // resolution_ms`` slots ending with the
    slot of ``now``. With a resolution of 1 ms that is exactly the arrivals with
    ``now - window_ms < t <= now``; with a coarser one the window's start moves in
    steps of ``resolution_ms``, which bounds the memory to one entry per slot whatever
    the traffic. ``rate(now)`` is always ``total(now) / window_s``: a session younger
    than the window shows the average over the whole window, not over its age.

    An arrival at a ``now`` older than one already seen (the shell's clock is
    monotonic, so only a caller's bug) counts in the newest slot: nothing is lost.
    """

    __slots__ = ("_entries", "_last_slot", "_slots", "_total", "resolution_ms", "window_ms")

    def __init__(self, window_ms: int = RATE_WINDOW_MS,
                 resolution_ms: int = RATE_RESOLUTION_MS) -> None:
        if resolution_ms <= 0 or window_ms <= 0 or window_ms % resolution_ms:
            raise LocalProtocolError(
                "bad_window", "window_ms must be a positive multiple of resolution_ms")
        self.window_ms = window_ms
        self.resolution_ms = resolution_ms
        self._slots = window_ms // resolution_ms
        self._entries: deque[list[int]] = deque()  # [slot, amount], oldest first
        self._total = 0
        self._last_slot: int | None = None

    def add(self, now: int, amount: int) -> None:
        slot = self._slot(now)
        entries = self._entries
        if entries and entries[-1][0] == slot:
            # Fast path (one envelope after another): this slot's add already evicted.
            entries[-1][1] += amount
        else:
            self._evict(slot)
            if amount == 0:
                return
            entries.append([slot, amount])
        self._total += amount

    def total(self, now: int) -> int:
        """What arrived in the window ending at ``now``."""
        self._evict(self._slot(now))
        return self._total

    def rate(self, now: int) -> float:
        """Per second over the window: ``total(now) / (window_ms / 1000)``."""
        return self.total(now) / (self.window_ms / 1000)

    def _slot(self, now: int) -> int:
        slot = now // self.resolution_ms
        if self._last_slot is not None and slot < self._last_slot:
            return self._last_slot
        self._last_slot = slot
        return slot

    def _evict(self, slot: int) -> None:
        first = slot - self._slots + 1
        while self._entries and self._entries[0][0] < first:
            self._total -= self._entries.popleft()[1]


@dataclass(frozen=True, slots=True)
class LinkFigures:
    """One session's monitor figures at one ``now`` (what a ``peer_metrics`` row and
    the per-peer Prometheus series show). Rates are per second over ``window_s``."""

    rtt_ms: int | None
    srtt_ms: float | None
    rttvar_ms: float | None
    rtt_samples: int
    timeouts: int  # pings that got no pong within the ping timeout
    bytes_in: int
    bytes_out: int
    msgs_in: int
    msgs_out: int
    rate_in_bps: float
    rate_out_bps: float
    rate_msgs_in: float
    rate_msgs_out: float
    window_s: float


class LinkMonitor:
    """RTT, ping timeouts and sliding-window traffic of one session (SPEC 6.4).

    The byte and message totals are the session's own ``Stats`` (accepted inbound
    envelopes, sealed outbound ones); ``sync(now, stats)`` hands their growth since the
    last call to the windows, stamped ``now``. The connection calls it after every
    entry point that carries a ``now``, so every envelope is counted once, at the
    ``now`` it was received or sealed.
    """

    def __init__(self, window_ms: int = RATE_WINDOW_MS,
                 resolution_ms: int = RATE_RESOLUTION_MS) -> None:
        self.rtt = RttEstimator()
        self.ping_timeouts = 0
        self.bytes_in = SlidingCounter(window_ms, resolution_ms)
        self.bytes_out = SlidingCounter(window_ms, resolution_ms)
        self.msgs_in = SlidingCounter(window_ms, resolution_ms)
        self.msgs_out = SlidingCounter(window_ms, resolution_ms)
        self._seen = (0, 0, 0, 0)  # bytes_in, bytes_out, msgs_in, msgs_out so far

    def sync(self, now: int, stats: Stats) -> None:
        totals = (stats.bytes_in, stats.bytes_out, stats.msgs_in, stats.msgs_out)
        if totals == self._seen:
            return
        counters = (self.bytes_in, self.bytes_out, self.msgs_in, self.msgs_out)
        for counter, new, old in zip(counters, totals, self._seen, strict=True):
            counter.add(now, new - old)
        self._seen = totals

    def pong(self, rtt_ms: int) -> None:
        self.rtt.observe(rtt_ms)

    def ping_timed_out(self) -> None:
        self.ping_timeouts += 1

    def figures(self, now: int, stats: Stats) -> LinkFigures:
        """Everything at ``now`` (totals from ``stats``, rates from the windows)."""
        self.sync(now, stats)
        r = self.rtt
        return LinkFigures(
            rtt_ms=r.last_ms, srtt_ms=r.srtt_ms, rttvar_ms=r.rttvar_ms,
            rtt_samples=r.samples, timeouts=self.ping_timeouts,
            bytes_in=stats.bytes_in, bytes_out=stats.bytes_out,
            msgs_in=stats.msgs_in, msgs_out=stats.msgs_out,
            rate_in_bps=self.bytes_in.rate(now), rate_out_bps=self.bytes_out.rate(now),
            rate_msgs_in=self.msgs_in.rate(now), rate_msgs_out=self.msgs_out.rate(now),
            window_s=self.bytes_in.window_ms / 1000,
        )


__all__ = ["RATE_WINDOW_MS", "LinkFigures", "LinkMonitor", "RttEstimator", "SlidingCounter"]
