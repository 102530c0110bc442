"""Pure policies a shell applies around sessions.

- the simultaneous-dial tie-break (SPEC 4): which of two sessions with one peer stays;
- the reconnect policy (SPEC 5): after which closes a node redials, and how long it
  waits (exponential backoff with jitter, 1 s doubling to 60 s).
"""

from __future__ import annotations

from ..identity import Rng
from ..limits import DEFAULT_LIMITS


def keep_new_session(
    self_id: str,
    *,
    existing_dialer: str,
    existing_opened_at: int,
    new_dialer: str,
    new_opened_at: int,
    handshake_timeout_ms: int = DEFAULT_LIMITS.handshake_timeout_ms,
) -> bool:
    """Simultaneous-dial tie-break (SPEC 4): True if the new session should win.

    Within one handshake timeout, both nodes keep the session whose dialer has the
    smaller node id, so both ends pick the same link without talking; otherwise the
    newest replaces the older.
    """
    del self_id  # the rule only depends on who dialled; kept for call-site clarity
    close_in_time = abs(new_opened_at - existing_opened_at) <= handshake_timeout_ms
    return not (close_in_time and new_dialer > existing_dialer)


def reconnect_delay_ms(
    attempt: int, rng: Rng, *, base_ms: int = 1_000, cap_ms: int = 60_000
) -> int:
    """Exponential backoff with jitter (SPEC 5): 1 s doubling to 60 s.

    "Equal jitter": half the step is fixed, half is random, so retries never bunch
    up and the delay never collapses to zero.
    """
    step = min(cap_ms, base_ms * (2 ** min(max(attempt, 0), 30)))
    half = step // 2
    r = int.from_bytes(rng(4)) / 2**32  # big-endian
    return int(half + int(r * (step - half)))


# Close reasons after which a node does not redial by itself: a person ended it
# ("disconnect", on either side), trust was withdrawn ("untrusted"), or another
# session with the same peer won the tie-break ("duplicate": nothing was lost).
NO_REDIAL_REASONS = frozenset({"disconnect", "untrusted", "duplicate"})


def should_redial(reason: str, *, trusted: bool, blocked: bool = False,
                  has_address: bool = True, user_disconnected: bool = False) -> bool:
    """The reconnect policy (SPEC 5) after a session with a stored peer ended.

    Only trusted, unblocked peers we have an address for are redialled, and not after
    a close that ended the session on purpose (``NO_REDIAL_REASONS``) or after the user
    dropped this peer. Everything else — a timeout, a broken link, the peer shutting
    down, too many errors — is redialled with ``reconnect_delay_ms`` backoff.
    """
    return (
        trusted and not blocked and has_address and not user_disconnected
        and reason not in NO_REDIAL_REASONS
    )
