"""Process resource limits: enough descriptors that a flood meets a listener's own caps
first (shared by hd-node, hd-lobby and hd-relay)."""

from __future__ import annotations

import resource


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
