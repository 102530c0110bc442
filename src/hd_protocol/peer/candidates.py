"""ICE-lite candidates (SPEC 8.1): shape, priority and ordering."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError, RemoteProtocolError

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
        raise RemoteProtocolError("bad_candidate", "a candidate is {type, url, priority}")
    if type(c["type"]) is not str or c["type"] not in TYPE_PREF:  # a list is unhashable
        raise RemoteProtocolError("bad_candidate", "type must be host, srflx or relay")
    url = c["url"]
    if type(url) is not str or len(url) > MAX_URL_CHARS or not url.startswith(("ws://", "wss://")):
        raise RemoteProtocolError("bad_candidate", "url must be a ws:// or wss:// URL")
    if type(c["priority"]) is not int or not 0 <= c["priority"] < 2**32:
        raise RemoteProtocolError("bad_candidate", "priority must be a 32-bit integer")


def sort_candidates(cands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Highest priority first; duplicates (same url) removed, keeping the best."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for c in sorted(cands, key=lambda c: -int(c["priority"])):
        if c["url"] not in seen:
            seen.add(c["url"])
            out.append(c)
    return out


# --- the join ladder (SPEC 8.2) ------------------------------------------------------

STAGGER_MS = 250
LADDER_DEADLINE_MS = 15_000
LINK_KINDS = ("direct", "lan", "webrtc", "relay")
# SPEC 8.2: WebRTC starts after 1 s and the relay after 1.5 s, in parallel with
# whatever is still trying; direct and LAN candidates are staggered from the start.
START_OFFSETS_MS: dict[str, int] = {"direct": 0, "lan": 0, "webrtc": 1_000, "relay": 1_500}


@dataclass(frozen=True, slots=True)
class DialCandidate:
    """One way to reach a peer: a link ``kind`` (a transport) and an ``address`` that
    transport understands (a ``ws://`` URL for direct and LAN, a relay URL, a lobby
    signalling target for WebRTC). ``priority`` orders candidates of one kind."""

    kind: str
    address: str
    priority: int = 0


@dataclass(frozen=True, slots=True)
class StartDial:
    """Start dialling this candidate (it runs until told otherwise)."""

    candidate: DialCandidate

    @property
    def url(self) -> str:
        return self.candidate.address


@dataclass(frozen=True, slots=True)
class LadderDone:
    """The ladder is over: ``candidate`` won, or nothing did and ``reason`` says why.
    Every dial still running must be cancelled."""

    candidate: DialCandidate | None
    reason: str | None = None

    @property
    def url(self) -> str | None:
        return self.candidate.address if self.candidate is not None else None


LadderOutput = StartDial | LadderDone


# Which link a wire candidate (SPEC 8.1) is dialled over.
_KIND_OF_TYPE = {"host": "direct", "srflx": "direct", "relay": "relay"}


def dial_candidates(cands: Sequence[dict[str, Any]]) -> list[DialCandidate]:
    """Wire candidates ``{type, url, priority}`` (an invite's, a room host's) as ladder
    candidates: host and srflx are direct links, relay goes through that relay.
    Malformed entries are skipped."""
    out: list[DialCandidate] = []
    for c in cands:
        try:
            check_candidate(c)
        except ProtocolError:
            continue
        out.append(DialCandidate(_KIND_OF_TYPE[c["type"]], c["url"], c["priority"]))
    return out


def direct_candidates(urls: Sequence[str]) -> list[DialCandidate]:
    """Plain ``ws://`` URLs (best first) as direct candidates, priority by order."""
    return [DialCandidate("direct", u, len(urls) - i) for i, u in enumerate(urls)]


class Ladder:
    """Happy Eyeballs over typed candidates (SPEC 8.2).

    Candidates of a kind without a start offset (direct, LAN) are tried best first: the
    first at once, the next every ``stagger_ms`` while none has completed a handshake,
    and at once when a dial fails and nothing else is running. A kind with an offset
    (WebRTC 1 s, relay 1.5 s) starts at that offset, in parallel with whatever still
    tries (or at once, when nothing else is left running). The first authenticated
    session wins; an explicit refusal by the node we meant to reach
    (``auth_result ok:false``) stops the ladder at once; the whole ladder has its own
    deadline (15 s). The shell reports outcomes with ``succeeded`` and ``failed`` and
    calls ``on_timer`` at ``next_deadline``; time is a monotonic ``now`` in ms.
    """

    def __init__(
        self,
        candidates: Sequence[DialCandidate | str],
        now: int,
        *,
        stagger_ms: int = STAGGER_MS,
        deadline_ms: int = LADDER_DEADLINE_MS,
        offsets_ms: Mapping[str, int] | None = None,
    ) -> None:
        offsets = START_OFFSETS_MS if offsets_ms is None else offsets_ms
        seen: set[tuple[str, str]] = set()
        staggered: list[DialCandidate] = []
        timed: list[tuple[int, DialCandidate]] = []
        for c in candidates:
            cand = c if isinstance(c, DialCandidate) else DialCandidate("direct", c)
            if (cand.kind, cand.address) in seen:
                continue
            seen.add((cand.kind, cand.address))
            offset = offsets.get(cand.kind, 0)
            if offset > 0:
                timed.append((now + offset, cand))
            else:
                staggered.append(cand)
        # Best first; equal priorities keep the order given (a stable sort).
        self._waiting = sorted(staggered, key=lambda c: -c.priority)
        self._timed = sorted(timed, key=lambda t: (t[0], -t[1].priority))
        self._running: set[DialCandidate] = set()
        self._stagger = stagger_ms
        self._deadline = now + deadline_ms
        self._next_start: int | None = None
        self.done: LadderDone | None = None

    def start(self, now: int) -> list[LadderOutput]:
        if not self._waiting and not self._timed:
            return self._finish(None, "no_address")
        if self._waiting:
            return self._start_next(now)
        return self._start_timed(now, force=True)

    def next_deadline(self) -> int | None:
        if self.done is not None:
            return None
        dl = self._deadline
        if self._next_start is not None and self._waiting:
            dl = min(dl, self._next_start)
        if self._timed:
            dl = min(dl, self._timed[0][0])
        return dl

    def on_timer(self, now: int) -> list[LadderOutput]:
        if self.done is not None:
            return []
        if now >= self._deadline:
            return self._finish(None, "timeout")
        out: list[LadderOutput] = []
        if self._waiting and self._next_start is not None and now >= self._next_start:
            out += self._start_next(now)
        out += self._start_timed(now)
        return out

    def succeeded(self, candidate: DialCandidate | str) -> list[LadderOutput]:
        cand = self._find(candidate)
        if self.done is not None or cand is None:
            return []
        return self._finish(cand, None)

    def failed(
        self, candidate: DialCandidate | str, reason: str, now: int, *, refused: bool
    ) -> list[LadderOutput]:
        """A dial ended without a session. ``refused``: the node itself said no."""
        cand = self._find(candidate)
        if self.done is not None or cand is None:
            return []
        self._running.discard(cand)
        self._last_reason = reason
        if refused:
            return self._finish(None, reason)
        if self._waiting:  # a failure leaves nothing to wait for: the next one now
            return self._start_next(now)
        if self._running:
            return []  # the others still try; a timed kind starts at its offset
        if self._timed:
            return self._start_timed(now, force=True)
        return self._finish(None, reason)

    _last_reason = "no_address"

    def _find(self, candidate: DialCandidate | str) -> DialCandidate | None:
        if isinstance(candidate, DialCandidate):
            return candidate if candidate in self._running else None
        return next((c for c in self._running if c.address == candidate), None)

    def _start_next(self, now: int) -> list[LadderOutput]:
        cand = self._waiting.pop(0)
        self._running.add(cand)
        self._next_start = now + self._stagger
        return [StartDial(cand)]

    def _start_timed(self, now: int, *, force: bool = False) -> list[LadderOutput]:
        """Start every timed candidate that is due (with ``force``: at least the next)."""
        out: list[LadderOutput] = []
        while self._timed and (self._timed[0][0] <= now or (force and not out)):
            _, cand = self._timed.pop(0)
            self._running.add(cand)
            out.append(StartDial(cand))
        return out

    def _finish(self, cand: DialCandidate | None, reason: str | None) -> list[LadderOutput]:
        self.done = LadderDone(cand, reason)
        self._waiting.clear()
        self._timed.clear()
        self._running.clear()
        return [self.done]
