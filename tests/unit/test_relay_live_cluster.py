"""Two relay instances sending each other live envelopes (issue 19), driven in memory:
``ClusteredRelay`` on each side, the bus a list of messages the test hands over when it
likes (``Pair``), the mailbox one list with the stream's sequence as qid.

What is checked: where the sending instance sends live and where it stores, what the
receiving instance does with a live envelope, that a node gets every envelope of one
sender once and in order however stores, live messages, notes and loads interleave (the
one thing assumed, as on NATS: what one instance publishes reaches another in order),
the shared map of attachments, and that nothing from the bus can break an instance.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hd_protocol import Identity, encode_envelope, make_envelope, sign_envelope
from hd_protocol.brokers.frames import parse_challenge
from hd_protocol.brokers.relay import (
    DeleteQueued,
    LoadQueued,
    QueuedEnvelope,
    StoreQueued,
    ToConn,
    ack_frame,
    attach_frame,
    relay_frame,
)
from hd_protocol.brokers.relay_cluster import (
    ClaimAttached,
    ClusteredRelay,
    ReleaseAttached,
    ToInstance,
)
from hd_protocol.envelope import envelope_from_obj

T0 = 2_000
WALL = 1_764_000_000_000
TTL = 20_000


def rng_for(seed: str) -> Callable[[int], bytes]:
    counter = iter(range(1 << 62))

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()
        return out[:n]

    return rng


def ident(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(f"relay-live/{name}".encode()).digest())


RELAY, ALICE, BOB, CAROL = ident("relay"), ident("alice"), ident("bob"), ident("carol")


def wire(src: Identity, dst: Identity, n: int) -> str:
    e = make_envelope("peer_chat", msg_id=f"{n:032x}", src=src.node_id, dst=dst.node_id,
                      ts=WALL, data={"n": n})
    return encode_envelope(sign_envelope(e, src))


class Instance:
    """One relay instance and what its shell would hold: its stores and loads waiting."""

    def __init__(self, pair: Pair, name: str) -> None:
        self.pair, self.name = pair, name
        self.m = ClusteredRelay(RELAY, rng=rng_for(name), instance=name, delivery_batch=4)
        self.inbox: dict[int, list[dict[str, Any]]] = {}
        self.stores: list[StoreQueued] = []
        self.loads: list[LoadQueued] = []
        self.claims: list[ClaimAttached | ReleaseAttached] = []

    def run(self, outs: list[Any]) -> None:
        for o in outs:
            if isinstance(o, ToConn):
                self.inbox.setdefault(o.conn, []).append(json.loads(o.frame))
            elif isinstance(o, StoreQueued):
                self.stores.append(o)
            elif isinstance(o, LoadQueued):
                self.loads.append(o)
            elif isinstance(o, DeleteQueued):
                self.pair.mailbox = [q for q in self.pair.mailbox
                                     if not (q.dst == o.node and q.qid in o.qids)]
            elif isinstance(o, ToInstance):
                # What the shell publishes: the message's own encoding when it has one
                # (the envelope spliced in as it came), which must say the same.
                if o.wire is not None:
                    assert json.loads(o.wire) == o.message, o.wire
                    self.pair.wired += 1
                self.pair.bus.append((o.instance, o.message))
            elif isinstance(o, ClaimAttached | ReleaseAttached):
                self.claims.append(o)

    def attach(self, conn: int, who: Identity) -> dict[str, Any]:
        self.run(self.m.connect(conn, T0))
        hello = parse_challenge(self.take(conn)[0])
        self.run(self.m.receive(conn, attach_frame(who, hello), T0, WALL))
        frames = self.take(conn)
        assert frames[0]["type"] == "attached", frames
        return frames[0]

    def send(self, conn: int, to: Identity, n: int, src: Identity = ALICE) -> None:
        self.run(self.m.receive(conn, relay_frame(to.node_id, wire(src, to, n)), T0, WALL))

    def store_ok(self) -> StoreQueued:
        s = self.stores.pop(0)
        self.pair.mailbox.append(QueuedEnvelope(next(self.pair.seq), s.dst, s.src,
                                                s.envelope, s.size))
        self.pair.broadcast.append(s.dst)  # the mailbox's note on hd.mailnote.<dst>
        self.run(self.m.stored(s.conn, s.dst, s.msg_id, s.size, True))
        return s

    def load(self) -> None:
        lq = self.loads.pop(0)
        items = [q for q in self.pair.mailbox if q.dst == lq.node][:lq.limit]
        self.run(self.m.deliver(lq.conn, items))

    def take(self, conn: int) -> list[dict[str, Any]]:
        out, self.inbox[conn] = self.inbox.get(conn, []), []
        return out


class Pair:
    """Instance ``s`` (alice attached, conn 1) and ``x`` (bob attached, conn 2), each
    alive to the other and bob in the map at ``x``."""

    def __init__(self, *, bob_at_x: bool = True) -> None:
        self.mailbox: list[QueuedEnvelope] = []
        self.seq = iter(range(1, 1 << 62))
        self.bus: list[tuple[str, dict[str, Any]]] = []  # in publish order
        self.wired = 0  # of them, those that came encoded
        self.broadcast: list[str] = []
        self.s, self.x = Instance(self, "s"), Instance(self, "x")
        self.by_name = {"s": self.s, "x": self.x}
        for a, b in ((self.s, self.x), (self.x, self.s)):
            a.m.instance_alive(b.name, T0)
        self.s.attach(1, ALICE)
        if bob_at_x:
            self.x.attach(2, BOB)
            self.x.load()  # an attach loads: nothing there yet
            self.tell_map(BOB, "x", 10)

    def tell_map(self, node: Identity, instance: str | None, rev: int) -> None:
        for i in (self.s, self.x):
            i.run(i.m.on_attached([(node.node_id, instance, rev)], T0))

    def hand_over(self) -> None:
        """The next bus message, to the instance it is for."""
        inst, msg = self.bus.pop(0)
        i = self.by_name[inst]
        i.run(i.m.on_message(json.loads(json.dumps(msg)), T0, WALL))


def numbers(frames: list[dict[str, Any]]) -> list[int]:
    return [f["envelope"]["data"]["n"] for f in frames if f["type"] == "relay"]


# --- the sending instance ------------------------------------------------------------------


def test_an_envelope_for_a_node_at_another_alive_instance_goes_live_with_no_ack() -> None:
    p = Pair()
    p.s.send(1, BOB, 0)
    assert p.s.stores == [] and p.s.take(1) == []  # no relay_ack: as a local live one
    assert [(i, m["t"], m["to"], m["from"]) for i, m in p.bus] == [
        ("x", "relay", BOB.node_id, ALICE.node_id)]
    assert p.bus[0][1]["envelope"]["ttl"] == json.loads(wire(ALICE, BOB, 0))["ttl"] - 1
    assert p.wired == 1  # encoded once, on the way in: the shell does not encode it again
    p.hand_over()
    assert numbers(p.x.take(2)) == [0] and p.x.stores == []
    assert p.s.m.forwarded == 1 and p.x.m.taken == 1


def test_an_envelope_for_a_node_the_map_does_not_know_is_stored_and_acked_later() -> None:
    p = Pair(bob_at_x=False)
    p.s.send(1, BOB, 0)
    assert p.bus == [] and len(p.s.stores) == 1 and p.s.take(1) == []
    p.s.store_ok()
    assert [f["status"] for f in p.s.take(1)] == ["queued"]
    assert p.bus == []  # nobody to note: the map knows no instance for bob


def test_while_a_store_for_the_node_waits_for_its_ack_later_envelopes_are_stored_too() -> None:
    p = Pair(bob_at_x=False)
    p.s.send(1, BOB, 0)  # stored: bob was nowhere
    p.tell_map(BOB, "x", 10)
    p.x.attach(2, BOB)
    assert [m["t"] for _, m in p.bus] == ["note"]  # the map moved bob: s has mail counted
    p.s.send(1, BOB, 1)
    assert len(p.s.stores) == 2 and len(p.bus) == 1  # behind the first, in order
    p.s.store_ok()
    p.s.store_ok()
    assert [m["t"] for _, m in p.bus] == ["note"] * 3  # each store noted to x
    p.s.send(1, BOB, 2)
    assert [m["t"] for _, m in p.bus] == ["note"] * 3 + ["relay"]  # notes first


def test_an_instance_not_heard_for_its_ttl_gets_nothing_live_and_its_records_go() -> None:
    p = Pair()
    later = T0 + TTL
    out = p.s.m.on_timer(later, WALL)
    assert out == [ReleaseAttached(BOB.node_id, 10)]  # whoever notices first clears it
    assert p.s.m.where(BOB.node_id) is None and p.s.m.instances() == []
    p.s.run(p.s.m.receive(1, relay_frame(BOB.node_id, wire(ALICE, BOB, 0)), later, WALL))
    assert p.bus == [] and len(p.s.stores) == 1


def test_a_lost_bus_forgets_every_instance_at_once_and_a_resync_claims_again() -> None:
    p = Pair()
    p.s.m.bus_lost()
    p.s.send(1, BOB, 0)
    assert p.bus == [] and len(p.s.stores) == 1  # stored (or refused by the shell)
    assert p.s.m.resync(T0) == [ClaimAttached(ALICE.node_id, "s")]
    assert p.s.m.where(BOB.node_id) is None  # until the new watch says it again


def test_a_node_attached_here_is_never_sent_elsewhere() -> None:
    p = Pair()
    p.s.attach(3, BOB)  # bob is also at s now (the map still says x)
    p.s.send(1, BOB, 0)
    assert p.bus == [] and numbers(p.s.take(3)) == [0]


def test_a_full_outbox_stores_the_envelope_instead_and_acks_its_sender() -> None:
    p = Pair()
    p.s.send(1, BOB, 0)
    inst, msg = p.bus.pop()
    p.s.run(p.s.m.unsent(ToInstance(inst, msg), WALL))
    assert len(p.s.stores) == 1 and p.s.stores[0].conn == 1
    p.s.store_ok()
    assert [f["status"] for f in p.s.take(1)] == ["queued"]
    assert p.s.m.forwarded == 0


def big_wire(src: Identity, dst: Identity, n: int, pad: int) -> str:
    e = make_envelope("peer_chat", msg_id=f"{n:032x}", src=src.node_id, dst=dst.node_id,
                      ts=WALL, data={"n": n, "pad": "x" * pad})
    return encode_envelope(sign_envelope(e, src))


def test_an_envelope_bigger_than_one_bus_message_is_refused_not_sent_or_stored() -> None:
    p = Pair()
    assert p.s.m.bus_limit(64 << 10) is False  # the server said max_payload 64 KiB
    over = p.s.m.bus_item_bytes  # its data alone is this big: more with the envelope
    p.s.run(p.s.m.receive(1, relay_frame(BOB.node_id, big_wire(ALICE, BOB, 0, over)),
                          T0, WALL))
    (answer,) = p.s.take(1)
    assert (answer["type"], answer["code"]) == ("error", "too_large")
    assert p.bus == [] and p.s.stores == []
    # One that fits goes live, behind nothing; and to a node the map does not know,
    # the same refusal instead of a store the bus would not take.
    p.s.run(p.s.m.receive(1, relay_frame(BOB.node_id, big_wire(ALICE, BOB, 1, over // 2)),
                          T0, WALL))
    assert [m["t"] for _, m in p.bus] == ["relay"] and p.s.take(1) == []
    p.s.run(p.s.m.receive(1, relay_frame(CAROL.node_id, big_wire(ALICE, CAROL, 2, over)),
                          T0, WALL))
    assert [f["code"] for f in p.s.take(1)] == ["too_large"] and p.s.stores == []
    for n in range(20):  # an honest answer: not held against the sender
        outs = p.s.m.receive(1, relay_frame(BOB.node_id, big_wire(ALICE, BOB, 9 + n, over)),
                             T0, WALL)
        assert [type(o) for o in outs] == [ToConn], outs
    assert p.s.m.bus_limit(1 << 20) is False  # more (a new INFO), still under 1 MiB + slack
    assert p.s.m.bus_limit(2 << 20) is True  # max_payload: 2MB carries every envelope
    p.s.run(p.s.m.receive(1, relay_frame(BOB.node_id, big_wire(ALICE, BOB, 3, over)),
                          T0, WALL))
    assert [m["t"] for _, m in p.bus] == ["relay", "relay"] and p.s.take(1) == []


def test_when_the_map_first_puts_a_node_with_counted_mail_at_x_x_gets_a_note() -> None:
    p = Pair(bob_at_x=False)
    p.s.send(1, BOB, 0)
    p.s.store_ok()
    p.tell_map(BOB, "x", 10)
    assert [(i, m) for i, m in p.bus] == [("x", {"t": "note", "to": BOB.node_id})]


# --- the receiving instance ------------------------------------------------------------------


def live(to: Identity, n: int, src: Identity = ALICE) -> dict[str, Any]:
    env = json.loads(wire(src, to, n))
    return {"t": "relay", "to": to.node_id, "from": src.node_id, "envelope": env}


def test_a_live_envelope_for_a_node_that_is_loading_is_stored_behind_what_is_queued() -> None:
    p = Pair()
    p.x.run(p.x.m.on_message({"t": "note", "to": BOB.node_id}, T0, WALL))
    assert len(p.x.loads) == 1
    p.x.run(p.x.m.on_message(live(BOB, 5), T0, WALL))
    assert p.x.take(2) == [] and [s.conn for s in p.x.stores] == [0]  # no sender here


def test_a_live_envelope_for_a_congested_or_detached_node_is_stored() -> None:
    p = Pair()
    p.x.run(p.x.m.congested(2, True))
    p.x.run(p.x.m.on_message(live(BOB, 1), T0, WALL))
    p.x.run(p.x.m.on_message(live(CAROL, 2), T0, WALL))  # carol is attached nowhere
    assert [s.dst for s in p.x.stores] == [BOB.node_id, CAROL.node_id]
    p.x.store_ok()
    p.x.store_ok()
    assert p.x.take(2) == []  # no ack to anyone: the sender is at another instance


def test_a_live_envelope_while_one_is_in_flight_waits_for_its_ack() -> None:
    p = Pair()
    p.s.send(1, BOB, 0)
    p.x.attach(3, CAROL)
    p.x.load()  # carol's (an attach loads)
    p.x.send(3, BOB, 1, src=CAROL)  # carol, at x: bob is idle, live
    assert numbers(p.x.take(2)) == [1]
    p.x.run(p.x.m.congested(2, True))
    p.hand_over()  # alice's, from s: congested: stored
    p.x.store_ok()
    p.x.run(p.x.m.congested(2, False))
    p.x.load()
    got = p.x.take(2)
    assert numbers(got) == [0] and "qid" in got[0]
    p.x.run(p.x.m.on_message(live(BOB, 2), T0, WALL))  # 0 is in flight: stored
    assert p.x.take(2) == [] and len(p.x.stores) == 1


# --- order, over every interleaving -----------------------------------------------------------

OPS = st.lists(st.sampled_from(["send", "send", "send", "s_store", "x_store", "bus", "bus",
                                "broadcast", "load", "ack", "congest", "drain", "forget",
                                "hear"]),
               max_size=80)


def step(p: Pair, op: str, acked: list[dict[str, Any]], sent: list[int]) -> bool:
    """One thing happens; False when it could not."""
    s, x = p.s, p.x
    if op == "send":
        s.send(1, BOB, len(sent))
        sent.append(len(sent))
    elif op == "s_store" and s.stores:
        s.store_ok()
    elif op == "x_store" and x.stores:
        x.store_ok()
    elif op == "bus" and p.bus:
        p.hand_over()
    elif op == "broadcast" and p.broadcast:  # another subscription: any time, any order
        x.run(x.m.mail_arrived(p.broadcast.pop()))
    elif op == "load" and x.loads:
        x.load()
    elif op == "ack":
        frames = x.take(2)
        acked += frames
        qids = [f["qid"] for f in frames if "qid" in f]
        if not frames:
            return False
        if qids:
            x.run(x.m.receive(2, ack_frame(qids), T0, WALL))
    elif op in ("congest", "drain"):
        x.run(x.m.congested(2, op == "congest"))
    elif op == "forget" and not p.bus and not x.stores:  # s stops sending live to x and
        s.m.bus_lost()  # stores, once what it sent x live has settled there (the docstring)
    elif op == "hear":  # and hears x again
        s.m.instance_alive("x", T0)
    else:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(OPS)
def test_a_node_at_x_gets_every_envelope_from_s_once_in_send_order(ops: list[str]) -> None:
    p = Pair()
    got: list[dict[str, Any]] = []
    sent: list[int] = []
    for op in ops:
        step(p, op, got, sent)
    step(p, "drain", got, sent)
    for _ in range(10_000):  # then everything waiting happens, until nothing does
        if not any(step(p, op, got, sent) for op in
                   ("s_store", "bus", "x_store", "broadcast", "load", "ack")):
            break
    assert numbers(got) == sent  # every one, once, in order
    assert all(f["from"] == ALICE.node_id for f in got)
    assert p.mailbox == []  # what was stored was delivered and acknowledged


# --- the shared map ----------------------------------------------------------------------------


def test_an_attach_claims_the_node_and_its_detach_releases_it() -> None:
    p = Pair(bob_at_x=False)
    assert p.s.claims == [ClaimAttached(ALICE.node_id, "s")]
    p.s.m.claimed(ALICE.node_id, 7)
    p.s.run(p.s.m.disconnect(1))
    assert p.s.claims[-1] == ReleaseAttached(ALICE.node_id)


def test_a_replaced_connection_keeps_the_record_and_claims_again() -> None:
    p = Pair(bob_at_x=False)
    p.s.claims.clear()
    p.s.attach(5, ALICE)  # the same node again: the old connection is replaced
    assert p.s.claims == [ClaimAttached(ALICE.node_id, "s")]


def test_a_connection_closed_for_bad_frames_releases_its_node() -> None:
    p = Pair(bob_at_x=False)
    p.s.claims.clear()
    for _ in range(16):
        p.s.run(p.s.m.receive(1, "{not json", T0, WALL))
    assert p.s.claims == [ReleaseAttached(ALICE.node_id)]


def test_a_record_of_ours_from_an_earlier_life_is_released_and_a_newer_one_wins() -> None:
    p = Pair(bob_at_x=False)
    out = p.s.m.on_attached([(BOB.node_id, "s", 3)], T0)
    assert out == [ReleaseAttached(BOB.node_id, 3)]  # bob is not attached at s
    p.tell_map(BOB, "x", 4)
    p.tell_map(BOB, "s", 2)  # older than what the map holds: ignored
    assert p.s.m.where(BOB.node_id) == "x"
    p.tell_map(BOB, None, 5)  # deleted
    assert p.s.m.where(BOB.node_id) is None


def test_a_heartbeat_from_a_new_instance_asks_for_an_answer_once() -> None:
    p = Pair()
    assert p.s.m.instance_alive("y", T0) is True
    assert p.s.m.instance_alive("y", T0 + 1) is False
    assert p.s.m.instance_alive("s", T0) is False  # our own
    assert p.s.m.next_deadline() == T0 + TTL


# --- junk from the bus ---------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
NODE = st.sampled_from([BOB.node_id, CAROL.node_id, "x"])
JUNK = st.one_of(JSON, st.fixed_dictionaries(
    {"t": st.sampled_from(["relay", "note", "x"]), "to": NODE},
    optional={"from": NODE | JSON, "envelope": JSON | st.fixed_dictionaries(
        {"dst": NODE, "src": NODE}, optional={"msg_id": JSON})}))


@settings(max_examples=300, deadline=None)
@example(msgs=[{"t": "relay", "to": BOB.node_id, "from": BOB.node_id,
                "envelope": {"dst": BOB.node_id, "src": BOB.node_id}}], changes=[])
@given(st.lists(JUNK, max_size=8), st.lists(st.tuples(NODE | st.text(max_size=4), JSON,
                                                      st.integers(-5, 50)), max_size=8))
def test_junk_from_the_bus_never_breaks_an_instance(msgs: list[Any], changes: list[Any]
                                                     ) -> None:
    p = Pair()
    for m in msgs:
        p.x.run(p.x.m.on_message(m, T0, WALL))
    p.x.run(p.x.m.on_attached(changes, T0))
    p.s.run(p.s.m.on_attached(changes, T0))
    assert all(isinstance(s.envelope, dict) and type(s.msg_id) is str for s in p.x.stores)
    for s in p.x.stores:  # only what a relay would pass is kept for a node...
        envelope_from_obj(s.envelope)
    for f in p.x.take(2):  # ...or handed to it
        if f.get("type") == "relay":
            envelope_from_obj(f["envelope"])
    # Still itself: a well-formed live envelope for an idle node is delivered.
    while p.x.stores:
        p.x.store_ok()
    while p.x.loads:
        p.x.load()
        frames = p.x.take(2)
        qids = [f["qid"] for f in frames if "qid" in f]
        if qids:
            p.x.run(p.x.m.receive(2, ack_frame(qids), T0, WALL))
    p.x.run(p.x.m.on_message(live(BOB, 99), T0, WALL))
    while p.x.stores:  # (stored if what the junk stored is still on its way)
        p.x.store_ok()
    while p.x.loads:
        p.x.load()
    assert 99 in numbers(p.x.take(2))
