"""What one lobby instance knows of the others (docs/cluster.md), and what it asks its
shell to tell them: the sans-IO half of a lobby that runs on several instances.

The shell carries a shared directory and room list (KV buckets on the bus) and messages
between instances; ``hd_protocol.brokers.lobby.LobbyServer`` decides with what this
module keeps:

- **the directory of the other instances**: one record per node, ``{instance, entry,
  card}`` at a revision (the bus's order of writes). Registration is newest-wins across
  instances: a node held here is replaced when a record for it from another instance
  carries a higher revision than our own claim;
- **instance liveness**: each instance says it is alive every few seconds; one not heard
  for ``instance_ttl_ms`` is gone, and its nodes leave every directory;
- **the rooms of the other instances**, as their hosts' instances wrote them. A room
  follows its host's registration: when the host registers here, its rooms become ours.

Effects for the shell: ``ClaimNode`` (write our record of a node: create, or
compare-and-set on the revision it read), ``ReleaseNode`` (delete it if still at our
revision), ``PutRoom``/``DropRoom`` and ``ToInstance`` (a message for one instance).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RemoteProtocolError
from ..identity import is_node_id
from .rooms import POLICIES, VISIBILITY, Room

INSTANCE_TTL_MS = 20_000
ALIVE_EVERY_MS = 5_000


@dataclass(frozen=True, slots=True)
class ClaimNode:
    """Write our record of ``node`` (this instance holds it now)."""

    node: str
    record: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class ReleaseNode:
    """Delete the record of ``node`` if it is still the one at ``revision``
    (``0``: the one this instance last wrote)."""

    node: str
    revision: int = 0


@dataclass(frozen=True, slots=True)
class PutRoom:
    room: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class DropRoom:
    room_id: str


@dataclass(frozen=True, slots=True)
class ToInstance:
    """One message for ``instance`` (the shell batches them per instance)."""

    instance: str
    message: dict[str, Any] = field(hash=False)
    wire: str | None = field(default=None, hash=False, compare=False)  # ``message`` encoded


ClusterEffect = ClaimNode | ReleaseNode | PutRoom | DropRoom | ToInstance


def pack(items: Sequence[bytes], *, max_bytes: int, max_items: int
         ) -> tuple[list[bytes], list[int]]:
    """Encoded JSON values as JSON lists, in order, each of at most ``max_items`` items
    and ``max_bytes`` bytes (one bus message each); and the indexes of the items that do
    not fit one list on their own (the caller refuses or stores those)."""
    lists: list[bytes] = []
    too_big: list[int] = []
    part: list[bytes] = []
    size = 2  # the brackets
    for i, item in enumerate(items):
        if len(item) + 2 > max_bytes:
            too_big.append(i)
            continue
        if part and (len(part) >= max_items or size + 1 + len(item) > max_bytes):
            lists.append(b"[" + b",".join(part) + b"]")
            part, size = [], 2
        size += len(item) + (1 if part else 0)
        part.append(item)
    if part:
        lists.append(b"[" + b",".join(part) + b"]")
    return lists, too_big


@dataclass(slots=True)
class RemoteNode:
    node_id: str
    instance: str
    revision: int
    entry: dict[str, Any]
    card: dict[str, Any]


def room_record(r: Room) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "host": r.host, "visibility": r.visibility,
            "policy": r.policy, "token_hash": r.token_hash, "members": sorted(r.members)}


def room_from_record(rec: object) -> Room | None:
    """A room as another instance wrote it (checked: the bus is ours, but a record
    from an older or broken instance must not take this one down)."""
    if not isinstance(rec, dict):
        return None
    try:
        members = rec["members"]
        token = rec["token_hash"]
        if (type(rec["id"]) is not str or type(rec["name"]) is not str
                or not is_node_id(rec["host"]) or rec["visibility"] not in VISIBILITY
                or rec["policy"] not in POLICIES or not isinstance(members, list)
                or not all(is_node_id(m) for m in members)
                or not (token is None or type(token) is str)):
            return None
        return Room(rec["id"], rec["name"], rec["host"], rec["visibility"], rec["policy"],
                    token, set(members))
    except KeyError:
        return None


def node_from_record(node_id: str, rec: object, revision: int) -> RemoteNode | None:
    if not is_node_id(node_id) or not isinstance(rec, dict):
        return None
    inst, entry, card = rec.get("instance"), rec.get("entry"), rec.get("card")
    if (type(inst) is not str or not isinstance(entry, dict) or not isinstance(card, dict)
            or entry.get("node_id") != node_id or card.get("node_id") != node_id):
        return None
    return RemoteNode(node_id, inst, revision, entry, card)


class ClusterView:
    """The other instances, as this one has heard of them."""

    def __init__(self, instance: str, *, instance_ttl_ms: int = INSTANCE_TTL_MS) -> None:
        self.instance = instance
        self.instance_ttl_ms = instance_ttl_ms
        self.nodes: dict[str, RemoteNode] = {}  # held by another instance
        self.rooms: dict[str, Room] = {}  # hosted on another instance
        self.seen: dict[str, int] = {}  # instance -> when last heard (monotonic ms)
        self.claims: dict[str, int | None] = {}  # our nodes -> the revision we wrote
        self.deleted: dict[str, int] = {}  # node -> revision of its last delete

    def alive(self, instance: str, now: int) -> None:
        if instance != self.instance:
            self.seen[instance] = now

    def is_alive(self, instance: str, now: int) -> bool:
        last = self.seen.get(instance)
        return last is not None and now - last < self.instance_ttl_ms

    def dead_instances(self, now: int) -> list[str]:
        return [i for i, t in self.seen.items() if now - t >= self.instance_ttl_ms]

    def next_deadline(self) -> int | None:
        return min((t + self.instance_ttl_ms for t in self.seen.values()), default=None)

    def visible(self, now: int) -> Iterable[RemoteNode]:
        return (n for n in self.nodes.values() if self.is_alive(n.instance, now))

    def where(self, node_id: object, now: int) -> RemoteNode | None:
        """The instance that holds ``node_id`` (if another, alive one)."""
        if type(node_id) is not str:
            return None
        n = self.nodes.get(node_id)
        return n if n is not None and self.is_alive(n.instance, now) else None

    def remote_room(self, room_id: object, now: int) -> tuple[Room, RemoteNode] | None:
        """A room hosted on another instance, with its host (alive)."""
        room = self.rooms.get(room_id) if type(room_id) is str else None
        host = self.where(room.host, now) if room is not None else None
        return (room, host) if room is not None and host is not None else None


def check_message(msg: object) -> dict[str, Any]:
    """A message from another instance: a dict with a kind ``t`` and a node ``to``."""
    if not isinstance(msg, dict) or type(msg.get("t")) is not str or not is_node_id(
            msg.get("to")):
        raise RemoteProtocolError("bad_request", "not a cluster message")
    return msg
