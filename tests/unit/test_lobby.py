"""The lobby (SPEC 7.1-7.6) as one sans-IO machine, driven in memory.

Every node talks to the ``LobbyServer`` through plain lists: what the server returns as
``ToConn`` lands in that connection's inbox, ``CloseConn`` marks it closed, and the
nodes' frames are built by ``LobbyClient`` (or by hand, to break a rule on purpose).
Time is an int the test moves: ``now`` for timers, ``WALL`` only dates attestations.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol import (
    Identity,
    encode_envelope,
    make_envelope,
    sign_envelope,
    verify_attestation,
    verify_envelope,
)
from hd_protocol.brokers.frames import encode_frame, register_bytes
from hd_protocol.brokers.lobby import (
    ATTEST_TTL_MS,
    BAD_FRAMES_BEFORE_CLOSE,
    HEARTBEAT_S,
    MISSED_HEARTBEATS,
    PRESENCE_BATCH_MS,
    LobbyServer,
)
from hd_protocol.brokers.lobby_client import LobbyClient
from hd_protocol.brokers.relay import CloseConn, ToConn
from hd_protocol.effects import Send
from hd_protocol.envelope import envelope_from_obj
from hd_protocol.limits import DEFAULT_LIMITS, Limits
from hd_protocol.peer.candidates import make_candidate

T0 = 1_000  # monotonic ms
WALL = 1_764_000_000_000  # Unix ms: far from T0 on purpose
EXPIRY_MS = MISSED_HEARTBEATS * HEARTBEAT_S * 1000


def DeterministicRng(seed: str) -> Callable[[int], bytes]:  # noqa: N802 - reads as a type
    """``rng(n)``: a SHA-256 stream, so every run draws the same bytes."""
    counter = iter(range(1 << 62))

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()
        return out[:n]

    return rng


def ident(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(f"lobby-test/{name}".encode()).digest())


LOBBY = ident("the lobby")
OTHER_LOBBY = ident("another lobby")


def addrs(port: int) -> list[dict[str, Any]]:
    return [make_candidate("host", f"ws://127.0.0.1:{port}/peer-ws"),
            make_candidate("relay", "ws://127.0.0.1:7000/relay-ws", 100)]


class Net:
    """A lobby and its connections: inboxes of raw frames, closed connections."""

    def __init__(self, server: LobbyServer) -> None:
        self.server = server
        self.inbox: dict[int, list[str]] = defaultdict(list)
        self.closed: dict[int, CloseConn] = {}
        self.clients: dict[int, LobbyClient] = {}
        self.arrivals: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)

    def run(self, outs: list[ToConn | CloseConn], now: int) -> list[ToConn | CloseConn]:
        for o in outs:
            if isinstance(o, ToConn):
                assert o.conn not in self.closed, f"a frame after closing {o.conn}"
                self.inbox[o.conn].append(o.frame)
                self.arrivals[o.conn].append((now, json.loads(o.frame)))
            else:
                self.closed[o.conn] = o
        return outs

    def connect(self, conn: int, now: int = T0) -> str:
        (chal,) = self.run(self.server.connect(conn, now), now)
        assert isinstance(chal, ToConn)
        self.inbox[conn].clear()
        return chal.frame

    def send(self, conn: int, frame: str | dict[str, Any], now: int = T0,
             ) -> list[ToConn | CloseConn]:
        raw = frame if isinstance(frame, str) else json.dumps(frame)
        return self.run(self.server.receive(conn, raw, now, WALL), now)

    def tick(self, now: int) -> list[ToConn | CloseConn]:
        return self.run(self.server.on_timer(now, WALL), now)

    def take(self, conn: int) -> list[dict[str, Any]]:
        out = [json.loads(f) for f in self.inbox[conn]]
        self.inbox[conn].clear()
        return out

    def disconnect(self, conn: int, now: int = T0) -> list[ToConn | CloseConn]:
        return self.run(self.server.disconnect(conn, now), now)

    def register(self, conn: int, who: Identity, now: int = T0, *, name: str = "",
                 addresses: list[dict[str, Any]] | None = None,
                 capabilities: tuple[str, ...] = ("chat",)) -> LobbyClient:
        """Connect, answer the challenge with the client's register, feed the answers
        back to the client; the registration must succeed."""
        client = LobbyClient(who, node_name=name or f"node {conn}",
                             addresses=addrs(9000 + conn) if addresses is None else addresses,
                             capabilities=capabilities)
        chal = self.connect(conn, now)
        (reg,) = client.receive(chal, now)
        assert isinstance(reg, Send)
        self.send(conn, reg.wire, now)
        frames = self.inbox[conn][:]
        assert json.loads(frames[0])["type"] == "registered", frames
        for f in frames:
            client.receive(f, now)
        self.clients[conn] = client
        return client


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


def errors(frames: list[dict[str, Any]]) -> list[str]:
    assert all(f["type"] == "error" for f in frames), frames
    return [f["code"] for f in frames]


def lobby(**kw: Any) -> Net:
    return Net(LobbyServer(LOBBY, rng=DeterministicRng("lobby"), **kw))


def register_frame(who: Identity, chal: str, *, sign_as: Identity | None = None,
                   server_id: str | None = None, **over: Any) -> str:
    """A register for the challenge ``chal``, fields overridable, signed over exactly
    what it carries (so only the overridden rule is broken)."""
    c = json.loads(chal)
    body: dict[str, Any] = {"node_id": who.node_id, "public_key": who.public_key,
                            "node_name": "n", "addresses": addrs(9100),
                            "capabilities": ["chat"]}
    body.update(over)
    try:
        signed = register_bytes(c["nonce"], server_id or c["server_id"], body["node_id"],
                                body["public_key"], body["node_name"], body["addresses"],
                                body["capabilities"])
        sig = (sign_as or who).sign(signed)
    except Exception:  # a field that cannot even be signed: any signature will do
        sig = who.sign(b"x")
    return encode_frame("register", {**body, "sig": sig})


# --- registration (SPEC 7.1) -----------------------------------------------------------


def test_the_challenge_carries_a_fresh_nonce_and_the_lobby_id_and_key() -> None:
    net = lobby()
    a, b = json.loads(net.connect(1)), json.loads(net.connect(2))
    assert a["type"] == "challenge" and a["server_id"] == LOBBY.node_id
    assert a["server_key"] == LOBBY.public_key
    assert a["nonce"] != b["nonce"] and len(a["nonce"]) == 44  # 32 bytes in base64


def test_a_clients_register_from_the_challenge_is_accepted(alice: Identity) -> None:
    net = lobby()
    client = net.register(1, alice, name="alice")
    (reg,) = net.take(1)
    assert reg["type"] == "registered" and reg["heartbeat_s"] == HEARTBEAT_S
    assert reg["presence"] == [] and reg["rooms"] == []
    assert isinstance(reg["session"], str) and reg["session"]
    assert client.registered is not None
    assert net.server.registered == 1
    assert net.server.node(alice.node_id) == {
        "node_id": alice.node_id, "public_key": alice.public_key, "node_name": "alice",
        "capabilities": ["chat"], "status": "online", "listed": False}
    assert 1 not in net.closed


def test_the_registered_frame_lists_the_others_and_the_public_rooms_only(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    net = lobby()
    net.register(1, alice, name="alice")
    net.send(1, {"type": "create_room", "name": "pub", "visibility": "public",
                 "joinPolicy": "open"})
    net.send(1, {"type": "create_room", "name": "hidden", "visibility": "unlisted",
                 "joinPolicy": "open"})
    net.register(2, bob, name="bob")
    net.register(3, carol)
    (reg,) = net.take(3)
    assert sorted(e["node_id"] for e in reg["presence"]) == sorted([alice.node_id,
                                                                    bob.node_id])
    assert [r["name"] for r in reg["rooms"]] == ["pub"]


def test_a_register_replayed_on_another_connection_is_refused_and_closed(
    alice: Identity,
) -> None:
    net = lobby()
    client = LobbyClient(alice, node_name="alice", addresses=addrs(1), capabilities=[])
    (reg,) = client.receive(net.connect(1), T0)
    assert isinstance(reg, Send)
    net.send(1, reg.wire)
    assert types(net.take(1)) == ["registered"]
    net.connect(2)  # another nonce
    out = net.send(2, reg.wire)
    assert errors(net.take(2)) == ["auth"]
    assert 2 in net.closed and net.closed[2].code == 1008
    assert out[-1] == net.closed[2]  # the error goes out before the close
    assert 1 not in net.closed and net.server.node(alice.node_id) is not None


def test_a_register_signed_for_another_lobby_is_refused(alice: Identity) -> None:
    net = lobby()
    chal = net.connect(1)
    net.send(1, register_frame(alice, chal, server_id=OTHER_LOBBY.node_id))
    assert errors(net.take(1)) == ["auth"] and 1 in net.closed


def test_a_register_whose_node_id_is_not_the_id_of_its_key_is_auth(
    alice: Identity, bob: Identity
) -> None:
    net = lobby()
    chal = net.connect(1)
    # alice's key, bob's id, signed by alice over exactly that: still not bob.
    net.send(1, register_frame(alice, chal, node_id=bob.node_id))
    assert errors(net.take(1)) == ["auth"] and 1 in net.closed
    assert net.server.registered == 0


@pytest.mark.parametrize("how", ["other signer", "tampered name", "not base64", "no string",
                                 "key not a key", "id not a string"])
def test_a_register_with_a_bad_proof_is_auth_and_closes(
    alice: Identity, bob: Identity, how: str
) -> None:
    net = lobby()
    chal = net.connect(1)
    frame = json.loads(register_frame(alice, chal, sign_as=bob if how == "other signer"
                                      else None))
    if how == "tampered name":
        frame["node_name"] = "mallory"
    elif how == "not base64":
        frame["sig"] = "!!!!"
    elif how == "no string":
        frame["sig"] = 7
    elif how == "key not a key":
        frame["public_key"] = "AAAA"
    elif how == "id not a string":
        frame["node_id"] = ["x"]
    net.send(1, frame)
    assert errors(net.take(1)) == ["auth"] and 1 in net.closed
    assert net.server.registered == 0


BAD_REGISTER_FIELDS: dict[str, dict[str, Any]] = {
    "addresses not a list": {"addresses": {"a": 1}},
    "17 addresses": {"addresses": [make_candidate("host", f"ws://10.0.0.{i}:1/peer-ws")
                                   for i in range(17)]},
    "address not ws": {"addresses": [make_candidate("host", "http://10.0.0.1/peer-ws")]},
    "address of unknown type": {"addresses": [{"type": "mdns", "url": "ws://h/peer-ws",
                                               "priority": 1}]},
    "address with an extra member": {"addresses": [{**make_candidate("host", "ws://h/p"),
                                                    "x": 1}]},
    "address priority out of range": {"addresses": [{"type": "host", "url": "ws://h/p",
                                                     "priority": -1}]},
    "capabilities not a list": {"capabilities": "chat"},
    "33 capabilities": {"capabilities": [f"c{i}" for i in range(33)]},
    "empty capability": {"capabilities": [""]},
    "long capability": {"capabilities": ["c" * 65]},
    "capability not a string": {"capabilities": [1]},
    "name too long": {"node_name": "n" * 65},
    "name not a string": {"node_name": 5},
}


@pytest.mark.parametrize("over", BAD_REGISTER_FIELDS.values(), ids=BAD_REGISTER_FIELDS.keys())
def test_a_register_with_bad_addresses_capabilities_or_name_is_a_bad_request(
    alice: Identity, over: dict[str, Any]
) -> None:
    net = lobby()
    chal = net.connect(1)
    net.send(1, register_frame(alice, chal, **over))
    assert errors(net.take(1)) == ["bad_request"]
    assert 1 not in net.closed and net.server.registered == 0  # it may try again
    net.send(1, register_frame(alice, chal))
    assert types(net.take(1)) == ["registered"]


def test_the_register_limits_themselves_are_accepted(alice: Identity) -> None:
    net = lobby()
    chal = net.connect(1)
    net.send(1, register_frame(
        alice, chal, node_name="n" * 64, capabilities=[f"{i:064d}" for i in range(32)],
        addresses=[make_candidate("host", f"ws://10.0.0.{i}:1/peer-ws") for i in range(16)]))
    assert types(net.take(1)) == ["registered"]


@pytest.mark.parametrize("frame", [{"type": "register"}, {"type": "register", "node_id": "x",
                                                          "public_key": "k", "node_name": "",
                                                          "addresses": [], "capabilities": [],
                                                          "sig": "s", "extra": 1}],
                         ids=["missing fields", "extra field"])
def test_a_register_without_exactly_its_fields_is_a_bad_request(frame: dict[str, Any]) -> None:
    net = lobby()
    net.connect(1)
    net.send(1, frame)
    assert errors(net.take(1)) == ["bad_request"]


@pytest.mark.parametrize("frame", [
    {"type": "list_rooms"},
    {"type": "create_room", "name": "r", "visibility": "public", "joinPolicy": "open"},
    {"type": "presence", "status": "online", "capabilities": []},
    {"type": "join_room", "roomId": "x"},
    {"type": "relay", "to": "a" * 16, "envelope": {}},
    {"type": "nonsense"},
], ids=lambda f: f["type"])
def test_nothing_but_register_before_registering(frame: dict[str, Any]) -> None:
    net = lobby()
    net.connect(1)
    net.send(1, frame)
    assert errors(net.take(1)) == ["unregistered"]
    assert 1 not in net.closed


def test_a_registered_node_cannot_register_again_on_the_same_connection(
    alice: Identity,
) -> None:
    net = lobby()
    net.register(1, alice)
    net.take(1)
    (chal,) = net.server.connect(99, T0)
    assert isinstance(chal, ToConn)
    net.send(1, register_frame(alice, chal.frame))  # a valid register, for another conn
    assert errors(net.take(1)) == ["bad_request"]


def test_a_second_registration_replaces_the_old_connection_and_keeps_the_rooms(
    alice: Identity, bob: Identity
) -> None:
    net = lobby()
    net.register(1, alice)
    net.send(1, {"type": "create_room", "name": "r", "visibility": "public",
                 "joinPolicy": "open"})
    room = net.take(1)[-1]["room"]["id"]
    net.register(2, bob)
    net.send(2, {"type": "join_room", "roomId": room})
    net.take(1), net.take(2)

    net.register(3, alice, now=T0 + 10)  # alice again, on a new connection
    assert errors(net.take(1)) == ["replaced"] and 1 in net.closed
    assert 3 not in net.closed
    # The node kept its room and its member; what goes to alice goes to the new one.
    (listed,) = net.send(2, {"type": "list_rooms"})
    assert isinstance(listed, ToConn)
    (r,) = json.loads(listed.frame)["rooms"]
    assert r["id"] == room and r["host"] == alice.node_id and r["members"] == 1
    net.send(2, {"type": "signal", "to": alice.node_id, "sid": "s", "kind": "offer",
                 "sdp": "v=0"})
    assert types(net.take(3)) == ["registered", "signal"] and net.take(1) == []
    # Until the shell reports it gone, the old connection neither acts for the node nor
    # hears presence (Net refuses frames to a closed connection).
    assert net.send(1, {"type": "leave_room", "roomId": room}, T0 + 15) == []
    net.send(2, {"type": "presence", "status": "busy", "capabilities": []}, T0 + 15)
    net.tick(T0 + 15)
    assert [f["node"]["status"] for f in net.take(3)] == ["busy"]

    # The old connection's late disconnect (and its old deadline) change nothing.
    assert net.disconnect(1, T0 + 20) == []
    assert net.server.node(alice.node_id) is not None and net.server.rooms == 1
    assert net.send(1, {"type": "list_rooms"}) == []  # it is gone for the lobby
    net.send(3, {"type": "list_rooms"}, T0 + EXPIRY_MS - 5)
    net.send(2, {"type": "list_rooms"}, T0 + EXPIRY_MS - 5)
    net.tick(T0 + EXPIRY_MS)
    assert 3 not in net.closed and net.server.rooms == 1
    assert [f["type"] for f in net.take(2) if f["type"] == "room_closed"] == []


def test_the_old_connection_of_a_replaced_node_does_not_expire_the_new_one(
    alice: Identity, bob: Identity
) -> None:
    net = lobby()
    net.register(1, alice)
    net.send(1, {"type": "create_room", "name": "r", "visibility": "public",
                 "joinPolicy": "open"})
    net.register(2, alice, now=T0 + EXPIRY_MS // 2)
    net.tick(T0 + EXPIRY_MS)  # conn 1's deadline: nothing to expire
    assert 2 not in net.closed and net.server.rooms == 1
    net.tick(T0 + EXPIRY_MS // 2 + EXPIRY_MS)  # conn 2's own deadline: now it expires
    assert 2 in net.closed and net.server.rooms == 0


# --- presence (SPEC 7.2) -----------------------------------------------------------------


def test_a_new_node_is_announced_to_the_others_as_presence_without_addresses(
    alice: Identity, bob: Identity
) -> None:
    net = lobby()
    net.register(1, alice, capabilities=("chat", "agent"))
    net.take(1)
    net.register(2, bob, name="bob", capabilities=("chat",))
    assert net.take(1) == []  # batched: it goes out on the timer
    assert net.server.next_deadline() == T0
    net.tick(T0)
    (p,) = net.take(1)
    assert p == {"type": "presence", "node": {
        "node_id": bob.node_id, "public_key": bob.public_key, "node_name": "bob",
        "capabilities": ["chat"], "status": "online", "listed": False}}
    assert [f for f in net.take(2) if f["type"] == "presence"] == []  # not to itself


def test_directory_entries_never_carry_addresses(alice: Identity, bob: Identity) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob)
    net.tick(T0)
    net.send(2, {"type": "presence", "status": "busy", "capabilities": []}, T0 + 300)
    net.tick(T0 + 300)
    net.disconnect(2, T0 + 600)
    net.tick(T0 + 600)
    entries = [f["node"] for f in net.take(1) if f["type"] == "presence"]
    entries += json.loads(net.inbox[2][0])["presence"] if net.inbox[2] else []
    assert [e["status"] for e in entries] == ["online", "busy", "offline", "online"]
    for e in entries:
        assert set(e) == {"node_id", "public_key", "node_name", "capabilities", "status",
                          "listed"}
    assert "addresses" not in json.dumps(net.arrivals[1]) + json.dumps(net.arrivals[2])


def test_changes_within_the_batch_window_reach_each_subscriber_as_one_batch(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob)
    net.take(1)
    net.tick(T0)  # alice hears of bob at once: her first batch
    assert [f["node"]["node_id"] for f in net.take(1)] == [bob.node_id]
    dave, eve = ident("dave"), ident("eve")
    # Within the next 250 ms: carol and dave come, bob changes twice, eve comes and goes.
    net.register(3, carol, now=T0 + 10)
    net.send(2, {"type": "presence", "status": "busy", "capabilities": ["chat"]}, T0 + 20)
    net.register(4, dave, now=T0 + 30)
    net.send(2, {"type": "presence", "status": "away", "capabilities": ["chat"]}, T0 + 40)
    net.register(5, eve, now=T0 + 50)
    net.disconnect(5, T0 + 60)
    for t in range(T0 + 10, T0 + PRESENCE_BATCH_MS, 10):
        net.tick(t)
    assert [f for f in net.take(1) if f["type"] == "presence"] == []
    net.tick(T0 + PRESENCE_BATCH_MS)
    batch = {f["node"]["node_id"]: f["node"]["status"] for f in net.take(1)}
    assert batch == {bob.node_id: "away", carol.node_id: "online", dave.node_id: "online",
                     eve.node_id: "offline"}
    # challenge, registered, the first batch, then one frame per changed node
    assert types([f for _, f in net.arrivals[1]]) == ["challenge", "registered"] + [
        "presence"] * 5


def test_one_change_costs_one_frame_per_other_node(alice: Identity) -> None:
    net = lobby()
    nodes = [ident(f"n{i}") for i in range(20)]
    for i, who in enumerate(nodes):
        net.register(i + 1, who, now=T0 + i)
    net.tick(T0 + 10_000)
    before = {c: len(a) for c, a in net.arrivals.items()}
    net.send(1, {"type": "presence", "status": "busy", "capabilities": []}, T0 + 20_000)
    net.send(1, {"type": "presence", "status": "away", "capabilities": []}, T0 + 20_001)
    net.tick(T0 + 20_001)
    net.tick(T0 + 20_300)
    after = [f for c, arr in net.arrivals.items() for _, f in arr[before.get(c, 0):]]
    assert len(after) == len(nodes) - 1
    assert {f["node"]["status"] for f in after} == {"away"}


def test_a_presence_that_changes_nothing_is_not_announced(
    alice: Identity, bob: Identity
) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob, capabilities=("chat",))
    net.tick(T0)
    net.take(1)
    net.send(2, {"type": "presence", "status": "online", "capabilities": ["chat"]}, T0 + 500)
    net.tick(T0 + 500)
    assert net.take(1) == [] and net.server.next_deadline() == T0 + EXPIRY_MS


@pytest.mark.parametrize("frame", [
    {"type": "presence", "status": "", "capabilities": []},
    {"type": "presence", "status": "s" * 33, "capabilities": []},
    {"type": "presence", "status": "online", "capabilities": [""]},
    {"type": "presence", "status": "online", "capabilities": ["c"] * 33},
    {"type": "presence", "status": "online"},
])
def test_a_malformed_presence_is_a_bad_request_and_changes_nothing(
    alice: Identity, bob: Identity, frame: dict[str, Any]
) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob)
    net.tick(T0)
    net.take(1), net.take(2)
    net.send(2, frame, T0 + 500)
    assert errors(net.take(2)) == ["bad_request"]
    net.tick(T0 + 500)
    assert net.take(1) == []
    assert net.server.node(bob.node_id)["status"] == "online"  # type: ignore[index]


OPS = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 5),
                         st.sampled_from(["register", "status", "leave"])),
               min_size=5, max_size=40)


@settings(max_examples=100, deadline=None)
@given(ops=OPS)
def test_presence_batches_are_250ms_apart_one_frame_per_node_and_converge(
    ops: list[tuple[int, int, str]],
) -> None:
    """For any schedule of arrivals, status changes and departures: each subscriber gets
    at most one batch per 250 ms, no node twice in a batch, and in the end every
    client's directory is exactly the lobby's (everyone registered but itself)."""
    nodes = [ident(f"p{i}") for i in range(6)]
    net = lobby()
    conn_of: dict[int, int] = {}
    next_conn = iter(range(1, 1000))
    now = T0

    def run_timers(until: int) -> None:
        while (dl := net.server.next_deadline()) is not None and dl <= until:
            net.tick(dl)
            for gone in [i for i, c in conn_of.items() if c in net.closed]:
                del conn_of[gone]

    for dt, i, op in ops:
        now += dt
        run_timers(now)
        if op == "register" and i not in conn_of:
            conn_of[i] = next(next_conn)
            net.register(conn_of[i], nodes[i], now)
        elif op == "status" and i in conn_of:
            status = ["online", "busy", "away"][now % 3]
            net.send(conn_of[i], {"type": "presence", "status": status,
                                  "capabilities": ["chat"]}, now)
        elif op == "leave" and i in conn_of:
            net.disconnect(conn_of.pop(i), now)
    run_timers(now + PRESENCE_BATCH_MS)

    for conn, client in net.clients.items():
        batches: dict[int, list[str]] = defaultdict(list)
        for t, f in net.arrivals[conn]:
            if f["type"] == "presence":
                batches[t].append(f["node"]["node_id"])
        times = sorted(batches)
        assert all(b - a >= PRESENCE_BATCH_MS for a, b in zip(times, times[1:], strict=False))
        assert all(len(ids) == len(set(ids)) for ids in batches.values())
        if conn in conn_of.values():
            for raw in net.inbox[conn]:
                client.receive(raw, now)
            net.inbox[conn].clear()
            expected = {n.node_id: net.server.node(n.node_id) for i, n in enumerate(nodes)
                        if i in conn_of and conn_of[i] != conn}
            assert client.directory == expected


def test_a_node_silent_for_three_heartbeats_expires_with_its_rooms(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob)
    net.register(3, carol)
    net.send(1, {"type": "create_room", "name": "alice's", "visibility": "public",
                 "joinPolicy": "open"})
    hosted = net.take(1)[-1]["room"]["id"]
    net.send(3, {"type": "create_room", "name": "carol's", "visibility": "public",
                 "joinPolicy": "open"})
    joined = net.take(3)[-1]["room"]["id"]
    net.send(2, {"type": "join_room", "roomId": hosted})
    net.send(1, {"type": "join_room", "roomId": joined})
    net.tick(T0)
    for c in (1, 2, 3):
        net.take(c)
    # bob and carol keep talking (their clients' heartbeats); alice says nothing.
    t = T0
    while t < T0 + EXPIRY_MS - 1:
        t = min(net.clients[2].next_deadline() or 0, T0 + EXPIRY_MS - 1)
        for c in (2, 3):
            for s in net.clients[c].on_timer(t):
                assert isinstance(s, Send)
                net.send(c, s.wire, t)
        net.tick(t)
    assert 1 not in net.closed and net.server.node(alice.node_id) is not None
    assert net.server.next_deadline() == T0 + EXPIRY_MS
    net.tick(T0 + EXPIRY_MS)
    assert 1 in net.closed and net.server.node(alice.node_id) is None
    assert 2 not in net.closed and 3 not in net.closed
    got2, got3 = net.take(2), net.take(3)
    assert {"type": "room_closed", "roomId": hosted} in got2
    assert [f for f in got3 if f["type"] == "room_closed"] == []
    net.tick(T0 + EXPIRY_MS + PRESENCE_BATCH_MS)
    for got in (got2 + net.take(2), got3 + net.take(3)):
        offline = [f["node"] for f in got if f["type"] == "presence"]
        assert [(e["node_id"], e["status"]) for e in offline] == [(alice.node_id, "offline")]
    (listed,) = net.send(3, {"type": "list_rooms"}, T0 + EXPIRY_MS + 300)
    rooms = json.loads(listed.frame)["rooms"]  # type: ignore[union-attr]
    assert [(r["id"], r["members"]) for r in rooms] == [(joined, 0)]  # alice left carol's


@pytest.mark.parametrize("frame", [{"type": "presence", "status": "online",
                                    "capabilities": []},
                                   {"type": "list_rooms"},
                                   "not even json"], ids=["heartbeat", "command", "bad frame"])
def test_any_frame_keeps_a_node_alive(alice: Identity, frame: str | dict[str, Any]) -> None:
    net = lobby()
    net.register(1, alice)
    t = T0
    for _ in range(10):
        t += EXPIRY_MS - 1
        net.tick(t)
        net.send(1, frame, t)
    assert 1 not in net.closed and net.server.node(alice.node_id) is not None
    net.tick(t + EXPIRY_MS)
    assert 1 in net.closed


def test_an_unregistered_connection_also_expires() -> None:
    net = lobby()
    net.connect(1)
    assert net.server.next_deadline() == T0 + EXPIRY_MS
    net.tick(T0 + EXPIRY_MS)
    assert 1 in net.closed and net.server.next_deadline() is None


# --- rooms (SPEC 7.3) --------------------------------------------------------------------


def create(net: Net, conn: int, name: str = "room", visibility: str = "public",
           policy: str = "open", **extra: Any) -> dict[str, Any]:
    net.take(conn)  # what came before is not the answer
    net.send(conn, {"type": "create_room", "name": name, "visibility": visibility,
                    "joinPolicy": policy, **extra})
    (f,) = net.take(conn)
    assert f["type"] == "room_created", f
    room: dict[str, Any] = f["room"]
    return room


def test_create_room_answers_room_created_with_the_room(alice: Identity) -> None:
    net = lobby()
    net.register(1, alice, name="alice")
    net.take(1)
    room = create(net, 1, "den", "unlisted", "token", token="s3cret")
    assert room == {"id": room["id"], "name": "den", "host": alice.node_id,
                    "host_name": "alice", "members": 0, "visibility": "unlisted",
                    "joinPolicy": "token", "locked": True}
    assert len(room["id"]) >= 20  # >= 80 random bits in hex
    assert create(net, 1, "o")["locked"] is False
    assert room["id"] != create(net, 1, "p")["id"]


def test_list_rooms_lists_public_rooms_only(alice: Identity, bob: Identity) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob)
    pub = create(net, 1, "pub")
    create(net, 1, "hidden", "unlisted")
    tok = create(net, 2, "tok", "public", "token", token="t")
    net.send(2, {"type": "list_rooms"})
    (f,) = net.take(2)
    assert f["type"] == "rooms" and sorted(r["id"] for r in f["rooms"]) == sorted(
        [pub["id"], tok["id"]])


@pytest.mark.parametrize("frame", [
    {"name": "", "visibility": "public", "joinPolicy": "open"},
    {"name": "n" * 65, "visibility": "public", "joinPolicy": "open"},
    {"name": "r", "visibility": "secret", "joinPolicy": "open"},
    {"name": "r", "visibility": "public", "joinPolicy": "invite"},
    {"name": "r", "visibility": "public", "joinPolicy": "token"},
    {"name": "r", "visibility": "public", "joinPolicy": "token", "token": ""},
    {"name": "r", "visibility": "public", "joinPolicy": "open", "token": "t"},
    {"name": "r", "visibility": "public"},
    {"name": "r", "visibility": "public", "joinPolicy": "open", "extra": 1},
], ids=["empty name", "long name", "visibility", "policy", "token room without token",
        "empty token", "token on an open room", "missing field", "extra field"])
def test_a_malformed_create_room_is_a_bad_request(alice: Identity,
                                                  frame: dict[str, Any]) -> None:
    net = lobby()
    net.register(1, alice)
    net.take(1)
    net.send(1, {"type": "create_room", **frame})
    assert errors(net.take(1)) == ["bad_request"] and net.server.rooms == 0


def test_a_ninth_room_for_one_host_is_full(alice: Identity, bob: Identity) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob)
    net.take(1)
    for i in range(DEFAULT_LIMITS.rooms_per_host):
        create(net, 1, f"r{i}", "unlisted" if i % 2 else "public")
    net.send(1, {"type": "create_room", "name": "r9", "visibility": "public",
                 "joinPolicy": "open"})
    assert errors(net.take(1)) == ["full"]
    create(net, 2, "bob's")  # per host
    assert net.server.rooms == DEFAULT_LIMITS.rooms_per_host + 1


def test_join_sends_the_host_card_to_the_joiner_and_the_guest_card_to_the_host(
    alice: Identity, bob: Identity
) -> None:
    net = lobby()
    net.register(1, alice, name="alice", addresses=addrs(9001))
    net.register(2, bob, name="bob", addresses=addrs(9002))
    net.tick(T0)
    net.take(1), net.take(2)
    room = create(net, 1)
    out = net.send(2, {"type": "join_room", "roomId": room["id"]})
    assert [o.conn for o in out] == [2, 1]
    assert net.take(2) == [{"type": "room_info", "roomId": room["id"], "host": {
        "node_id": alice.node_id, "public_key": alice.public_key, "node_name": "alice",
        "addresses": addrs(9001)}}]
    assert net.take(1) == [{"type": "peer_joining", "roomId": room["id"], "guest": {
        "node_id": bob.node_id, "public_key": bob.public_key, "node_name": "bob",
        "addresses": addrs(9002)}}]
    net.send(2, {"type": "list_rooms"})
    assert net.take(2)[0]["rooms"][0]["members"] == 1


def test_joining_an_unknown_room_is_no_room_and_the_host_cannot_join_its_own(
    alice: Identity, bob: Identity
) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob)
    net.take(2)
    room = create(net, 1)
    for rid in ("0" * 32, 5, room["id"].upper()):
        net.send(2, {"type": "join_room", "roomId": rid})
        assert errors(net.take(2)) == ["no_room"]
    net.send(1, {"type": "join_room", "roomId": room["id"]})
    assert errors(net.take(1)) == ["bad_request"]


def test_a_token_room_needs_the_right_token(alice: Identity, bob: Identity) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob)
    net.take(1), net.take(2)
    room = create(net, 1, policy="token", token="open sesame")
    for extra in ({}, {"token": "open sesame!"}, {"token": ""}, {"token": 1}):
        net.send(2, {"type": "join_room", "roomId": room["id"], **extra})
        assert errors(net.take(2)) == ["denied"]
    assert net.take(1) == []  # the host hears of no failed attempt
    net.send(2, {"type": "join_room", "roomId": room["id"], "token": "open sesame"})
    assert types(net.take(2)) == ["room_info"] and types(net.take(1)) == ["peer_joining"]


def test_the_token_is_not_kept_in_the_clear(alice: Identity) -> None:
    net = lobby()
    net.register(1, alice)
    net.take(1)
    create(net, 1, policy="token", token="open sesame")
    (room,) = net.server._rooms.values()
    assert room.token_hash is not None and "open sesame" not in room.token_hash


def test_a_directory_room_admits_only_nodes_listed_with_their_key(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    dave = ident("dave")
    net = lobby(directory={bob.node_id: bob.public_key, carol.node_id: alice.public_key})
    net.register(1, alice)
    net.register(2, bob)
    net.register(3, carol)
    net.register(4, dave)
    for c in (1, 2, 3, 4):
        net.take(c)
    room = create(net, 1, policy="directory")
    net.send(3, {"type": "join_room", "roomId": room["id"]})  # listed with another key
    assert errors(net.take(3)) == ["denied"]
    net.send(4, {"type": "join_room", "roomId": room["id"]})  # not listed
    assert errors(net.take(4)) == ["denied"]
    net.send(2, {"type": "join_room", "roomId": room["id"], "token": "ignored"})
    assert types(net.take(2)) == ["room_info"]


def test_the_65th_member_is_full_but_a_member_may_join_again(alice: Identity) -> None:
    net = lobby()
    net.register(1, alice)
    net.take(1)
    room = create(net, 1, "big")
    members = DEFAULT_LIMITS.members_per_room
    for i in range(members):
        net.register(10 + i, ident(f"m{i}"))
        net.send(10 + i, {"type": "join_room", "roomId": room["id"]})
        assert types(net.take(10 + i))[-1] == "room_info"
    net.register(500, ident("one too many"))
    net.take(500)
    net.send(500, {"type": "join_room", "roomId": room["id"]})
    assert errors(net.take(500)) == ["full"]
    net.send(10, {"type": "join_room", "roomId": room["id"]})  # already in: fine
    assert types(net.take(10)) == ["room_info"]
    net.send(11, {"type": "leave_room", "roomId": room["id"]})
    net.send(500, {"type": "join_room", "roomId": room["id"]})
    assert types(net.take(500)) == ["room_info"]


def test_the_member_limit_is_configurable(alice: Identity, bob: Identity,
                                          carol: Identity) -> None:
    net = lobby(limits=replace(DEFAULT_LIMITS, members_per_room=1, rooms_per_host=1))
    net.register(1, alice)
    net.register(2, bob)
    net.register(3, carol)
    net.take(3)
    room = create(net, 1)
    net.send(1, {"type": "create_room", "name": "x", "visibility": "public",
                 "joinPolicy": "open"})
    assert errors(net.take(1)) == ["full"]
    net.send(2, {"type": "join_room", "roomId": room["id"]})
    net.send(3, {"type": "join_room", "roomId": room["id"]})
    assert errors(net.take(3)) == ["full"]


def test_a_member_leaves_and_the_host_leaving_closes_the_room(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob)
    net.register(3, carol)
    net.take(1)
    room = create(net, 1)
    for c in (2, 3):
        net.send(c, {"type": "join_room", "roomId": room["id"]})
    for c in (1, 2, 3):
        net.take(c)
    net.send(3, {"type": "leave_room", "roomId": room["id"]})
    assert net.take(3) == [{"type": "room_closed", "roomId": room["id"]}]
    assert net.take(1) == [] and net.take(2) == []
    net.send(3, {"type": "leave_room", "roomId": room["id"]})
    assert errors(net.take(3)) == ["not_found"]
    net.send(3, {"type": "leave_room", "roomId": "f" * 32})
    assert errors(net.take(3)) == ["no_room"]

    net.send(1, {"type": "leave_room", "roomId": room["id"]})
    assert net.take(2) == [{"type": "room_closed", "roomId": room["id"]}]
    assert net.take(1) == [{"type": "room_closed", "roomId": room["id"]}]
    assert net.take(3) == [] and net.server.rooms == 0
    net.send(2, {"type": "join_room", "roomId": room["id"]})
    assert errors(net.take(2)) == ["no_room"]


def test_a_host_that_disconnects_closes_its_rooms_for_their_members(
    alice: Identity, bob: Identity
) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob)
    net.take(1)
    rooms = [create(net, 1, f"r{i}") for i in range(3)]
    for r in rooms[:2]:
        net.send(2, {"type": "join_room", "roomId": r["id"]})
    net.take(2)
    net.disconnect(1, T0 + 5)
    assert sorted(f["roomId"] for f in net.take(2)) == sorted(r["id"] for r in rooms[:2])
    assert net.server.rooms == 0


# --- signaling and the lobby's live relay (SPEC 7.5) ---------------------------------------


def three_with_a_room(alice: Identity, bob: Identity, carol: Identity) -> tuple[Net, str]:
    """alice hosts a room bob joined; carol shares no room with anyone."""
    net = lobby()
    for c, who in ((1, alice), (2, bob), (3, carol)):
        net.register(c, who)
    net.take(1)
    room = create(net, 1)
    net.send(2, {"type": "join_room", "roomId": room["id"]})
    net.tick(T0)
    for c in (1, 2, 3):
        net.take(c)
    return net, room["id"]


def signal(to: str, kind: str = "offer", sdp: str = "v=0\r\n") -> dict[str, Any]:
    return {"type": "signal", "to": to, "sid": "s1", "kind": kind, "sdp": sdp}


def test_signals_pass_between_members_of_one_room(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    net, _ = three_with_a_room(alice, bob, carol)
    net.send(2, signal(alice.node_id))
    assert net.take(1) == [{"type": "signal", "from": bob.node_id, "sid": "s1",
                            "kind": "offer", "sdp": "v=0\r\n"}]
    net.send(1, signal(bob.node_id, "answer", "v=1"))
    assert net.take(2) == [{"type": "signal", "from": alice.node_id, "sid": "s1",
                            "kind": "answer", "sdp": "v=1"}]
    net.send(1, signal(bob.node_id, "bye", ""))
    assert types(net.take(2)) == ["signal"]


def test_two_guests_of_one_room_may_signal_each_other(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    net, room = three_with_a_room(alice, bob, carol)
    net.send(3, {"type": "join_room", "roomId": room})
    net.take(1), net.take(3)
    net.send(3, signal(bob.node_id))
    assert types(net.take(2)) == ["signal"]


def test_signals_to_a_node_sharing_no_room_are_denied_and_to_an_unknown_one_not_found(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    net, room = three_with_a_room(alice, bob, carol)
    net.send(3, signal(alice.node_id))
    assert errors(net.take(3)) == ["denied"] and net.take(1) == []
    net.send(1, signal(carol.node_id))
    assert errors(net.take(1)) == ["denied"] and net.take(3) == []
    for to in (ident("nobody").node_id, "not an id", 7):
        net.send(2, signal(to))  # type: ignore[arg-type]
        assert errors(net.take(2)) == ["not_found"]
    net.send(1, {"type": "leave_room", "roomId": room})  # the room closes: no more
    net.take(1), net.take(2)
    net.send(2, signal(alice.node_id))
    assert errors(net.take(2)) == ["denied"] and net.take(1) == []


@pytest.mark.parametrize("frame", [
    {"type": "signal", "to": "", "sid": "s", "kind": "call", "sdp": ""},
    {"type": "signal", "to": "", "sid": "", "kind": "offer", "sdp": ""},
    {"type": "signal", "to": "", "sid": "s" * 65, "kind": "offer", "sdp": ""},
    {"type": "signal", "to": "", "sid": "s", "kind": "offer", "sdp": "x" * (32 * 1024 + 1)},
    {"type": "signal", "to": "", "sid": "s", "kind": "offer"},
])
def test_a_malformed_signal_is_a_bad_request(
    alice: Identity, bob: Identity, carol: Identity, frame: dict[str, Any]
) -> None:
    net, _ = three_with_a_room(alice, bob, carol)
    net.send(2, {**frame, "to": alice.node_id})
    assert errors(net.take(2)) == ["bad_request"] and net.take(1) == []


def env(src: Identity, dst: str | None, *, ttl: int = 8, n: int = 0,
        signer: Identity | None = None) -> dict[str, Any]:
    e = make_envelope("peer_chat", msg_id=f"{n:032x}", src=src.node_id, dst=dst, ts=WALL,
                      data={"text": f"hello {n}"}, ttl=ttl)
    obj: dict[str, Any] = json.loads(encode_envelope(sign_envelope(e, signer or src)))
    return obj


def test_the_lobby_relays_a_good_envelope_live_with_ttl_lowered(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    net, _ = three_with_a_room(alice, bob, carol)
    e = env(carol, alice.node_id)  # no shared room needed for an opaque envelope
    net.send(3, {"type": "relay", "to": alice.node_id, "envelope": e})
    (f,) = net.take(1)
    assert f == {"type": "relay", "from": carol.node_id, "envelope": {**e, "ttl": 7}}
    assert net.take(3) == []
    assert verify_envelope(envelope_from_obj(f["envelope"]), carol.public_key)


def test_the_lobby_relay_refuses_spoofed_readdressed_spent_or_malformed_envelopes(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    net, _ = three_with_a_room(alice, bob, carol)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"to": alice.node_id, "envelope": env(bob, alice.node_id)}, "bad_request"),  # src
        ({"to": alice.node_id, "envelope": env(carol, bob.node_id)}, "bad_request"),  # dst
        ({"to": alice.node_id, "envelope": env(carol, None)}, "bad_request"),
        ({"to": alice.node_id, "envelope": env(carol, alice.node_id, ttl=0)}, "bad_request"),
        ({"to": "nobody", "envelope": env(carol, alice.node_id)}, "bad_request"),
        ({"to": alice.node_id, "envelope": {**env(carol, alice.node_id), "x": 1}},
         "bad_frame"),
        ({"to": alice.node_id, "envelope": {**env(carol, alice.node_id), "sig": "AA=="}},
         "bad_frame"),
        ({"to": alice.node_id, "envelope": "text"}, "bad_frame"),
        ({"to": alice.node_id}, "bad_request"),
        ({"to": ident("gone").node_id, "envelope": env(carol, ident("gone").node_id)},
         "not_found"),
    ]
    for body, code in cases:
        out = net.send(3, {"type": "relay", **body})
        assert [o.conn for o in out] == [3], body
        assert errors(net.take(3)) == [code], body
    assert net.take(1) == [] and net.take(2) == []


# --- rate limits and bad frames (SPEC 7, 11) ------------------------------------------------


def test_a_burst_over_the_rate_is_refused_then_closed_and_a_neighbour_is_unaffected(
    alice: Identity, bob: Identity
) -> None:
    net = lobby()
    net.register(1, alice)  # the register took one token
    net.register(2, bob)
    net.take(1), net.take(2)
    burst = DEFAULT_LIMITS.rate_burst
    for i in range(burst - 1):
        net.send(1, {"type": "list_rooms"})
        if i % 100 == 0:
            net.send(2, {"type": "list_rooms"})
    assert types(net.take(1)) == ["rooms"] * (burst - 1)
    for i in range(BAD_FRAMES_BEFORE_CLOSE):
        assert 1 not in net.closed, i
        net.send(1, {"type": "list_rooms"})
    assert errors(net.take(1)) == ["rate_limited"] * BAD_FRAMES_BEFORE_CLOSE
    assert 1 in net.closed and net.server.node(alice.node_id) is None
    assert net.send(1, {"type": "list_rooms"}) == []
    net.send(2, {"type": "list_rooms"})
    assert types(net.take(2)) == ["rooms"] * 3 and 2 not in net.closed


def test_the_bucket_refills_at_the_rate_and_holds_at_most_the_burst(alice: Identity) -> None:
    net = lobby()
    net.register(1, alice)
    net.take(1)
    rate, burst = DEFAULT_LIMITS.rate_per_s, DEFAULT_LIMITS.rate_burst
    for _ in range(burst - 1):
        net.send(1, {"type": "list_rooms"})
    net.send(1, {"type": "list_rooms"})
    assert types(net.take(1)) == ["rooms"] * (burst - 1) + ["error"]
    t = T0 + 1000 // rate  # one token back
    net.send(1, {"type": "list_rooms"}, t)
    net.send(1, {"type": "list_rooms"}, t)
    assert types(net.take(1)) == ["rooms", "error"]
    t += 1000  # a second later: `rate` more
    for _ in range(rate + 1):
        net.send(1, {"type": "list_rooms"}, t)
    assert types(net.take(1)) == ["rooms"] * rate + ["error"]
    t += 10_000  # ten seconds refill the burst, not more
    for _ in range(burst + 1):
        net.send(1, {"type": "list_rooms"}, t)
    got = types(net.take(1))
    assert got == ["rooms"] * burst + ["error"]
    assert 1 not in net.closed  # four bad frames so far


def test_a_thousand_malformed_frames_get_errors_then_a_close(
    alice: Identity, bob: Identity
) -> None:
    net = lobby()
    net.register(1, alice)
    net.register(2, bob)
    net.take(1)
    junk = ["", "{", "[]", "null", '{"type": 1}', '{"type": "X"}', '{"a": 1}', "1.5",
            '{"type": "list_rooms", "type": "list_rooms"}', '{"type": "list_rooms", "x": 1.0}']
    replies = []
    for i in range(1000):
        replies += net.send(1, junk[i % len(junk)], T0 + 20 * i)
        if i % 50 == 0:
            net.send(2, {"type": "list_rooms"}, T0 + 20 * i)
    frames = [json.loads(o.frame) for o in replies if isinstance(o, ToConn)]
    assert [f["code"] for f in frames] == ["bad_frame"] * BAD_FRAMES_BEFORE_CLOSE
    assert 1 in net.closed and net.closed[1].code == 1008
    assert types(net.take(2)).count("rooms") == 20 and 2 not in net.closed


def test_honest_refusals_never_close_but_guessing_tokens_does(alice: Identity,
                                                                bob: Identity) -> None:
    net = lobby(limits=replace(DEFAULT_LIMITS, members_per_room=0))
    net.register(1, alice)
    net.register(2, bob)
    full = create(net, 1)
    net.take(1), net.take(2)
    n = 3 * BAD_FRAMES_BEFORE_CLOSE
    for i in range(n):  # a closed room, a full one, a node that left: not held against bob
        frame = [{"type": "join_room", "roomId": "0" * 32},
                 {"type": "join_room", "roomId": full["id"]},
                 {"type": "signal", "to": "c" * 16, "sid": "s", "kind": "offer",
                  "sdp": ""}][i % 3]
        net.send(2, frame, T0 + 100 * i)
    assert errors(net.take(2)) == ["no_room", "full", "not_found"] * BAD_FRAMES_BEFORE_CLOSE
    assert 2 not in net.closed
    locked = create(net, 1, policy="token", token="open sesame")
    for i in range(BAD_FRAMES_BEFORE_CLOSE):
        net.send(2, {"type": "join_room", "roomId": locked["id"], "token": f"guess {i}"},
                 T0 + 100 * (n + i))
    assert errors(net.take(2)) == ["denied"] * BAD_FRAMES_BEFORE_CLOSE
    assert net.closed[2].code == 1008


def test_a_frame_over_64_kib_is_too_large(alice: Identity) -> None:
    net = lobby()
    net.register(1, alice)
    net.take(1)
    limit = DEFAULT_LIMITS.max_lobby_frame_bytes
    pad = '{"type":"list_rooms","p":"' + "x" * limit + '"}'
    net.send(1, pad)
    assert errors(net.take(1)) == ["too_large"]
    ok = encode_frame("signal", {"to": alice.node_id, "sid": "s", "kind": "offer",
                                 "sdp": "é" * 10})
    assert len(ok.encode()) < limit
    net.send(1, ok)  # bytes are what count: a small frame passes the size check
    assert errors(net.take(1)) == ["denied"]
    big = '{"type":"list_rooms","p":"' + "é" * (limit // 2) + '"}'  # < limit chars
    assert len(big) < limit < len(big.encode())
    net.send(1, big)
    assert errors(net.take(1)) == ["too_large"]


def test_an_unknown_frame_type_is_a_bad_request(alice: Identity) -> None:
    net = lobby()
    net.register(1, alice)
    net.take(1)
    net.send(1, {"type": "teleport"})
    assert errors(net.take(1)) == ["bad_request"]


def test_frames_for_an_unknown_connection_are_ignored() -> None:
    net = lobby()
    assert net.send(42, {"type": "list_rooms"}) == []
    assert net.disconnect(42) == []


# --- directory attestations (SPEC 7.6) -----------------------------------------------------


def test_a_node_on_the_directory_list_gets_an_attestation_after_registering(
    alice: Identity,
) -> None:
    net = lobby(directory={alice.node_id: alice.public_key})
    client = net.register(1, alice)
    reg, att = net.take(1)
    assert reg["type"] == "registered" and att["type"] == "attestation"
    attest = {"cert": att["cert"], "sig": att["sig"]}
    assert att["cert"] == {"node_id": alice.node_id, "public_key": alice.public_key,
                           "issuer": LOBBY.node_id, "exp": WALL + ATTEST_TTL_MS}
    assert verify_attestation(attest, LOBBY.public_key, alice.node_id, alice.public_key, WALL)
    assert not verify_attestation(attest, OTHER_LOBBY.public_key, alice.node_id,
                                  alice.public_key, WALL)
    assert not verify_attestation(attest, LOBBY.public_key, alice.node_id, alice.public_key,
                                  WALL + ATTEST_TTL_MS)
    assert client.registered is not None


def test_a_node_not_listed_or_listed_with_another_key_gets_no_attestation(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    net = lobby(directory={bob.node_id: carol.public_key, carol.node_id: carol.public_key})
    net.register(1, alice)
    net.register(2, bob)
    assert types(net.take(1)) == ["registered"] and types(net.take(2)) == ["registered"]
    assert "attestation" not in json.dumps(net.arrivals)


def test_directory_entries_say_which_nodes_the_lobby_vouches_for(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    net = lobby(directory={alice.node_id: alice.public_key, bob.node_id: carol.public_key})
    net.register(1, alice)
    net.register(2, bob)
    net.register(3, carol)
    (reg,) = [f for f in net.take(3) if f["type"] == "registered"]
    listed = {e["node_id"]: e["listed"] for e in reg["presence"]}
    assert listed == {alice.node_id: True, bob.node_id: False}  # bob: another key
    net.tick(T0)
    assert {f["node"]["node_id"]: f["node"]["listed"] for f in net.take(1)
            if f["type"] == "presence"} == {bob.node_id: False, carol.node_id: False}


def test_limits_are_what_the_spec_says() -> None:
    d = Limits()
    assert (d.rate_per_s, d.rate_burst, d.rooms_per_host, d.members_per_room, d.addresses,
            d.capabilities, d.max_lobby_frame_bytes) == (50, 200, 8, 64, 16, 32, 64 * 1024)
    assert (HEARTBEAT_S, MISSED_HEARTBEATS, PRESENCE_BATCH_MS) == (15, 3, 250)
