"""On-demand link benchmark (SPEC 6.4, SPEC 9 ``network bench``): ``bench_echo``.

The asking node sends ``bench_echo {pad}`` requests carrying ``size`` bytes of payload;
the peer answers each with an empty ``bench_echo`` whose ``re`` is the request's
msg_id. Both directions are ordinary sealed, signed session envelopes, so the figures
measure the whole pipeline (seal + sign, verify + open, WebSocket, both event loops).

Two phases: a short sequential one (one request in flight: the unloaded RTT, what a
ping sees) and then ``count`` requests with a window in flight (throughput, and the
RTT under that load).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import trio

from hd_protocol.peer.connection import Message, Reply, Timeout

from ..hub.linkdriver import LinkDriver

DEFAULT_COUNT = 1000
DEFAULT_SIZE = 64
MAX_COUNT = 100_000
MAX_SIZE = 256 * 1024  # well inside the 1 MiB envelope once sealed and base64-encoded
WINDOW = 64
SEQUENTIAL = 200
TIMEOUT_MS = 30_000


class BenchError(ValueError):
    pass


def check_args(count: int | None, size: int | None) -> tuple[int, int]:
    count = DEFAULT_COUNT if count is None else count
    size = DEFAULT_SIZE if size is None else size
    if not 1 <= count <= MAX_COUNT:
        raise BenchError(f"count must be 1..{MAX_COUNT}")
    if not 0 <= size <= MAX_SIZE:
        raise BenchError(f"size must be 0..{MAX_SIZE}")
    return count, size


def answer(driver: LinkDriver, msg: Message) -> None:
    """The peer's side: echo every request; a reply we no longer wait for is dropped."""
    if msg.re is None:
        driver.send("bench_echo", {}, re=msg.msg_id)


def percentiles(samples: list[float]) -> dict[str, float | int | None]:
    """Nearest-rank p50/p90/p95/p99 (ms, 3 decimals) of ``samples`` (ms)."""
    if not samples:
        return {"samples": 0, "min": None, "p50": None, "p90": None, "p95": None,
                "p99": None, "max": None}
    s = sorted(samples)

    def rank(p: float) -> float:
        return round(s[max(0, math.ceil(p / 100 * len(s)) - 1)], 3)

    return {"samples": len(s), "min": round(s[0], 3), "p50": rank(50), "p90": rank(90),
            "p95": rank(95), "p99": rank(99), "max": round(s[-1], 3)}


class _Window:
    """Keeps up to ``window`` requests in flight with callbacks (no task per request):
    each reply records its RTT and queues the next request at once."""

    def __init__(self, driver: LinkDriver, pad: dict[str, Any], count: int,
                 window: int) -> None:
        self.driver = driver
        self.pad = pad
        self.left = count
        self.in_flight = 0
        self.window = window
        self.rtts: list[float] = []
        self.timeouts = 0
        self.errors = 0
        self.done = trio.Event()
        if count == 0:
            self.done.set()

    def fill(self) -> None:
        while self.left > 0 and self.in_flight < self.window:
            if not self.driver.is_open:
                self.left = 0
                break
            self.left -= 1
            self.in_flight += 1
            self.driver.request("bench_echo", self.pad, self._callback(trio.current_time()),
                                timeout_ms=TIMEOUT_MS)
        if self.left == 0 and self.in_flight == 0:
            self.done.set()

    def _callback(self, t0: float) -> Callable[[Reply | Timeout | None], None]:
        return lambda r: self._result(r, t0)

    def _result(self, r: Reply | Timeout | None, t0: float) -> None:
        self.in_flight -= 1
        if r is None or isinstance(r, Timeout):
            self.timeouts += 1
        elif r.message.type != "bench_echo":  # e.g. error forbidden from a guest link
            self.errors += 1
        else:
            self.rtts.append((trio.current_time() - t0) * 1000)
        self.fill()


async def run(driver: LinkDriver, count: int, size: int) -> dict[str, Any]:
    pad = {"pad": "x" * size}
    idle = _Window(driver, pad, min(count, SEQUENTIAL), 1)
    idle.fill()
    await idle.done.wait()
    loaded = _Window(driver, pad, count, WINDOW)
    t0 = trio.current_time()
    loaded.fill()
    await loaded.done.wait()
    elapsed = trio.current_time() - t0
    done = len(loaded.rtts)
    return {
        "node_id": driver.peer_id, "count": count, "size": size, "window": WINDOW,
        "elapsed_ms": round(elapsed * 1000, 3),
        "round_trips_per_s": round(done / elapsed, 1) if elapsed > 0 else None,
        # Every round trip is two sealed, signed envelopes (request and echo).
        "envelopes_per_s": round(2 * done / elapsed, 1) if elapsed > 0 else None,
        "payload_bytes_per_s": round(done * size / elapsed, 1) if elapsed > 0 else None,
        "rtt_ms": percentiles(idle.rtts),
        "loaded_rtt_ms": percentiles(loaded.rtts),
        "timeouts": idle.timeouts + loaded.timeouts, "errors": idle.errors + loaded.errors,
    }
