"""The node's two clocks (SPEC 5): a monotonic one for every timer, the wall clock
only for what goes on the wire (envelope ``ts``) or is compared with wire times
(invite and attestation expiry).

The monotonic clock is trio's own (``trio.current_time()``), so a deadline in ms maps
exactly onto a trio deadline and a test may drive the whole shell with trio's
``MockClock``.
"""

from __future__ import annotations

import time

import trio


def mono_ms() -> int:
    """Monotonic milliseconds (trio's clock). Only inside ``trio.run``."""
    return int(trio.current_time() * 1000)


def wall_ms() -> int:
    """Unix time in milliseconds."""
    return int(time.time() * 1000)


def trio_deadline(deadline_ms: int | None) -> float:
    """A monotonic ms deadline as a trio deadline (``inf`` for none)."""
    return float("inf") if deadline_ms is None else deadline_ms / 1000
