"""The node's side of a lobby connection (SPEC 7): register, heartbeat, rooms, signals.

Feed it the lobby's frames (``receive``) and the time (``on_timer`` at
``next_deadline``); it answers with frames to send (``Send``) and tells what happened
(the events below). What the lobby says about other nodes is checked before the shell
sees it: a card's node id must be the id of its key, and its addresses must be well
formed candidates — the handshake will pin that id and key anyway, so a lying lobby can
at worst make a join fail, never make a node trust the wrong key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..effects import Send
from ..errors import LocalProtocolError, RemoteProtocolError
from ..identity import Identity, is_node_id, node_id_for
from ..limits import DEFAULT_LIMITS, Limits
from ..peer.admission import verify_attestation
from ..peer.candidates import check_candidate
from .frames import decode_frame, encode_frame, parse_challenge, register_bytes


@dataclass(frozen=True, slots=True)
class Card:
    """A room peer as the lobby describes it (its node id checked against its key)."""

    node_id: str
    public_key: str
    node_name: str
    addresses: tuple[dict[str, Any], ...] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Registered:
    """``directory``: the whole directory, or (``more``) its first page of
    ``directory_size`` nodes, the rest to page with ``list_nodes`` from ``cursor``."""

    session: str
    heartbeat_s: int
    directory: tuple[dict[str, Any], ...] = field(hash=False)
    rooms: tuple[dict[str, Any], ...] = field(hash=False)
    directory_size: int | None = None
    more: bool = False
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class DirectoryUpdate:
    entry: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class NodesPage:
    """A page of the directory (``list_nodes``); ``cursor`` None: the last page."""

    nodes: tuple[dict[str, Any], ...] = field(hash=False)
    cursor: str | None


@dataclass(frozen=True, slots=True)
class Rooms:
    rooms: tuple[dict[str, Any], ...] = field(hash=False)


@dataclass(frozen=True, slots=True)
class RoomCreated:
    room: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room_id: str
    host: Card


@dataclass(frozen=True, slots=True)
class PeerJoining:
    room_id: str
    guest: Card


@dataclass(frozen=True, slots=True)
class RoomClosed:
    room_id: str


@dataclass(frozen=True, slots=True)
class Signal:
    peer: str
    sid: str
    kind: str
    sdp: str


@dataclass(frozen=True, slots=True)
class Relayed:
    peer: str
    envelope: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Attestation:
    attest: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class LobbyError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """A frame from the lobby broke a rule: ignored (and counted by the shell)."""

    code: str
    message: str


Event = (Registered | DirectoryUpdate | NodesPage | Rooms | RoomCreated | RoomInfo | PeerJoining
         | RoomClosed | Signal | Relayed | Attestation | LobbyError | Dropped)
Output = Send | Event


class LobbyClient:
    def __init__(self, identity: Identity, *, node_name: str,
                 addresses: Sequence[dict[str, Any]], capabilities: Sequence[str],
                 pinned_key: str | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self.identity = identity
        self.node_name = node_name
        self.addresses = list(addresses)
        self.capabilities = list(capabilities)
        self.pinned_key = pinned_key
        self.limits = limits
        self.server_key: str | None = None
        self.registered: Registered | None = None
        self.status = "online"
        self.directory: dict[str, dict[str, Any]] = {}
        self._heartbeat_at: int | None = None

    # --- time -----------------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        return self._heartbeat_at

    def on_timer(self, now: int) -> list[Output]:
        if self._heartbeat_at is None or now < self._heartbeat_at or self.registered is None:
            return []
        self._heartbeat_at = now + self.registered.heartbeat_s * 1000
        return [self._frame("presence", {"status": self.status,
                                         "capabilities": self.capabilities})]

    # --- commands -------------------------------------------------------------------------

    def list_rooms(self) -> Send:
        return self._frame("list_rooms", {})

    def list_nodes(self, cursor: str | None = None, limit: int | None = None) -> Send:
        body: dict[str, Any] = {}
        if cursor is not None:
            body["cursor"] = cursor
        if limit is not None:
            body["limit"] = limit
        return self._frame("list_nodes", body)

    def create_room(self, name: str, visibility: str, policy: str,
                    token: str | None = None) -> Send:
        body: dict[str, Any] = {"name": name, "visibility": visibility, "joinPolicy": policy}
        if token is not None:
            body["token"] = token
        return self._frame("create_room", body)

    def join_room(self, room_id: str, token: str | None = None) -> Send:
        body: dict[str, Any] = {"roomId": room_id}
        if token is not None:
            body["token"] = token
        return self._frame("join_room", body)

    def leave_room(self, room_id: str) -> Send:
        return self._frame("leave_room", {"roomId": room_id})

    def signal(self, to: str, sid: str, kind: str, sdp: str) -> Send:
        return self._frame("signal", {"to": to, "sid": sid, "kind": kind, "sdp": sdp})

    def _frame(self, type_: str, body: dict[str, Any]) -> Send:
        if self.registered is None and type_ != "register":
            raise LocalProtocolError("unregistered", "not registered with the lobby yet")
        return Send(encode_frame(type_, body))

    # --- frames in ------------------------------------------------------------------------

    def receive(self, raw: str | bytes, now: int) -> list[Output]:
        try:
            frame = decode_frame(raw, self.limits.max_envelope_bytes + 4096)
            return self._on(frame, now)
        except RemoteProtocolError as exc:
            return [Dropped(exc.code, exc.message)]

    def _on(self, f: dict[str, Any], now: int) -> list[Output]:
        t = f["type"]
        if t == "challenge":
            if self.server_key is not None:
                raise RemoteProtocolError("bad_frame", "a second challenge")
            hello = parse_challenge(f, self.pinned_key)
            self.server_key = hello.server_key
            signed = register_bytes(hello.nonce, hello.server_id, self.identity.node_id,
                                    self.identity.public_key, self.node_name,
                                    self.addresses, self.capabilities)
            return [Send(encode_frame("register", {
                "node_id": self.identity.node_id, "public_key": self.identity.public_key,
                "node_name": self.node_name, "addresses": self.addresses,
                "capabilities": self.capabilities, "sig": self.identity.sign(signed)}))]
        if t == "error":
            return [LobbyError(str(f.get("code", "")), str(f.get("message", "")))]
        if self.server_key is None:
            raise RemoteProtocolError("bad_frame", f"{t} before the challenge")
        if t == "registered":
            hb = f.get("heartbeat_s")
            if type(hb) is not int or not 1 <= hb <= 3600:
                raise RemoteProtocolError("bad_frame", "heartbeat_s is 1..3600")
            self.directory = {e["node_id"]: e for e in _entries(f.get("presence"))}
            size, more, cursor = f.get("directory_size"), f.get("more"), f.get("cursor")
            self.registered = Registered(str(f.get("session", "")), hb,
                                         tuple(self.directory.values()),
                                         tuple(_list(f.get("rooms"))),
                                         size if type(size) is int and size >= 0 else None,
                                         more is True, cursor if type(cursor) is str else None)
            self._heartbeat_at = now + hb * 1000
            return [self.registered]
        if self.registered is None:
            raise RemoteProtocolError("bad_frame", f"{t} before registered")
        return self._on_registered(t, f)

    def _on_registered(self, t: str, f: dict[str, Any]) -> list[Output]:
        if t == "presence":
            (entry,) = _entries([f.get("node")]) or (None,)
            if entry is None:
                raise RemoteProtocolError("bad_frame", "presence without a valid node")
            if entry.get("status") == "offline":
                self.directory.pop(entry["node_id"], None)
            else:
                self.directory[entry["node_id"]] = entry
            return [DirectoryUpdate(entry)]
        if t == "rooms":
            return [Rooms(tuple(_list(f.get("rooms"))))]
        if t == "nodes":
            cursor = f.get("cursor")
            if cursor is not None and type(cursor) is not str:
                raise RemoteProtocolError("bad_frame", "a nodes cursor is a string or null")
            page = _entries(f.get("nodes"))
            for e in page:
                if e.get("status") != "offline":
                    self.directory[e["node_id"]] = e
            return [NodesPage(tuple(page), cursor)]
        if t == "room_created" and isinstance(f.get("room"), dict):
            return [RoomCreated(f["room"])]
        if t in ("room_info", "peer_joining"):
            room_id = f.get("roomId")
            card = _card(f.get("host" if t == "room_info" else "guest"))
            if type(room_id) is not str:
                raise RemoteProtocolError("bad_frame", "roomId is a string")
            return [RoomInfo(room_id, card) if t == "room_info" else PeerJoining(room_id, card)]
        if t == "room_closed" and type(f.get("roomId")) is str:
            return [RoomClosed(f["roomId"])]
        if t == "signal":
            peer, sid, kind, sdp = (f.get(k) for k in ("from", "sid", "kind", "sdp"))
            if not is_node_id(peer) or not all(type(x) is str for x in (sid, kind, sdp)):
                raise RemoteProtocolError("bad_frame", "a malformed signal")
            return [Signal(str(peer), str(sid), str(kind), str(sdp))]
        if t == "relay" and is_node_id(f.get("from")) and isinstance(f.get("envelope"), dict):
            return [Relayed(f["from"], f["envelope"])]
        if t == "attestation":
            att = {"cert": f.get("cert"), "sig": f.get("sig")}
            assert self.server_key is not None
            # Ours, by this lobby: what we would present to others. Its expiry is the
            # receiver's to check against its wall clock (this machine has none).
            if not verify_attestation(att, self.server_key, self.identity.node_id,
                                      self.identity.public_key, 0):
                raise RemoteProtocolError("bad_frame", "an attestation that is not ours")
            return [Attestation(att)]
        raise RemoteProtocolError("bad_frame", f"unexpected {t}")


def _list(value: object) -> list[dict[str, Any]]:
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def _entries(value: object) -> list[dict[str, Any]]:
    """Directory entries whose node id is the id of their key."""
    out = []
    for e in _list(value):
        try:
            key = e.get("public_key")
            if (is_node_id(e.get("node_id")) and type(key) is str
                    and node_id_for(key) == e["node_id"]):
                out.append(e)
        except RemoteProtocolError:
            continue
    return out


def _card(value: object) -> Card:
    if not isinstance(value, dict):
        raise RemoteProtocolError("bad_frame", "a node card is an object")
    node_id, key, name = value.get("node_id"), value.get("public_key"), value.get("node_name")
    try:
        ok = (is_node_id(node_id) and type(key) is str and node_id_for(key) == node_id
              and type(name) is str)
    except RemoteProtocolError:
        ok = False
    if not ok:
        raise RemoteProtocolError("bad_frame", "a card's node id is not the id of its key")
    addrs = []
    for a in _list(value.get("addresses"))[:DEFAULT_LIMITS.addresses]:
        try:
            check_candidate(a)
        except RemoteProtocolError:
            continue
        addrs.append(a)
    return Card(str(node_id), str(key), str(name), tuple(addrs))
