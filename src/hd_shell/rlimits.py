"""Process resource limits: enough descriptors that a flood meets a listener's own caps
first (shared by hd-node, hd-lobby and hd-relay); a collector tuned for a server."""

from __future__ import annotations

import gc
import resource

# Young collections after this many new container objects (CPython: 700), the middle
# one every 20 of them, the full one every 10 of those (and, as always, only once the
# long-lived heap has grown by a quarter since the last).
GC_THRESHOLDS = (20_000, 10, 10)


def tune_collector() -> None:
    """A server holds many long-lived objects (a 10k-node lobby: millions of dicts and
    strings) that CPython's cycle collector walks again and again: on a 10k registration
    storm, 13 full collections, 7.2 s of the lobby's 12.6 s of CPU in the collector,
    pauses up to 861 ms (the presence p99 was 761 ms; with these thresholds 20-40 ms,
    pauses up to 250 ms). What is alive when the server starts is frozen out of it;
    collections run far less often. Cycles are still found, later."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def raise_open_file_limit() -> tuple[int, int, bool]:
    """Raise the soft RLIMIT_NOFILE to the hard limit, so that a flood of connections
    meets the listeners' own caps long before the process runs out of descriptors
    (which would also break opening the database or a log file). Returns (soft, hard,
    whether the soft limit is now the highest allowed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, hard, True
    # An unlimited hard limit is capped anyway: by fs.nr_open on Linux, OPEN_MAX on macOS.
    targets = [hard] if hard != resource.RLIM_INFINITY else [1 << 20, 65536, 10240]
    for target in targets:
        if soft != resource.RLIM_INFINITY and soft >= target:
            return soft, hard, True
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        return target, hard, True
    return soft, hard, False
