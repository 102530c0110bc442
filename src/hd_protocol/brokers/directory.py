"""The lobby's directory (SPEC 7.2): every node it knows, in node id order, and the
deadlines of its connections.

Below ``Limits.presence_push_max`` nodes every change is pushed to every registered
node. Past it, pushing stops scaling (N registrations would be N²/2 presence frames),
so the directory is paged instead: presence goes only to the nodes that share a room
with the changed node, ``registered`` carries the first page, and ``list_nodes``
walks the rest. Pages follow node id order and the cursor is the last node id of a
page, so a walk visits every node that stays registered during it exactly once,
whatever joins or leaves meanwhile.

``Schedule`` keeps the earliest of many per-connection deadlines without scanning
every connection: the lobby asks for its next deadline after each batch of frames.
"""

from __future__ import annotations

import heapq
import json
from bisect import bisect_right, insort
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import RemoteProtocolError
from .frames import fields

NODES_PAGE = 100  # list_nodes: the default and the largest page (SPEC 11)
# Entries are small, but a node may make its own as big as the register rules allow
# (64-char name, 32 capabilities of 64 chars: about 12 KiB once escaped). What a node
# reads is at most 1 MiB a frame, so a page, and the directory a registration gets in
# full, stop at a size in bytes as well as at a count.
PAGE_BYTES = 256 * 1024
FULL_BYTES = 512 * 1024
MAX_CURSOR_CHARS = 128

# The same bytes ``frames.encode_frame`` writes: an entry is encoded once per change,
# not once per receiver.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_entry(entry: Mapping[str, Any]) -> str:
    return _encoder.encode(entry)


def presence_frame(entry_wire: str) -> str:
    """``encode_frame("presence", {"node": entry})`` from the entry's encoding."""
    return '{"type":"presence","node":' + entry_wire + "}"


class Directory:
    """Node id -> directory entry, with the ids kept sorted for paging."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.wires: dict[str, str] = {}  # node id -> its entry's encoding (made once)
        self.bytes = 0  # the UTF-8 size of all of them
        self._sizes: dict[str, int] = {}
        self._ids: list[str] = []

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.entries

    def put(self, entry: dict[str, Any]) -> str:
        """Note ``entry`` (``status: offline`` removes the node); its encoding."""
        node_id = entry["node_id"]
        wire = encode_entry(entry)
        self.bytes -= self._sizes.pop(node_id, 0)
        if entry.get("status") == "offline":
            if self.entries.pop(node_id, None) is not None:
                del self.wires[node_id]
                del self._ids[bisect_right(self._ids, node_id) - 1]
        else:
            if node_id not in self.entries:
                insort(self._ids, node_id)
            self.entries[node_id] = entry
            self.wires[node_id] = wire
            self._sizes[node_id] = size = len(wire.encode())
            self.bytes += size
        return wire

    def page(self, cursor: str | None, limit: int = NODES_PAGE,
             max_bytes: int = PAGE_BYTES) -> tuple[list[str], str | None]:
        """The encodings of up to ``limit`` entries after ``cursor``, as many as fit in
        ``max_bytes`` (one at least); the cursor of the next page (None: this was the
        last)."""
        start = 0 if cursor is None else bisect_right(self._ids, cursor)
        ids = self._ids[start:start + limit]
        budget = max_bytes
        for n, i in enumerate(ids):
            budget -= self._sizes[i] + 1
            if budget < 0 and n > 0:
                ids = ids[:n]
                break
        more = start + len(ids) < len(self._ids)
        return [self.wires[i] for i in ids], (ids[-1] if more and ids else None)

    def all_but(self, node_id: str) -> list[str] | None:
        """Every entry's encoding but ``node_id``'s, in the order they came; None when
        they are more than ``FULL_BYTES`` (the directory then goes by pages)."""
        if self.bytes - self._sizes.get(node_id, 0) > FULL_BYTES:
            return None
        return [w for i, w in self.wires.items() if i != node_id]


def with_list(frame: str, name: str, wires: list[str]) -> str:
    """``frame`` (an encoded object) with one more member ``name``: the JSON list of
    ``wires``, each already encoded — a directory is encoded once per change, not
    once per page or registration."""
    assert frame.endswith("}")
    return f'{frame[:-1]},"{name}":[{",".join(wires)}]}}'


def parse_list_nodes(f: Mapping[str, Any]) -> tuple[str | None, int]:
    """``(cursor, limit)`` of a ``list_nodes`` frame."""
    fields(f, (), ("cursor", "limit"))
    cursor, limit = f.get("cursor"), f.get("limit", NODES_PAGE)
    if cursor is not None and (type(cursor) is not str or len(cursor) > MAX_CURSOR_CHARS):
        raise RemoteProtocolError("bad_request", "cursor is the string a nodes page gave")
    if type(limit) is not int or not 1 <= limit <= NODES_PAGE:
        raise RemoteProtocolError("bad_request", f"limit is 1..{NODES_PAGE}")
    return cursor, limit


def sharers(node_id: str, rooms: Iterable[Any]) -> set[str]:
    """The nodes that share a room (host or member) with ``node_id``, without it."""
    out: set[str] = set()
    for r in rooms:
        if node_id == r.host or node_id in r.members:
            out.add(r.host)
            out |= r.members
    out.discard(node_id)
    return out


class Schedule:
    """The earliest deadline of many keys, without scanning them all.

    The keys' owner holds the true deadlines (``actual(key)``: None once there is none);
    the heap may hold stale ones, which are dropped or moved later when they come to
    the top. A deadline only ever moves later or goes, so nothing is missed."""

    def __init__(self, actual: Callable[[int], int | None]) -> None:
        self._actual = actual
        self._heap: list[tuple[int, int]] = []

    def add(self, key: int, at: int) -> None:
        heapq.heappush(self._heap, (at, key))

    def earliest(self) -> int | None:
        h = self._heap
        while h:
            at, key = h[0]
            real = self._actual(key)
            if real == at:
                return at
            heapq.heappop(h)
            if real is not None and real > at:
                heapq.heappush(h, (real, key))
        return None

    def due(self, now: int) -> list[int]:
        """The keys whose deadline has come, in key order (taken off the schedule)."""
        out: set[int] = set()
        while (at := self.earliest()) is not None and at <= now:
            out.add(heapq.heappop(self._heap)[1])
        return sorted(out)
