"""A lobby that is one of several instances sharing a directory (docs/cluster.md).

``ClusteredLobby`` is ``LobbyServer`` plus what it learns from the other instances
(``cluster_view``) and what it tells them. Every decision stays where it is for one
instance; what changes is where a node or room may be:

- a node registered elsewhere is in this instance's directory (``on_nodes``); a node
  registered here is claimed for the others (``ClaimNode``), newest wins: a record from
  another instance with a higher revision than our claim replaces our connection with
  the usual ``error replaced``;
- a room is decided by its host's instance: a ``join_room`` for a room hosted elsewhere
  goes there (``join``), and its answer comes back (``joined`` with the room, or
  ``refused`` with the code the host's instance gave);
- ``signal`` and ``relay`` to a node held elsewhere go to its instance as the frame it
  will get (``frame``), after the same checks as a local one;
- an instance not heard for ``instance_ttl_ms`` is gone: its nodes leave the directory,
  its rooms are hidden until their hosts register again (here or anywhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import RemoteProtocolError
from ..identity import Identity, is_node_id
from .cluster_view import (
    INSTANCE_TTL_MS,
    ClaimNode,
    ClusterView,
    DropRoom,
    PutRoom,
    ReleaseNode,
    RemoteNode,
    ToInstance,
    check_message,
    node_from_record,
    room_from_record,
    room_record,
)
from .frames import encode_frame, error_frame
from .lobby import _SENDABLE, LobbyServer, Output, _Conn, _Node
from .relay import CloseConn, ToConn
from .rooms import Room, admit, token_hash

# One change to the shared state, as the shell read it: key, value (None: deleted), revision.
Change = tuple[str, object | None, int]


class ClusteredLobby(LobbyServer):
    def __init__(self, identity: Identity, *, instance: str,
                 instance_ttl_ms: int = INSTANCE_TTL_MS, **kw: Any) -> None:
        super().__init__(identity, **kw)
        self.view = ClusterView(instance, instance_ttl_ms=instance_ttl_ms)
        self._now = 0
        self._syncing: dict[str, dict[str, Any]] | None = None  # node -> entry, until seen again

    @property
    def instance(self) -> str:
        return self.view.instance

    # --- time: the hooks below route by liveness, so every entry point notes ``now`` ----

    def receive(self, conn: int, raw: str | bytes, now: int, wall: int) -> list[Output]:
        self._now = now
        return super().receive(conn, raw, now, wall)

    def on_timer(self, now: int, wall: int) -> list[Output]:
        self._now = now
        out = super().on_timer(now, wall)
        for inst in self.view.dead_instances(now):
            out += self._instance_gone(inst, now)
        return out

    def next_deadline(self) -> int | None:
        dls = [d for d in (super().next_deadline(), self.view.next_deadline()) if d is not None]
        return min(dls, default=None)

    def node(self, node_id: str) -> dict[str, Any] | None:
        r = self._remote(node_id)
        return dict(r.entry) if r is not None else super().node(node_id)

    def _remote(self, node_id: object) -> RemoteNode | None:
        """``node_id`` as another, alive instance holds it (not if we hold it)."""
        if node_id in self._nodes:
            return None
        return self.view.where(node_id, self._now)

    # --- the base lobby's hooks -----------------------------------------------------------

    def _registered(self, node: _Node, now: int) -> list[Output]:
        self._now = now
        v = self.view
        v.claims[node.node_id] = None  # until the shell says which revision it wrote
        out: list[Output] = []
        for room in [r for r in v.rooms.values() if r.host == node.node_id]:
            del v.rooms[room.id]  # the room follows its host's registration
            self._rooms[room.id] = room
            out.append(PutRoom(room_record(room)))
        return [self._claim(node), *out]

    def _claim(self, node: _Node) -> ClaimNode:
        return ClaimNode(node.node_id, {"instance": self.view.instance, "entry": node.entry(),
                                        "card": node.card()})

    def _node_changed(self, node: _Node) -> list[Output]:
        return [self._claim(node)]

    def _left(self, node: _Node, now: int) -> list[Output]:
        v = self.view
        v.claims.pop(node.node_id, None)
        out: list[Output] = [ReleaseNode(node.node_id)]
        for room in v.rooms.values():
            host = self._remote(room.host)
            if node.node_id in room.members and host is not None:
                room.members.discard(node.node_id)
                out.append(ToInstance(host.instance, {"t": "leave", "to": room.host,
                                                      "room": room.id, "node": node.node_id}))
        return out

    def _room_changed(self, room: Room) -> list[Output]:
        return [PutRoom(room_record(room))]

    def _room_closing(self, room: Room) -> list[Output]:
        frame = encode_frame("room_closed", {"roomId": room.id})
        out: list[Output] = [DropRoom(room.id)]
        for m in sorted(room.members):
            where = self._remote(m)
            if where is not None:
                out.append(ToInstance(where.instance, {"t": "frame", "to": m, "frame": frame}))
        return out

    def _other_rooms(self) -> list[Room]:
        return [r for r in self.view.rooms.values() if self._remote(r.host) is not None]

    def _host_name(self, node_id: str) -> str:
        r = self._remote(node_id)
        return str(r.entry.get("node_name", "")) if r is not None else super()._host_name(node_id)

    def _elsewhere(self, c: _Conn, n: _Node, f: dict[str, Any]) -> list[Output]:
        t = f["type"]
        if t in ("join_room", "leave_room"):
            found = self.view.remote_room(f["roomId"], self._now)
            if found is None or self._remote(found[0].host) is None:
                return super()._elsewhere(c, n, f)
            room, host = found
            if t == "leave_room":
                if n.node_id not in room.members:
                    raise RemoteProtocolError("not_found", "not a member of that room")
                room.members.discard(n.node_id)
                return [ToInstance(host.instance, {"t": "leave", "to": room.host,
                                                   "room": room.id, "node": n.node_id}),
                        ToConn(c.id, encode_frame("room_closed", {"roomId": room.id}))]
            token = f.get("token")
            return [ToInstance(host.instance, {
                "t": "join", "to": room.host, "room": room.id, "guest": n.card(),
                "reply": self.view.instance,
                "token_hash": token_hash(token) if type(token) is str else None})]
        target = self._remote(f["to"])
        if target is None:
            return super()._elsewhere(c, n, f)
        if t == "signal":
            if not any({n.node_id, target.node_id} <= (r.members | {r.host})
                       for r in [*self._rooms.values(), *self._other_rooms()]):
                raise RemoteProtocolError("denied", "signaling is between members of one room")
            frame = encode_frame("signal", {"from": n.node_id, "sid": f["sid"],
                                            "kind": f["kind"], "sdp": f["sdp"]})
        else:  # relay: the envelope was checked (and its ttl lowered) by the handler
            frame = encode_frame("relay", {"from": n.node_id, "envelope": f["envelope"]})
        return [ToInstance(target.instance, {"t": "frame", "to": target.node_id,
                                             "frame": frame})]

    # --- what the shell reads from the bus ---------------------------------------------------

    def instance_alive(self, instance: str, now: int) -> None:
        self.view.alive(instance, now)

    def claimed(self, node_id: str, revision: int, now: int) -> list[Output]:
        """The shell wrote our record of ``node_id`` at ``revision``."""
        self._now = now
        v = self.view
        if node_id not in v.claims:
            return []  # it left meanwhile (its ReleaseNode follows)
        v.claims[node_id] = revision
        other = v.nodes.get(node_id)
        if other is not None and other.revision > revision:
            return self._replaced_elsewhere(node_id, now)
        v.nodes.pop(node_id, None)  # older than ours: not where the node is
        return []

    def on_nodes(self, changes: Sequence[Change], now: int) -> list[Output]:
        """Records of the shared directory, in the bus's order."""
        self._now = now
        v = self.view
        out: list[Output] = []
        for node_id, rec, rev in changes:
            old = v.nodes.get(node_id)
            if rec is None:
                if old is not None and rev > old.revision:
                    del v.nodes[node_id]
                    if node_id not in self._nodes:
                        self._announce({**old.entry, "status": "offline"}, now, exclude="")
                continue
            r = node_from_record(node_id, rec, rev)
            if r is None or (old is not None and old.revision >= rev):
                continue
            if r.instance == v.instance:
                if node_id not in self._nodes:  # a record of ours from an earlier life
                    out.append(ReleaseNode(node_id, rev))
                continue
            v.seen.setdefault(r.instance, now)
            claim = v.claims.get(node_id)
            if node_id in self._nodes:
                if claim is None:
                    v.nodes[node_id] = r  # compared when our claim's revision is known
                elif rev > claim:
                    v.nodes[node_id] = r
                    out += self._replaced_elsewhere(node_id, now)
                continue
            v.nodes[node_id] = r
            if old is None or old.entry != r.entry or old.instance != r.instance:
                self._announce(dict(r.entry), now, exclude="")
        return out

    def on_rooms(self, changes: Sequence[Change], now: int) -> list[Output]:
        """Records of the shared room list."""
        self._now = now
        for room_id, rec, _ in changes:
            if rec is None:
                self.view.rooms.pop(room_id, None)
                continue
            room = room_from_record(rec)
            if room is None or room.id != room_id or room.id in self._rooms:
                continue  # ours (we wrote it), or not a room
            if room.host in self._nodes:  # its host registered here before the record came
                self._rooms[room.id] = room
            else:
                self.view.rooms[room.id] = room
        return []

    def on_message(self, msg: object, now: int) -> list[Output]:
        """One message from another instance (``ToInstance`` there)."""
        self._now = now
        try:
            m = check_message(msg)
        except RemoteProtocolError:
            return []
        target = self._nodes.get(m["to"])
        if target is None:
            return []  # gone meanwhile: what it was for has no one to reach here
        kind = m["t"]
        if kind == "frame" and type(m.get("frame")) is str:
            return [ToConn(target.conn, m["frame"])]
        if kind == "joined" and type(m.get("frame")) is str:
            room = room_from_record(m.get("room"))
            if room is not None and room.id not in self._rooms:
                self.view.rooms[room.id] = room
                self._room_joined(room, target.node_id, now)
            return [ToConn(target.conn, m["frame"])]
        if kind == "refused" and m.get("code") in _SENDABLE:
            c = self._conns.get(target.conn)
            if c is None:
                return []
            return self._bad(c, RemoteProtocolError(str(m["code"]), str(m.get("message", ""))))
        if kind == "join":
            return self._remote_join(target, m)
        if kind == "leave":
            room = self._rooms.get(m.get("room"))  # type: ignore[arg-type]
            if room is not None and room.host == target.node_id and m.get("node") in room.members:
                room.members.discard(m["node"])
                return [PutRoom(room_record(room))]
        return []

    def _remote_join(self, host: _Node, m: dict[str, Any]) -> list[Output]:
        guest, reply = m.get("guest"), m.get("reply")
        if (not isinstance(guest, dict) or not is_node_id(guest.get("node_id"))
                or type(guest.get("public_key")) is not str or type(reply) is not str):
            return []
        room = self._rooms.get(m.get("room"))  # type: ignore[arg-type]
        try:
            if room is None or room.host != host.node_id:
                raise RemoteProtocolError("no_room", "no such room")
            digest = m.get("token_hash")
            admit(room, guest["node_id"], guest["public_key"], None, self.directory,
                  self.limits.members_per_room,
                  token_digest=digest if type(digest) is str else None)
        except RemoteProtocolError as exc:
            return [ToInstance(reply, {"t": "refused", "to": guest["node_id"], "code": exc.code,
                                       "message": exc.message})]
        room.members.add(guest["node_id"])
        self._room_joined(room, guest["node_id"], self._now)
        info = encode_frame("room_info", {"roomId": room.id, "host": host.card()})
        return [ToConn(host.conn, encode_frame("peer_joining", {"roomId": room.id,
                                                                "guest": guest})),
                PutRoom(room_record(room)),
                ToInstance(reply, {"t": "joined", "to": guest["node_id"],
                                   "room": room_record(room), "frame": info})]

    def _replaced_elsewhere(self, node_id: str, now: int) -> list[Output]:
        """A newer registration of a node we hold, on another instance: it takes over
        (with its rooms); our connection gets what a local replacement gets."""
        n = self._nodes.pop(node_id)
        self.view.claims.pop(node_id, None)
        self._conns.pop(n.conn, None)  # its later disconnect then finds nothing
        for room in [r for r in self._rooms.values() if r.host == node_id]:
            del self._rooms[room.id]
            self.view.rooms[room.id] = room
        r = self.view.nodes.get(node_id)
        if r is not None:
            self._announce(dict(r.entry), now, exclude=node_id)
        return [ToConn(n.conn, error_frame("replaced", "registered on another connection")),
                CloseConn(n.conn, 1000, "replaced")]

    def _instance_gone(self, instance: str, now: int) -> list[Output]:
        v = self.view
        v.seen.pop(instance, None)
        out: list[Output] = []
        for r in [r for r in v.nodes.values() if r.instance == instance]:
            del v.nodes[r.node_id]
            self._announce({**r.entry, "status": "offline"}, now, exclude="")
            out.append(ReleaseNode(r.node_id, r.revision))  # whoever is first clears it
        return out

    # --- the bus came back -------------------------------------------------------------------

    def resync(self, now: int) -> list[Output]:
        """Write everything we hold again (the bus may have lost or missed it); what the
        others hold comes again with the shell's new watch (``synced`` after it)."""
        self._now = now
        self._syncing = {k: r.entry for k, r in self.view.nodes.items()}
        self.view.nodes.clear()
        out: list[Output] = []
        for n in self._nodes.values():
            self.view.claims[n.node_id] = None
            out.append(self._claim(n))
        out += [PutRoom(room_record(r)) for r in self._rooms.values()]
        return out

    def synced(self, now: int) -> list[Output]:
        """The new watch has given every record: nodes not among them are gone."""
        self._now = now
        gone, self._syncing = self._syncing or {}, None
        for node_id, entry in gone.items():
            if node_id not in self.view.nodes and node_id not in self._nodes:
                self._announce({**entry, "status": "offline"}, now, exclude="")
        return []
