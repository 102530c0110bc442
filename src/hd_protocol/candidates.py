"""ICE-lite candidates (SPEC 8.1): shape, priority and ordering."""

from __future__ import annotations

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
