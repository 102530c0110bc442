"""The lobby (SPEC 7.1-7.6) as one sans-IO machine: registration, presence, rooms,
signaling, directory attestations — for every connection of one lobby.

The shell assigns each connection an integer id, feeds ``connect``/``receive``/
``disconnect`` and the timer, and carries out ``ToConn`` (send a frame) and
``CloseConn``. Everything a node may do is decided here:

- nothing but ``register`` before a node proved who it is (a signature over the
  lobby's fresh nonce and id: a captured registration is useless elsewhere);
- the newest connection of a node id wins; the old one gets ``error replaced`` and is
  closed, and its cleanup never touches what the node now has on the new one;
- presence is pushed to every registered node, coalesced: at most one batch per
  ``presence_batch_ms`` per subscriber, one frame per changed node; past
  ``Limits.presence_push_max`` nodes only to the nodes that share a room with the
  changed one, and the directory is paged (``list_nodes``; ``directory``);
- a node silent for three heartbeats expires: it leaves the directory, the rooms it
  hosts close (``room_closed`` to their members), it leaves the rooms it joined;
- every bad frame is answered ``error {code, message}``; a connection that keeps
  sending bad ones (or goes over its rate) is closed.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from ..errors import RemoteProtocolError
from ..identity import Identity, Rng, b64encode, is_node_id
from ..limits import DEFAULT_LIMITS, Limits
from ..peer.admission import issue_attestation
from .directory import (
    Directory,
    Schedule,
    encode_entry,
    parse_list_nodes,
    presence_frame,
    sharers,
    with_list,
)
from .frames import (
    TokenBucket,
    challenge,
    check_identity_proof,
    decode_frame,
    encode_frame,
    error_frame,
    fields,
    register_bytes,
    text,
)
from .lobby_state import _Conn as _Conn  # re-exported: lobby_cluster extends them
from .lobby_state import _Node as _Node
from .lobby_state import check_addresses, check_capabilities
from .relay import CloseConn, ToConn, check_relayed
from .rooms import Room, admit, parse_create_room

HEARTBEAT_S = 15
MISSED_HEARTBEATS = 3
PRESENCE_BATCH_MS = 250
BAD_FRAMES_BEFORE_CLOSE = 16
ATTEST_TTL_MS = 24 * 3600 * 1000
SIGNAL_KINDS = ("offer", "answer", "bye")
MAX_SDP = 32 * 1024

Output = Any  # ToConn | CloseConn, and a clustered lobby's effects (lobby_cluster)


class LobbyServer:
    def __init__(self, identity: Identity, *, rng: Rng, limits: Limits = DEFAULT_LIMITS,
                 directory: Mapping[str, str] | None = None, heartbeat_s: int = HEARTBEAT_S,
                 presence_batch_ms: int = PRESENCE_BATCH_MS) -> None:
        self.identity = identity
        self.rng = rng
        self.limits = limits
        self.directory = dict(directory or {})  # node id -> public key (SPEC 7.6)
        self.heartbeat_s = heartbeat_s
        self.batch_ms = presence_batch_ms
        self._conns: dict[int, _Conn] = {}
        self._nodes: dict[str, _Node] = {}
        self._rooms: dict[str, Room] = {}
        self.dir = Directory()  # every node this lobby knows of, here or (clustered) elsewhere
        self._flushes = Schedule(lambda k: c.flush_at if (c := self._conns.get(k)) else None)
        self._expiries = Schedule(lambda k: c.last_seen + self._expiry_ms()
                                  if (c := self._conns.get(k)) else None)

    # --- queries --------------------------------------------------------------------------

    def node(self, node_id: str) -> dict[str, Any] | None:
        n = self._nodes.get(node_id)
        return n.entry() if n is not None else None

    @property
    def registered(self) -> int:
        return len(self._nodes)

    @property
    def rooms(self) -> int:
        return len(self._rooms)

    # --- connection life ------------------------------------------------------------------

    def connect(self, conn: int, now: int) -> list[Output]:
        nonce = self.rng(32)
        lim = self.limits
        self._conns[conn] = _Conn(conn, b64encode(nonce),
                                  TokenBucket(lim.rate_per_s, lim.rate_burst, now), now)
        self._expiries.add(conn, now + self._expiry_ms())
        return [ToConn(conn, challenge(self.identity, nonce))]

    def disconnect(self, conn: int, now: int) -> list[Output]:
        """The connection is gone: its node leaves, unless a newer connection took over."""
        c = self._conns.pop(conn, None)
        if c is None or c.node is None:
            return []
        n = self._nodes.get(c.node)
        if n is None or n.conn != conn:
            return []  # replaced: the node lives on, with its rooms, on its new connection
        return self._leave(n, now)

    def next_deadline(self) -> int | None:
        dls = [d for d in (self._flushes.earliest(), self._expiries.earliest()) if d is not None]
        return min(dls, default=None)

    def on_timer(self, now: int, wall: int) -> list[Output]:
        out: list[Output] = []
        for conn in self._expiries.due(now):
            out += [CloseConn(conn, 1000, "silent for three heartbeats")]
            out += self.disconnect(conn, now)
        for conn in self._flushes.due(now):
            c = self._conns.get(conn)
            if c is not None and c.flush_at is not None and now >= c.flush_at:
                out += self._flush(c, now)
        return out

    def _expiry_ms(self) -> int:
        return MISSED_HEARTBEATS * self.heartbeat_s * 1000

    # --- frames in ------------------------------------------------------------------------

    def receive(self, conn: int, raw: str | bytes, now: int, wall: int) -> list[Output]:
        c = self._conns.get(conn)
        if c is None:
            return []
        c.last_seen = now
        try:
            if not c.bucket.take(now):
                raise RemoteProtocolError("rate_limited", "too many frames")
            frame = decode_frame(raw, self.limits.max_lobby_frame_bytes)
            t = frame["type"]
            if c.node is None:
                if t != "register":
                    raise RemoteProtocolError("unregistered", "register first")
                return self._on_register(c, frame, now, wall)
            handler = _HANDLERS.get(t)
            if handler is None:
                raise RemoteProtocolError("bad_request", f"no frame {t} here")
            node = self._nodes[c.node]
            return handler(self, c, node, frame)
        except RemoteProtocolError as exc:
            return self._bad(c, exc)

    def _bad(self, c: _Conn, exc: RemoteProtocolError) -> list[Output]:
        code = exc.code if exc.code in _SENDABLE else "bad_frame"
        out: list[Output] = [ToConn(c.id, error_frame(code, exc.message))]
        if code in _REFUSALS:
            return out  # an honest answer (the room closed, filled up, the node left)
        c.bad += 1  # ``denied`` counts: a connection may not guess tokens for long
        if code == "auth" or c.bad >= BAD_FRAMES_BEFORE_CLOSE:
            out.append(CloseConn(c.id, 1008, "authentication failed" if code == "auth"
                                 else "too many bad frames"))
            out += self.disconnect(c.id, c.last_seen)
        return out

    def _on_register(self, c: _Conn, f: dict[str, Any], now: int,
                     wall: int) -> list[Output]:
        fields(f, ("node_id", "public_key", "node_name", "addresses", "capabilities", "sig"))
        lim = self.limits
        name = text(f["node_name"], "node_name", max_chars=lim.node_name_chars)
        addresses = check_addresses(f["addresses"], lim.addresses)
        caps = check_capabilities(f["capabilities"], lim.capabilities)
        signed = register_bytes(c.nonce, self.identity.node_id, str(f["node_id"]),
                                str(f["public_key"]), name, addresses, caps)
        node_id = check_identity_proof(f["node_id"], f["public_key"], f["sig"], signed)
        out: list[Output] = []
        old = self._nodes.get(node_id)
        if old is not None and old.conn != c.id:
            # SPEC 7.1: the newest connection wins; the node keeps its rooms.
            out += [ToConn(old.conn, error_frame("replaced", "registered on another "
                                                            "connection")),
                    CloseConn(old.conn, 1000, "replaced")]
            self._conns.pop(old.conn, None)  # its later disconnect then finds nothing
        listed_key = self.directory.get(node_id)
        node = _Node(node_id, f["public_key"], name, addresses, caps, c.id,
                     listed=listed_key is not None
                     and hmac.compare_digest(listed_key, f["public_key"]))
        self._nodes[node_id] = node
        c.node = node_id
        reg: dict[str, Any] = {"session": b64encode(self.rng(16)),
                               "heartbeat_s": self.heartbeat_s}
        out += self._registered(node, now)
        presence = (self.dir.all_but(node_id)  # every node, here or on other instances
                    if len(self.dir) + (node_id not in self.dir) <= lim.presence_push_max
                    else None)
        if presence is None:  # SPEC 7.2: past the limit the directory is paged, not pushed
            presence, cursor = self.dir.page(None)
            reg.update(directory_size=len(self.dir), more=True, cursor=cursor)
        out.append(ToConn(c.id, with_list(encode_frame("registered", {
            **reg, "rooms": self._public_rooms()}), "presence", presence)))
        key = self.directory.get(node_id)
        if key is not None and hmac.compare_digest(key, node.public_key):
            att = issue_attestation(self.identity, node_id, node.public_key,
                                    wall + ATTEST_TTL_MS)
            out.append(ToConn(c.id, encode_frame("attestation", att)))
        self._announce(node.entry(), now, exclude=node_id)
        return out

    # --- presence -------------------------------------------------------------------------

    def _announce(self, entry: dict[str, Any], now: int, *, exclude: str) -> None:
        """Note ``entry`` in the directory and queue it for every other registered
        node's next presence batch (past ``presence_push_max`` nodes, counting this one:
        for the nodes that share a room with it): one frame per changed node, at most
        one batch per ``presence_batch_ms``."""
        node_id = entry["node_id"]
        size = len(self.dir) + (node_id not in self.dir)
        if entry.get("status") == "offline" and node_id in self._nodes:
            wire = encode_entry(entry)  # a silent instance held a node that is ours now
        else:
            wire = self.dir.put(entry)
        if size <= self.limits.presence_push_max:
            conns: Any = self._conns.values()
        else:
            conns = [self._conns.get(self._nodes[m].conn) for m in
                     sharers(node_id, [*self._rooms.values(), *self._other_rooms()])
                     if m in self._nodes]
        for c in conns:
            if c is not None and c.node is not None and c.node != exclude:
                self._queue(c, node_id, wire, now)

    def _queue(self, c: _Conn, node_id: str, wire: str, now: int) -> None:
        c.pending[node_id] = wire  # a newer word on a node replaces the older
        if c.flush_at is None:
            c.flush_at = max(now, c.last_flush + self.batch_ms)
            self._flushes.add(c.id, c.flush_at)

    def _room_joined(self, room: Room, node_id: str, now: int) -> None:
        """``node_id`` joined ``room``: past ``presence_push_max`` it and the room's
        other nodes learn of each other now (below it they already have)."""
        if len(self.dir) <= self.limits.presence_push_max:
            return
        peers = (room.members | {room.host}) - {node_id}
        entry, joiner = self.dir.entries.get(node_id), self._nodes.get(node_id)
        for m in sorted(peers):
            n, e = self._nodes.get(m), self.dir.entries.get(m)
            if entry is not None and n is not None and (c := self._conns.get(n.conn)):
                self._queue(c, node_id, encode_entry(entry), now)
            if e is not None and joiner is not None and (c := self._conns.get(joiner.conn)):
                self._queue(c, m, encode_entry(e), now)

    def _flush(self, c: _Conn, now: int) -> list[Output]:
        frames: list[Output] = [ToConn(c.id, presence_frame(e)) for e in c.pending.values()]
        c.pending.clear()
        c.flush_at = None
        c.last_flush = now
        return frames

    def _leave(self, n: _Node, now: int) -> list[Output]:
        """``n`` left the lobby: its hosted rooms close, it leaves its rooms."""
        out: list[Output] = []
        del self._nodes[n.node_id]
        # Before its rooms go: past presence_push_max the room peers are who hear it.
        self._announce({**n.entry(), "status": "offline"}, now, exclude=n.node_id)
        for room in [r for r in self._rooms.values() if r.host == n.node_id]:
            out += self._close_room(room)
        for room in self._rooms.values():
            if n.node_id in room.members:
                room.members.discard(n.node_id)
                out += self._room_changed(room)
        return out + self._left(n, now)

    # --- what a lobby of several instances adds (``lobby_cluster.ClusteredLobby``) ---------

    def _registered(self, node: _Node, now: int) -> list[Output]:
        """``node`` registered here (it gets the directory next)."""
        return []

    def _left(self, node: _Node, now: int) -> list[Output]:
        return []

    def _node_changed(self, node: _Node) -> list[Output]:
        return []

    def _room_changed(self, room: Room) -> list[Output]:
        return []

    def _room_closing(self, room: Room) -> list[Output]:
        """``room`` closes: what its members elsewhere should hear."""
        return []

    def _elsewhere(self, c: _Conn, n: _Node, f: dict[str, Any]) -> list[Output]:
        """A frame about a node or room this instance does not hold."""
        raise RemoteProtocolError("no_room" if "roomId" in f else "not_found",
                                  "no such room" if "roomId" in f else "no such node here")

    def _other_rooms(self) -> list[Room]:
        """Rooms hosted on the other instances (listed, and shared for signaling)."""
        return []

    def _host_name(self, node_id: str) -> str:
        host = self._nodes.get(node_id)
        return host.node_name if host else ""

    # --- rooms ----------------------------------------------------------------------------

    def _public_rooms(self) -> list[dict[str, Any]]:
        return [self._room_view(r) for r in [*self._rooms.values(), *self._other_rooms()]
                if r.visibility == "public"]

    def _room_view(self, r: Room) -> dict[str, Any]:
        return {"id": r.id, "name": r.name, "host": r.host,
                "host_name": self._host_name(r.host), "members": len(r.members),
                "visibility": r.visibility, "joinPolicy": r.policy,
                "locked": r.policy == "token"}

    def _close_room(self, room: Room) -> list[Output]:
        self._rooms.pop(room.id, None)
        frame = encode_frame("room_closed", {"roomId": room.id})
        return [ToConn(self._nodes[m].conn, frame) for m in sorted(room.members)
                if m in self._nodes] + self._room_closing(room)

    def _room(self, frame: dict[str, Any]) -> Room | None:
        return self._rooms.get(frame["roomId"]) if type(frame["roomId"]) is str else None


# --- handlers of a registered node's frames -----------------------------------------------


def _h_presence(s: LobbyServer, c: _Conn, n: _Node, f: dict[str, Any]) -> list[Output]:
    fields(f, ("status", "capabilities"))
    status = text(f["status"], "status", min_chars=1, max_chars=32)
    caps = check_capabilities(f["capabilities"], s.limits.capabilities)
    if status != n.status or caps != n.capabilities:
        n.status, n.capabilities = status, list(caps)
        s._announce(n.entry(), c.last_seen, exclude=n.node_id)
        return s._node_changed(n)
    return []


def _h_list_rooms(s: LobbyServer, c: _Conn, n: _Node, f: dict[str, Any]) -> list[Output]:
    fields(f, ())
    return [ToConn(c.id, encode_frame("rooms", {"rooms": s._public_rooms()}))]


def _h_list_nodes(s: LobbyServer, c: _Conn, n: _Node, f: dict[str, Any]) -> list[Output]:
    cursor, limit = parse_list_nodes(f)
    page, after = s.dir.page(cursor, limit)
    return [ToConn(c.id, with_list(encode_frame("nodes", {"cursor": after}), "nodes", page))]


def _h_create_room(s: LobbyServer, c: _Conn, n: _Node, f: dict[str, Any]) -> list[Output]:
    name, visibility, policy, digest = parse_create_room(f)
    if sum(1 for r in s._rooms.values() if r.host == n.node_id) >= s.limits.rooms_per_host:
        raise RemoteProtocolError("full", f"at most {s.limits.rooms_per_host} rooms per host")
    room = Room(s.rng(16).hex(), name, n.node_id, visibility, policy, digest)
    s._rooms[room.id] = room
    return [ToConn(c.id, encode_frame("room_created", {"room": s._room_view(room)})),
            *s._room_changed(room)]


def _h_join_room(s: LobbyServer, c: _Conn, n: _Node, f: dict[str, Any]) -> list[Output]:
    fields(f, ("roomId",), ("token",))
    room = s._room(f)
    if room is None:
        return s._elsewhere(c, n, f)
    admit(room, n.node_id, n.public_key, f.get("token"), s.directory,
          s.limits.members_per_room)
    host = s._nodes[room.host]
    room.members.add(n.node_id)
    s._room_joined(room, n.node_id, c.last_seen)
    return [ToConn(c.id, encode_frame("room_info", {"roomId": room.id, "host": host.card()})),
            ToConn(host.conn, encode_frame("peer_joining", {"roomId": room.id,
                                                            "guest": n.card()})),
            *s._room_changed(room)]


def _h_leave_room(s: LobbyServer, c: _Conn, n: _Node, f: dict[str, Any]) -> list[Output]:
    fields(f, ("roomId",))
    room = s._room(f)
    if room is None:
        return s._elsewhere(c, n, f)
    if room.host == n.node_id:
        return s._close_room(room) + [ToConn(c.id, encode_frame("room_closed",
                                                                {"roomId": room.id}))]
    if n.node_id not in room.members:
        raise RemoteProtocolError("not_found", "not a member of that room")
    room.members.discard(n.node_id)
    return [ToConn(c.id, encode_frame("room_closed", {"roomId": room.id})),
            *s._room_changed(room)]


def _shares_room(s: LobbyServer, a: str, b: str) -> bool:
    return any({a, b} <= (r.members | {r.host})
               for r in [*s._rooms.values(), *s._other_rooms()])


def _h_signal(s: LobbyServer, c: _Conn, n: _Node, f: dict[str, Any]) -> list[Output]:
    fields(f, ("to", "sid", "kind", "sdp"))
    to = f["to"]
    text(f["sid"], "sid", min_chars=1, max_chars=64)
    if f["kind"] not in SIGNAL_KINDS:
        raise RemoteProtocolError("bad_request", "kind is offer, answer or bye")
    text(f["sdp"], "sdp", max_chars=MAX_SDP)
    if not is_node_id(to):
        raise RemoteProtocolError("not_found", "no such node here")
    target = s._nodes.get(to)
    if target is None:
        return s._elsewhere(c, n, f)  # another instance's node, or not_found
    if not _shares_room(s, n.node_id, to):
        raise RemoteProtocolError("denied", "signaling is between members of one room")
    return [ToConn(target.conn, encode_frame("signal", {"from": n.node_id, "sid": f["sid"],
                                                        "kind": f["kind"], "sdp": f["sdp"]}))]


def _h_relay(s: LobbyServer, c: _Conn, n: _Node, f: dict[str, Any]) -> list[Output]:
    """The lobby's bundled relay, live only: /relay-ws (hd_protocol.brokers.relay) stores and
    forwards; here an envelope goes to a registered node or gets ``not_found``."""
    fields(f, ("to", "envelope"))
    relayed = check_relayed(f["envelope"], n.node_id, f["to"])
    target = s._nodes.get(f["to"])
    if target is None:
        return s._elsewhere(c, n, {**f, "envelope": relayed})
    return [ToConn(target.conn, encode_frame("relay", {"from": n.node_id,
                                                       "envelope": relayed}))]


_HANDLERS = {
    "presence": _h_presence, "list_rooms": _h_list_rooms, "list_nodes": _h_list_nodes,
    "create_room": _h_create_room,
    "join_room": _h_join_room, "leave_room": _h_leave_room, "signal": _h_signal,
    "relay": _h_relay,
}
_REFUSALS = frozenset({"no_room", "full", "not_found"})
_SENDABLE = frozenset({"bad_frame", "unregistered", "auth", "no_room", "denied", "full",
                       "not_found", "rate_limited", "too_large", "bad_request"})
