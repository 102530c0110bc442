"""The node's side of a lobby connection (SPEC 7): ``LobbyClient``, driven in memory.

Most tests run a real ``LobbyServer`` and pass frames through plain lists, so what the
client builds is what the lobby accepts; the rest hand the client frames a lying or
broken lobby could send. Time is an int the test moves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from hd_protocol import Identity, LocalProtocolError, verify_attestation
from hd_protocol.brokers.frames import challenge, encode_frame
from hd_protocol.brokers.lobby import LobbyServer
from hd_protocol.brokers.lobby_client import (
    Attestation,
    Card,
    DirectoryUpdate,
    Dropped,
    LobbyClient,
    LobbyError,
    PeerJoining,
    Registered,
    Relayed,
    RoomClosed,
    RoomCreated,
    RoomInfo,
    Rooms,
    Signal,
)
from hd_protocol.brokers.relay import CloseConn, ToConn
from hd_protocol.effects import Send
from hd_protocol.peer.admission import issue_attestation
from hd_protocol.peer.candidates import make_candidate

T0 = 5_000
WALL = 1_764_000_000_000


def DeterministicRng(seed: str) -> Callable[[int], bytes]:  # noqa: N802 - reads as a type
    counter = iter(range(1 << 62))

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()
        return out[:n]

    return rng


def ident(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(f"lobby-client-test/{name}".encode()).digest())


LOBBY = ident("lobby")
IMPOSTOR = ident("impostor")
GOOD = make_candidate("host", "ws://10.0.0.1:9000/peer-ws")
RELAY = make_candidate("relay", "wss://relay.example/relay-ws", 10)


def client(who: Identity, **kw: Any) -> LobbyClient:
    args: dict[str, Any] = {"node_name": f"name of {who.node_id[:4]}",
                            "addresses": [GOOD, RELAY], "capabilities": ["chat"]}
    args.update(kw)
    return LobbyClient(who, **args)


class Wire:
    """A lobby and some clients joined by lists; ``events[conn]`` is what each client
    reported (everything but ``Send``, which goes to the lobby)."""

    def __init__(self, **kw: Any) -> None:
        self.server = LobbyServer(LOBBY, rng=DeterministicRng("lobby"), **kw)
        self.clients: dict[int, LobbyClient] = {}
        self.events: dict[int, list[object]] = {}
        self.closed: set[int] = set()

    def to_clients(self, outs: list[ToConn | CloseConn], now: int) -> None:
        for o in outs:
            if isinstance(o, CloseConn):
                self.closed.add(o.conn)
            elif o.conn not in self.closed:
                for r in self.clients[o.conn].receive(o.frame, now):
                    if isinstance(r, Send):
                        self.to_server(o.conn, r, now)
                    else:
                        self.events[o.conn].append(r)

    def to_server(self, conn: int, send: Send, now: int) -> None:
        self.to_clients(self.server.receive(conn, send.wire, now, WALL), now)

    def join(self, conn: int, c: LobbyClient, now: int = T0) -> LobbyClient:
        self.clients[conn], self.events[conn] = c, []
        self.to_clients(self.server.connect(conn, now), now)
        return c

    def tick(self, now: int) -> None:
        self.to_clients(self.server.on_timer(now, WALL), now)

    def take(self, conn: int) -> list[object]:
        out, self.events[conn] = self.events[conn], []
        return out


def registered(who: Identity, *, heartbeat_s: int = 15, **kw: Any) -> LobbyClient:
    """A client that took a challenge and a ``registered`` (hand-made frames)."""
    c = client(who, **kw)
    (reg,) = c.receive(challenge(LOBBY, b"\x01" * 32), T0)
    assert isinstance(reg, Send)
    (ev,) = c.receive(encode_frame("registered", {"session": "s", "heartbeat_s": heartbeat_s,
                                                  "presence": [], "rooms": []}), T0)
    assert isinstance(ev, Registered)
    return c


def entry(who: Identity, status: str = "online", **over: Any) -> dict[str, Any]:
    return {"node_id": who.node_id, "public_key": who.public_key, "node_name": "x",
            "capabilities": [], "status": status, **over}


def card(who: Identity, addresses: Any = None, **over: Any) -> dict[str, Any]:
    return {"node_id": who.node_id, "public_key": who.public_key, "node_name": "x",
            "addresses": [GOOD] if addresses is None else addresses, **over}


# --- the challenge -------------------------------------------------------------------------


def test_a_challenge_is_answered_with_a_register_the_lobby_accepts(alice: Identity) -> None:
    w = Wire()
    c = w.join(1, client(alice))
    (ev,) = w.take(1)
    assert isinstance(ev, Registered) and ev.heartbeat_s == 15
    assert c.registered == ev and c.server_key == LOBBY.public_key
    assert w.server.node(alice.node_id) is not None


def test_the_register_carries_what_the_node_says_of_itself(alice: Identity) -> None:
    c = client(alice, node_name="Alice", addresses=[GOOD], capabilities=["chat", "agent"])
    (reg,) = c.receive(challenge(LOBBY, b"\x02" * 32), T0)
    assert isinstance(reg, Send)
    f = json.loads(reg.wire)
    assert {k: v for k, v in f.items() if k != "sig"} == {
        "type": "register", "node_id": alice.node_id, "public_key": alice.public_key,
        "node_name": "Alice", "addresses": [GOOD], "capabilities": ["chat", "agent"]}


def test_a_challenge_whose_server_id_is_not_the_id_of_its_key_is_refused(
    alice: Identity,
) -> None:
    c = client(alice)
    forged = json.loads(challenge(LOBBY, b"\x03" * 32))
    forged["server_id"] = IMPOSTOR.node_id
    assert c.receive(json.dumps(forged), T0) == [
        Dropped("auth", "server_id is not the id of server_key")]
    assert c.server_key is None
    late = encode_frame("registered", {"session": "s", "heartbeat_s": 15, "presence": [],
                                       "rooms": []})
    (ev,) = c.receive(late, T0)  # nothing counts before a good challenge
    assert isinstance(ev, Dropped) and c.registered is None


@pytest.mark.parametrize("mutate", [
    lambda f: f.update(server_key="AAAA"),
    lambda f: f.update(nonce="c2hvcnQ="),
    lambda f: f.pop("nonce"),
    lambda f: f.update(extra=1),
], ids=["key not a key", "short nonce", "no nonce", "extra member"])
def test_a_malformed_challenge_is_dropped_without_an_answer(
    alice: Identity, mutate: Callable[[dict[str, Any]], None]
) -> None:
    c = client(alice)
    f = json.loads(challenge(LOBBY, b"\x03" * 32))
    mutate(f)
    (ev,) = c.receive(json.dumps(f), T0)
    assert isinstance(ev, Dropped) and c.server_key is None


def test_a_pinned_lobby_key_refuses_any_other_lobby(alice: Identity) -> None:
    c = client(alice, pinned_key=LOBBY.public_key)
    assert c.receive(challenge(IMPOSTOR, b"\x04" * 32), T0) == [
        Dropped("auth", "the server is not the one we know")]
    assert c.server_key is None
    (reg,) = c.receive(challenge(LOBBY, b"\x04" * 32), T0)
    assert isinstance(reg, Send) and c.server_key == LOBBY.public_key


def test_a_register_for_one_lobby_is_useless_at_another(alice: Identity) -> None:
    w = Wire()
    c = client(alice)
    (reg,) = c.receive(challenge(IMPOSTOR, w.server.rng(32)), T0)
    assert isinstance(reg, Send)
    w.clients[1], w.events[1] = c, []
    w.server.connect(1, T0)
    out = w.server.receive(1, reg.wire, T0, WALL)
    assert [json.loads(o.frame)["code"] for o in out if isinstance(o, ToConn)] == ["auth"]


# --- heartbeats ----------------------------------------------------------------------------


def test_heartbeats_follow_heartbeat_s_from_registered(alice: Identity) -> None:
    c = client(alice, capabilities=["chat"])
    assert c.next_deadline() is None and c.on_timer(T0 + 10**9) == []
    c.receive(challenge(LOBBY, b"\x05" * 32), T0)
    assert c.next_deadline() is None  # not registered yet: nothing to keep alive
    c.receive(encode_frame("registered", {"session": "s", "heartbeat_s": 7, "presence": [],
                                          "rooms": []}), T0)
    assert c.next_deadline() == T0 + 7_000
    assert c.on_timer(T0 + 6_999) == []
    (hb,) = c.on_timer(T0 + 7_000)
    assert isinstance(hb, Send)
    assert json.loads(hb.wire) == {"type": "presence", "status": "online",
                                   "capabilities": ["chat"]}
    assert c.next_deadline() == T0 + 14_000
    c.status = "busy"
    late = T0 + 14_500  # a late timer: the next one counts from when it fired
    (hb,) = c.on_timer(late)
    assert json.loads(hb.wire)["status"] == "busy"  # type: ignore[union-attr]
    assert c.next_deadline() == late + 7_000


def test_heartbeats_keep_a_node_registered_past_three_intervals(alice: Identity,
                                                                bob: Identity) -> None:
    w = Wire()
    a = w.join(1, client(alice))
    w.join(2, client(bob))
    t = T0
    while t < T0 + 10 * 45_000:
        t = a.next_deadline() or 0
        for s in a.on_timer(t):
            assert isinstance(s, Send)
            w.to_server(1, s, t)
        w.tick(t)
    assert 1 not in w.closed and 2 in w.closed  # bob's client was never ticked


@pytest.mark.parametrize("hb", [0, 3601, "15", None, True])
def test_a_registered_with_a_bad_heartbeat_is_dropped(alice: Identity, hb: object) -> None:
    c = client(alice)
    c.receive(challenge(LOBBY, b"\x06" * 32), T0)
    (ev,) = c.receive(encode_frame("registered", {"session": "s", "heartbeat_s": hb,
                                                  "presence": [], "rooms": []}), T0)
    assert isinstance(ev, Dropped) and c.registered is None and c.next_deadline() is None


# --- commands --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    lambda c: c.list_rooms(), lambda c: c.create_room("r", "public", "open"),
    lambda c: c.join_room("r"), lambda c: c.leave_room("r"),
    lambda c: c.signal("a" * 16, "s", "offer", ""),
], ids=["list_rooms", "create_room", "join_room", "leave_room", "signal"])
def test_commands_before_registration_are_a_local_error(
    alice: Identity, command: Callable[[LobbyClient], Send]
) -> None:
    c = client(alice)
    c.receive(challenge(LOBBY, b"\x07" * 32), T0)  # challenged, not yet registered
    with pytest.raises(LocalProtocolError) as err:
        command(c)
    assert err.value.code == "unregistered"


def test_commands_build_the_frames_of_spec_7(alice: Identity, bob: Identity) -> None:
    c = registered(alice)
    assert json.loads(c.list_rooms().wire) == {"type": "list_rooms"}
    assert json.loads(c.create_room("r", "unlisted", "token", "t").wire) == {
        "type": "create_room", "name": "r", "visibility": "unlisted", "joinPolicy": "token",
        "token": "t"}
    assert "token" not in json.loads(c.create_room("r", "public", "open").wire)
    assert json.loads(c.join_room("id", "t").wire) == {"type": "join_room", "roomId": "id",
                                                       "token": "t"}
    assert json.loads(c.join_room("id").wire) == {"type": "join_room", "roomId": "id"}
    assert json.loads(c.leave_room("id").wire) == {"type": "leave_room", "roomId": "id"}
    assert json.loads(c.signal(bob.node_id, "s", "offer", "sdp").wire) == {
        "type": "signal", "to": bob.node_id, "sid": "s", "kind": "offer", "sdp": "sdp"}


# --- events, end to end through a real lobby ------------------------------------------------


def test_every_lobby_frame_becomes_its_event(alice: Identity, bob: Identity) -> None:
    w = Wire(directory={bob.node_id: bob.public_key})
    a = w.join(1, client(alice, node_name="alice"))
    (reg_a,) = w.take(1)
    assert isinstance(reg_a, Registered) and reg_a.directory == ()
    b = w.join(2, client(bob, node_name="bob"))
    reg_b, att = w.take(2)
    assert isinstance(reg_b, Registered)
    assert [e["node_id"] for e in reg_b.directory] == [alice.node_id]
    assert isinstance(att, Attestation)
    assert verify_attestation(att.attest, LOBBY.public_key, bob.node_id, bob.public_key, WALL)

    w.tick(T0)
    (upd,) = w.take(1)
    assert isinstance(upd, DirectoryUpdate) and upd.entry["node_id"] == bob.node_id
    assert set(a.directory) == {bob.node_id}

    w.to_server(1, a.create_room("den", "public", "open"), T0)
    (created,) = w.take(1)
    assert isinstance(created, RoomCreated) and created.room["name"] == "den"
    room = created.room["id"]

    w.to_server(2, b.list_rooms(), T0)
    (rooms,) = w.take(2)
    assert isinstance(rooms, Rooms) and [r["id"] for r in rooms.rooms] == [room]

    w.to_server(2, b.join_room(room), T0)
    (info,) = w.take(2)
    (joining,) = w.take(1)
    assert info == RoomInfo(room, Card(alice.node_id, alice.public_key, "alice",
                                       (GOOD, RELAY)))
    assert joining == PeerJoining(room, Card(bob.node_id, bob.public_key, "bob",
                                             (GOOD, RELAY)))

    w.to_server(2, b.signal(alice.node_id, "sid1", "offer", "v=0"), T0)
    assert w.take(1) == [Signal(bob.node_id, "sid1", "offer", "v=0")]

    w.to_server(2, b.join_room("f" * 32), T0)
    assert w.take(2) == [LobbyError("no_room", "no such room")]

    w.to_server(1, a.leave_room(room), T0)
    assert w.take(2) == [RoomClosed(room)] and w.take(1) == [RoomClosed(room)]

    w.server.disconnect(2, T0 + 300)
    w.tick(T0 + 300)
    (gone,) = w.take(1)
    assert isinstance(gone, DirectoryUpdate) and gone.entry["status"] == "offline"
    assert a.directory == {}


def test_a_relayed_envelope_becomes_relayed(alice: Identity, bob: Identity) -> None:
    c = registered(alice)
    e = {"v": 1, "type": "x"}
    assert c.receive(encode_frame("relay", {"from": bob.node_id, "envelope": e}), T0) == [
        Relayed(bob.node_id, e)]
    (ev,) = c.receive(encode_frame("relay", {"from": "nobody", "envelope": e}), T0)
    assert isinstance(ev, Dropped)


def test_an_error_from_the_lobby_is_reported_even_before_registering(alice: Identity) -> None:
    c = client(alice)
    assert c.receive(encode_frame("error", {"code": "rate_limited", "message": "slow"}),
                     T0) == [LobbyError("rate_limited", "slow")]


# --- what a lying or broken lobby could say ------------------------------------------------


def test_a_card_whose_node_id_is_not_the_id_of_its_key_is_dropped(
    alice: Identity, bob: Identity
) -> None:
    c = registered(alice)
    for kind, member in (("room_info", "host"), ("peer_joining", "guest")):
        forged = card(bob, public_key=alice.public_key)  # bob's id, alice's key
        (ev,) = c.receive(encode_frame(kind, {"roomId": "r", member: forged}), T0)
        assert ev == Dropped("bad_frame", "a card's node id is not the id of its key")
        for bad in (card(bob, public_key="AAAA"), card(bob, node_name=5), "card",
                    card(bob, node_id="NOTANID")):
            (ev,) = c.receive(encode_frame(kind, {"roomId": "r", member: bad}), T0)
            assert isinstance(ev, Dropped), bad
        (ev,) = c.receive(encode_frame(kind, {"roomId": 5, member: card(bob)}), T0)
        assert isinstance(ev, Dropped)


def test_malformed_candidate_addresses_in_a_card_are_filtered_out(
    alice: Identity, bob: Identity
) -> None:
    c = registered(alice)
    junk: list[Any] = [
        "ws://10.0.0.9/peer-ws",
        {"type": "host", "url": "http://10.0.0.9/peer-ws", "priority": 1},
        {"type": "carrier-pigeon", "url": "ws://10.0.0.9/peer-ws", "priority": 1},
        {"type": "host", "url": "ws://10.0.0.9/peer-ws", "priority": -1},
        {"type": "host", "url": "ws://10.0.0.9/peer-ws", "priority": 2**32},
        {"type": "host", "url": "ws://10.0.0.9/peer-ws"},
        {**GOOD, "extra": 1},
        {"type": "host", "url": "ws://" + "h" * 600, "priority": 1},
    ]
    (ev,) = c.receive(encode_frame("room_info", {"roomId": "r", "host": card(
        bob, [junk[0], GOOD, *junk[1:], RELAY])}), T0)
    assert ev == RoomInfo("r", Card(bob.node_id, bob.public_key, "x", (GOOD, RELAY)))
    (ev,) = c.receive(encode_frame("peer_joining", {"roomId": "r", "guest": card(
        bob, addresses="not a list")}), T0)
    assert isinstance(ev, PeerJoining) and ev.guest.addresses == ()


def test_a_card_keeps_at_most_the_address_limit(alice: Identity, bob: Identity) -> None:
    c = registered(alice)
    many = [make_candidate("host", f"ws://10.0.1.{i}/peer-ws") for i in range(40)]
    (ev,) = c.receive(encode_frame("room_info", {"roomId": "r", "host": card(bob, many)}), T0)
    assert isinstance(ev, RoomInfo) and ev.host.addresses == tuple(many[:16])


def test_directory_entries_whose_id_is_not_their_key_are_dropped(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    c = client(alice)
    c.receive(challenge(LOBBY, b"\x08" * 32), T0)
    (reg,) = c.receive(encode_frame("registered", {
        "session": "s", "heartbeat_s": 15, "rooms": [],
        "presence": [entry(bob), entry(carol, public_key=bob.public_key), "junk",
                     entry(carol, node_id="x")]}), T0)
    assert isinstance(reg, Registered) and set(c.directory) == {bob.node_id}
    (ev,) = c.receive(encode_frame("presence", {"node": entry(carol,
                                                              public_key=alice.public_key)}),
                      T0)
    assert isinstance(ev, Dropped) and set(c.directory) == {bob.node_id}
    (ev,) = c.receive(encode_frame("presence", {"node": entry(carol)}), T0)
    assert isinstance(ev, DirectoryUpdate) and set(c.directory) == {bob.node_id,
                                                                    carol.node_id}
    (ev,) = c.receive(encode_frame("presence", {"node": entry(bob, "offline")}), T0)
    assert isinstance(ev, DirectoryUpdate) and set(c.directory) == {carol.node_id}


@pytest.mark.parametrize("frame", [
    {"type": "signal", "from": "nobody", "sid": "s", "kind": "offer", "sdp": ""},
    {"type": "signal", "from": "a" * 16, "sid": 1, "kind": "offer", "sdp": ""},
    {"type": "room_created", "room": "r"},
    {"type": "room_closed", "roomId": None},
    {"type": "attestation", "cert": "c"},
    {"type": "presence"},
    {"type": "surprise"},
], ids=lambda f: f["type"])
def test_malformed_or_unknown_lobby_frames_are_dropped(alice: Identity,
                                                       frame: dict[str, Any]) -> None:
    c = registered(alice)
    (ev,) = c.receive(json.dumps(frame), T0)
    assert isinstance(ev, Dropped) and ev.code == "bad_frame"


@pytest.mark.parametrize("raw", ["", "{", "[1]", '{"type": 3}', '{"type": "x", "f": 1.5}'])
def test_undecodable_lobby_frames_are_dropped(alice: Identity, raw: str) -> None:
    (ev,) = registered(alice).receive(raw, T0)
    assert isinstance(ev, Dropped)


def test_frames_before_registered_are_dropped(alice: Identity, bob: Identity) -> None:
    c = client(alice)
    (ev,) = c.receive(encode_frame("room_closed", {"roomId": "r"}), T0)
    assert isinstance(ev, Dropped)  # before the challenge
    c.receive(challenge(LOBBY, b"\x09" * 32), T0)
    (ev,) = c.receive(encode_frame("presence", {"node": entry(bob)}), T0)
    assert isinstance(ev, Dropped) and c.directory == {}  # before registered


def test_a_second_challenge_is_dropped_and_signs_nothing(alice: Identity) -> None:
    c = registered(alice)
    (ev,) = c.receive(challenge(LOBBY, b"\x09" * 32), T0)
    assert isinstance(ev, Dropped) and ev.code == "bad_frame"
    assert c.registered is not None


def test_only_an_attestation_of_this_node_by_this_lobby_is_taken(
        alice: Identity, bob: Identity) -> None:
    c = registered(alice)
    good = issue_attestation(LOBBY, alice.node_id, alice.public_key, WALL + 1000)
    for bad in (issue_attestation(bob, alice.node_id, alice.public_key, WALL + 1000),
                issue_attestation(LOBBY, bob.node_id, bob.public_key, WALL + 1000),
                {**good, "sig": good["sig"][::-1]}, {"cert": good["cert"]}):
        (ev,) = c.receive(encode_frame("attestation", bad), T0)
        assert isinstance(ev, Dropped) and ev.code == "bad_frame", bad
    (ev,) = c.receive(encode_frame("attestation", good), T0)
    assert isinstance(ev, Attestation) and ev.attest == good
