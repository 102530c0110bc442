"""ICE-lite candidates (SPEC 8.1): shape, priority and ordering."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError

TYPE_PREF = {"host": 126, "srflx": 100, "relay": 0}
MAX_URL_CHARS = 512


def priority(type_: str, local_pref: int) -> int:
    """RFC 8445 §5.1.2 with component 1: ``2^24·type_pref + 2^8·local_pref + 255``."""
    if type_ not in TYPE_PREF:
        raise ValueError(f"unknown candidate type {type_!r}")
    if not 0 <= local_pref <= 65535:
        raise ValueError("local_pref is 0..65535")
    return (TYPE_PREF[type_] << 24) + (local_pref << 8) + 255


def make_candidate(type_: str, url: str, local_pref: int = 65535) -> dict[str, Any]:
    return {"type": type_, "url": url, "priority": priority(type_, local_pref)}


def check_candidate(c: object) -> None:
    if type(c) is not dict or set(c) != {"type", "url", "priority"}:
        raise ProtocolError("bad_candidate", "a candidate is {type, url, priority}")
    if c["type"] not in TYPE_PREF:
        raise ProtocolError("bad_candidate", "type must be host, srflx or relay")
    url = c["url"]
    if type(url) is not str or len(url) > MAX_URL_CHARS or not url.startswith(("ws://", "wss://")):
        raise ProtocolError("bad_candidate", "url must be a ws:// or wss:// URL")
    if type(c["priority"]) is not int or not 0 <= c["priority"] < 2**32:
        raise ProtocolError("bad_candidate", "priority must be a 32-bit integer")


def sort_candidates(cands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Highest priority first; duplicates (same url) removed, keeping the best."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for c in sorted(cands, key=lambda c: -int(c["priority"])):
        if c["url"] not in seen:
            seen.add(c["url"])
            out.append(c)
    return out


# --- the join ladder (SPEC 8.2), direct candidates ------------------------------------

STAGGER_MS = 250
LADDER_DEADLINE_MS = 15_000


@dataclass(frozen=True, slots=True)
class StartDial:
    """Start dialling this candidate (it runs until told otherwise)."""

    url: str


@dataclass(frozen=True, slots=True)
class LadderDone:
    """The ladder is over: ``url`` won, or nothing did and ``reason`` says why.
    Every dial still running must be cancelled."""

    url: str | None
    reason: str | None = None


LadderOutput = StartDial | LadderDone


class Ladder:
    """Happy Eyeballs over ``ws://`` candidates (SPEC 8.2).

    The first candidate is dialled at once, the next one every ``stagger_ms`` while
    none has completed a handshake, and at once when a running dial fails (nothing to
    wait for then). The first authenticated session wins; an explicit refusal by the
    node we meant to reach (``auth_result ok:false``) stops the ladder at once; the
    whole ladder has one deadline. The shell reports outcomes with ``succeeded`` and
    ``failed`` and fires ``on_timer`` at ``next_deadline``.
    """

    def __init__(
        self,
        urls: list[str],
        now: int,
        *,
        stagger_ms: int = STAGGER_MS,
        deadline_ms: int = LADDER_DEADLINE_MS,
    ) -> None:
        self._waiting: list[str] = list(dict.fromkeys(urls))  # order kept, no duplicates
        self._running: set[str] = set()
        self._stagger = stagger_ms
        self._deadline = now + deadline_ms
        self._next_start: int | None = None
        self._last_reason = "no_address"
        self.done: LadderDone | None = None

    def start(self, now: int) -> list[LadderOutput]:
        if not self._waiting:
            return self._finish(None, "no_address")
        return self._start_next(now)

    def next_deadline(self) -> int | None:
        if self.done is not None:
            return None
        if self._next_start is not None and self._waiting:
            return min(self._next_start, self._deadline)
        return self._deadline

    def on_timer(self, now: int) -> list[LadderOutput]:
        if self.done is not None:
            return []
        if now >= self._deadline:
            return self._finish(None, "timeout")
        if self._waiting and self._next_start is not None and now >= self._next_start:
            return self._start_next(now)
        return []

    def succeeded(self, url: str) -> list[LadderOutput]:
        if self.done is not None or url not in self._running:
            return []
        return self._finish(url, None)

    def failed(self, url: str, reason: str, now: int, *, refused: bool) -> list[LadderOutput]:
        """A dial ended without a session. ``refused``: the node itself said no."""
        if self.done is not None or url not in self._running:
            return []
        self._running.discard(url)
        self._last_reason = reason
        if refused:
            return self._finish(None, reason)
        if self._waiting:
            return self._start_next(now)
        if not self._running:
            return self._finish(None, reason)
        return []

    def _start_next(self, now: int) -> list[LadderOutput]:
        url = self._waiting.pop(0)
        self._running.add(url)
        self._next_start = now + self._stagger
        return [StartDial(url)]

    def _finish(self, url: str | None, reason: str | None) -> list[LadderOutput]:
        self.done = LadderDone(url, reason)
        self._waiting.clear()
        self._running.clear()
        return [self.done]
