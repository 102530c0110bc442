"""Lobby instances sharing a directory (``ClusteredLobby``), driven in memory.

``Shared`` plays what the shell and the bus do, deliberately simply: KV buckets with one
revision counter (the bus's order of writes), compare-and-set on a node's record, every
change seen by every instance in order, messages between instances. Effects are carried
out when the test says (``flush``), so a test can hold one instance's writes back and
interleave them with another's.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_lobby import DeterministicRng

from hd_protocol import Identity
from hd_protocol.brokers.cluster_view import (
    ClaimNode,
    DropRoom,
    PutRoom,
    ReleaseNode,
    ToInstance,
)
from hd_protocol.brokers.frames import encode_frame
from hd_protocol.brokers.lobby_client import LobbyClient
from hd_protocol.brokers.lobby_cluster import ClusteredLobby
from hd_protocol.brokers.relay import CloseConn, ToConn
from hd_protocol.effects import Send

T0 = 1_000
WALL = 1_764_000_000_000
TTL = 20_000


def ident(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(f"cluster-test/{name}".encode()).digest())


class Shared:
    """The bus: two KV buckets and the instances' inboxes."""

    def __init__(self) -> None:
        self.rev = 0
        self.kv: dict[str, dict[str, tuple[Any, int]]] = {"nodes": {}, "rooms": {}}
        self.log: list[tuple[str, str, Any, int]] = []  # (bucket, key, value|None, rev)
        self.instances: dict[str, Inst] = {}

    def write(self, bucket: str, key: str, value: Any) -> int:
        self.rev += 1
        if value is None:
            self.kv[bucket].pop(key, None)
        else:
            self.kv[bucket][key] = (value, self.rev)
        self.log.append((bucket, key, value, self.rev))
        return self.rev

    def deliver(self, now: int = T0) -> None:
        """Every instance reads what it has not read yet, then its messages."""
        for inst in self.instances.values():
            inst.read(now)


class Inst:
    def __init__(self, shared: Shared, name: str) -> None:
        self.shared = shared
        self.name = name
        self.m = ClusteredLobby(ident(f"lobby {name}"), instance=name,
                                rng=DeterministicRng(name), instance_ttl_ms=TTL)
        self.pending: list[Any] = []  # effects not yet carried out
        self.inbox: dict[int, list[dict[str, Any]]] = {}
        self.closed: set[int] = set()
        self.messages: list[dict[str, Any]] = []
        self.read_upto = 0
        self.own: dict[str, int] = {}
        shared.instances[name] = self

    def run(self, outs: list[Any]) -> None:
        for o in outs:
            if isinstance(o, ToConn):
                assert o.conn not in self.closed, "a frame after the close"
                self.inbox.setdefault(o.conn, []).append(json.loads(o.frame))
            elif isinstance(o, CloseConn):
                self.closed.add(o.conn)
            else:
                self.pending.append(o)

    def flush(self, now: int = T0) -> None:
        """Carry out the effects, as the adapter does."""
        todo, self.pending = self.pending, []
        for e in todo:
            s = self.shared
            if isinstance(e, ClaimNode):
                rev = s.write("nodes", e.node, e.record)  # create or CAS: last writer wins
                self.own[e.node] = rev
                self.run(self.m.claimed(e.node, rev, now))
            elif isinstance(e, ReleaseNode):
                rev = e.revision or self.own.pop(e.node, 0)
                current = s.kv["nodes"].get(e.node)
                if rev and current is not None and current[1] == rev:
                    s.write("nodes", e.node, None)
            elif isinstance(e, PutRoom):
                s.write("rooms", e.room["id"], e.room)
            elif isinstance(e, DropRoom):
                s.write("rooms", e.room_id, None)
            elif isinstance(e, ToInstance):
                s.instances[e.instance].messages.append(e.message)

    def read(self, now: int = T0) -> None:
        log = self.shared.log[self.read_upto:]
        self.read_upto = len(self.shared.log)
        for bucket, key, value, rev in log:
            fn = self.m.on_nodes if bucket == "nodes" else self.m.on_rooms
            self.run(fn([(key, value, rev)], now))
        msgs, self.messages = self.messages, []
        for msg in msgs:
            self.run(self.m.on_message(msg, now))
        for other in self.shared.instances:
            self.m.instance_alive(other, now)

    def register(self, conn: int, who: Identity, name: str, now: int = T0) -> None:
        client = LobbyClient(who, node_name=name, addresses=[], capabilities=["chat"])
        (chal,) = self.m.connect(conn, now)
        assert isinstance(chal, ToConn)
        (reg,) = client.receive(chal.frame, now)
        assert isinstance(reg, Send)
        self.run(self.m.receive(conn, reg.wire, now, WALL))
        assert self.frames(conn)[-1]["type"] in ("registered", "attestation")

    def send(self, conn: int, type_: str, now: int = T0, **f: Any) -> list[dict[str, Any]]:
        mark = len(self.inbox.get(conn, []))
        self.run(self.m.receive(conn, encode_frame(type_, f), now, WALL))
        return self.inbox.get(conn, [])[mark:]

    def frames(self, conn: int) -> list[dict[str, Any]]:
        return self.inbox.get(conn, [])

    def presence(self, conn: int, now: int) -> dict[str, str]:
        """node id -> status, as pushed to ``conn`` so far (after a timer tick)."""
        self.run(self.m.on_timer(now, WALL))
        out: dict[str, str] = {}
        for f in self.frames(conn):
            if f["type"] == "registered":
                out.update({e["node_id"]: e["status"] for e in f["presence"]})
            if f["type"] == "presence":
                out[f["node"]["node_id"]] = f["node"]["status"]
        return out


def pair() -> tuple[Shared, Inst, Inst]:
    s = Shared()
    return s, Inst(s, "one"), Inst(s, "two")


def settle(s: Shared, now: int = T0, rounds: int = 4) -> None:
    for _ in range(rounds):
        for inst in s.instances.values():
            inst.flush(now)
        s.deliver(now)


A, B, C = ident("a"), ident("b"), ident("c")


def test_a_node_registered_on_one_instance_is_in_the_other_s_directory() -> None:
    s, one, two = pair()
    one.register(1, A, "a")
    settle(s)
    two.register(1, B, "b")
    regd = two.frames(1)[0]
    assert [e["node_id"] for e in regd["presence"]] == [A.node_id]
    settle(s)
    assert one.presence(1, T0 + 300) == {B.node_id: "online"}
    assert two.m.node(A.node_id) is not None and two.m.registered == 1
    # a leaves: b hears it.
    one.run(one.m.disconnect(1, T0 + 400))
    settle(s, T0 + 400)
    assert two.presence(1, T0 + 1000)[A.node_id] == "offline"
    assert two.m.node(A.node_id) is None
    assert A.node_id not in s.kv["nodes"]


def test_a_newer_registration_on_another_instance_replaces_the_older_connection() -> None:
    s, one, two = pair()
    one.register(1, A, "a")
    one.register(2, B, "watcher")
    settle(s)
    two.register(7, A, "a again")
    settle(s)
    assert [f["code"] for f in one.frames(1) if f["type"] == "error"] == ["replaced"]
    assert 1 in one.closed and 7 not in two.closed
    assert two.m.registered == 1 and one.m.registered == 1  # one holds only the watcher
    # The old connection's end does not take the node off anyone's directory.
    one.run(one.m.disconnect(1, T0 + 10))
    settle(s, T0 + 10)
    assert one.m.node(A.node_id) is not None
    assert s.kv["nodes"][A.node_id][0]["instance"] == "two"
    assert one.presence(2, T0 + 500).get(A.node_id) == "online"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["reg1", "reg2", "flush1", "flush2", "deliver"]),
                min_size=1, max_size=14))
def test_whatever_the_interleaving_one_instance_ends_up_holding_the_node(
        steps: list[str]) -> None:
    """Registrations of one node on both instances, with writes and reads in any order:
    once all is carried out, exactly one instance holds it, the one whose record the
    bus kept, and the other closed every connection it had for it."""
    s, one, two = pair()
    conns = {"1": 0, "2": 0}
    for step in steps:
        if step.startswith("reg"):
            inst = one if step == "reg1" else two
            conns[step[-1]] += 1
            inst.register(conns[step[-1]], A, "a")
        elif step == "flush1":
            one.flush()
        elif step == "flush2":
            two.flush()
        else:
            s.deliver()
    settle(s, rounds=6)
    holders = [i for i in (one, two) if i.m.registered]
    if not conns["1"] and not conns["2"]:
        return
    assert len(holders) == 1, steps
    (holder,) = holders
    assert s.kv["nodes"][A.node_id][0]["instance"] == holder.name
    loser = two if holder is one else one
    opened = conns["1" if loser is one else "2"]
    assert set(range(1, opened + 1)) <= loser.closed


def test_a_guest_joins_a_room_on_another_instance_and_only_a_digest_of_the_token_crosses(
) -> None:
    s, one, two = pair()
    one.register(1, A, "host")
    two.register(1, B, "guest")
    (created,) = one.send(1, "create_room", name="r", visibility="public",
                          joinPolicy="token", token="open sesame")
    rid = created["room"]["id"]
    settle(s)
    listed = two.send(1, "list_rooms")[0]["rooms"]
    assert [(r["id"], r["host_name"]) for r in listed] == [(rid, "host")]
    assert two.send(1, "join_room", roomId=rid, token="wrong") == []  # asked of one
    wire = [m for m in two.pending if isinstance(m, ToInstance)]
    assert "wrong" not in json.dumps([m.message for m in wire])
    settle(s)
    assert [f["code"] for f in two.frames(1) if f["type"] == "error"] == ["denied"]
    two.send(1, "join_room", roomId=rid, token="open sesame")
    settle(s)
    info = [f for f in two.frames(1) if f["type"] == "room_info"]
    assert info and info[0]["host"]["node_id"] == A.node_id
    assert [f["guest"]["node_id"] for f in one.frames(1) if f["type"] == "peer_joining"] == [
        B.node_id]
    # Signaling both ways now passes the room check on either instance.
    assert two.send(1, "signal", to=A.node_id, sid="x", kind="offer", sdp="o") == []
    settle(s)
    assert [f["from"] for f in one.frames(1) if f["type"] == "signal"] == [B.node_id]
    one.send(1, "signal", to=B.node_id, sid="x", kind="answer", sdp="a")
    settle(s)
    assert [f["kind"] for f in two.frames(1) if f["type"] == "signal"] == ["answer"]
    # The host leaves: the guest, on the other instance, gets room_closed.
    one.run(one.m.disconnect(1, T0 + 5))
    settle(s, T0 + 5)
    assert {"type": "room_closed", "roomId": rid} in two.frames(1)
    assert rid not in s.kv["rooms"]


def test_a_room_follows_its_host_when_the_host_s_instance_dies() -> None:
    s, one, two = pair()
    one.register(1, A, "host")
    one.register(2, C, "left behind")
    two.register(1, B, "seer")
    (created,) = one.send(1, "create_room", name="r", visibility="public", joinPolicy="open")
    rid = created["room"]["id"]
    settle(s)
    del s.instances["one"]  # SIGKILL: one writes and reads nothing more
    later = T0 + TTL + 1
    two.run(two.m.on_timer(later, WALL))
    for inst in s.instances.values():
        inst.flush(later)
    pushed = two.presence(1, later + 300)
    assert pushed[A.node_id] == "offline" and pushed[C.node_id] == "offline"
    assert two.send(1, "list_rooms", later)[0]["rooms"] == []  # its host is nowhere
    two.register(5, A, "host", later)
    settle(s, later)
    (listed,) = two.send(1, "list_rooms", later)[0]["rooms"]
    assert (listed["id"], listed["host"]) == (rid, A.node_id)
    out = two.send(1, "join_room", later, roomId=rid)
    assert [f["type"] for f in out] == ["room_info"]
    assert [f["type"] for f in two.frames(5)][-1] == "peer_joining"


def test_a_silent_instance_s_records_are_cleared_by_the_first_to_notice() -> None:
    s, one, two = pair()
    one.register(1, A, "a")
    settle(s)
    del s.instances["one"]
    two.run(two.m.on_timer(T0 + TTL + 1, WALL))
    two.flush(T0 + TTL + 1)
    assert A.node_id not in s.kv["nodes"]


def test_an_instance_restarted_under_its_name_clears_what_its_earlier_life_wrote() -> None:
    s, one, two = pair()
    one.register(1, A, "a")
    settle(s)
    del s.instances["one"]
    again = Inst(s, "one")  # a new process, nothing registered yet: it reads the log
    again.read()
    again.flush()
    assert A.node_id not in s.kv["nodes"]


def test_the_bus_coming_back_rewrites_what_an_instance_holds() -> None:
    s, one, two = pair()
    one.register(1, A, "a")
    one.send(1, "create_room", name="r", visibility="unlisted", joinPolicy="open")
    settle(s)
    s.kv["nodes"].clear()
    s.kv["rooms"].clear()  # a bus that lost its store
    one.run(one.m.resync(T0 + 1))
    one.flush(T0 + 1)
    assert s.kv["nodes"][A.node_id][0]["instance"] == "one"
    assert len(s.kv["rooms"]) == 1


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.sampled_from(
                        ["t", "to", "frame", "room", "guest", "reply", "code", "node",
                         "instance", "entry", "card", "node_id", "id", "host", "members",
                         "policy", "visibility", "token_hash", "name", "public_key"]),
                        kids, max_size=6), max_leaves=20))
def test_nothing_another_instance_writes_or_sends_can_break_an_instance(junk: Any) -> None:
    s, one, two = pair()
    one.register(1, A, "a")
    for key in (A.node_id, B.node_id, "x"):
        one.run(one.m.on_nodes([(key, junk, 99)], T0))
        one.run(one.m.on_rooms([(key, junk, 99)], T0))
    one.run(one.m.on_message(junk, T0))
    one.run(one.m.on_message({"t": "join", "to": A.node_id, "guest": junk, "reply": "two",
                              "room": junk}, T0))
    one.run(one.m.on_timer(T0 + 1, WALL))
    assert one.m.registered == 1 and 1 not in one.closed
