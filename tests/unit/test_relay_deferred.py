"""The relay machine over a store that answers later and that other instances share
(the cluster mailbox, issue 19): ``deferred_acks`` and ``shared_store``, driven in memory.

``Deferred`` plays the shell but keeps every store, load and delete waiting until the
test answers it (``store_ok``, ``store_failed``, ``load``, ``load_failed``), as a
JetStream round trip would; the mailbox is a list with the stream's sequence as qid.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from relay_client_net import RELAY, WALL, ident, rng_for, wire

from hd_protocol import Identity
from hd_protocol.brokers.frames import parse_challenge
from hd_protocol.brokers.relay import (
    DeleteQueued,
    LoadQueued,
    Output,
    QueuedEnvelope,
    RelayServer,
    StoreQueued,
    ToConn,
    ack_frame,
    attach_frame,
    relay_frame,
)

T0 = 2_000
ALICE, BOB = ident("alice"), ident("bob")


def mid(n: int) -> str:
    return f"{n:032x}"


class Deferred:
    """A relay whose store answers when the test says so."""

    def __init__(self, *, shared: bool = True, batch: int = 256) -> None:
        self.server = RelayServer(RELAY, rng=rng_for("relay"), deferred_acks=True,
                                  shared_store=shared, delivery_batch=batch)
        self.inbox: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.mailbox: list[QueuedEnvelope] = []  # what the store holds, in order
        self.stores: list[StoreQueued] = []  # handed to the store, not answered
        self.loads: list[LoadQueued] = []
        self.deletes: list[DeleteQueued] = []
        self._seq = iter(range(1, 1 << 62))

    def run(self, outs: list[Output]) -> None:
        for o in outs:
            if isinstance(o, ToConn):
                self.inbox[o.conn].append(json.loads(o.frame))
            elif isinstance(o, StoreQueued):
                self.stores.append(o)
            elif isinstance(o, LoadQueued):
                self.loads.append(o)
            elif isinstance(o, DeleteQueued):
                self.deletes.append(o)
                self.mailbox = [q for q in self.mailbox
                                if not (q.dst == o.node and q.qid in o.qids)]

    def attach(self, conn: int, who: Identity) -> dict[str, Any]:
        self.run(self.server.connect(conn, T0))
        hello = parse_challenge(self.take(conn)[0])
        self.run(self.server.receive(conn, attach_frame(who, hello), T0, WALL))
        frames = self.take(conn)
        assert frames[0]["type"] == "attached", frames
        return frames[0]

    def send(self, conn: int, to: Identity, n: int, src: Identity = ALICE) -> None:
        self.run(self.server.receive(conn, relay_frame(to.node_id, wire(src, to, n)), T0,
                                     WALL))

    def store_ok(self, *, duplicate: bool = False) -> StoreQueued:
        s = self.stores.pop(0)
        if not duplicate:
            self.mailbox.append(QueuedEnvelope(next(self._seq), s.dst, s.src, s.envelope,
                                               s.size))
        self.run(self.server.stored(s.conn, s.dst, s.msg_id, s.size, True,
                                    duplicate=duplicate))
        return s

    def store_failed(self, code: str = "unavailable") -> StoreQueued:
        s = self.stores.pop(0)
        self.run(self.server.stored(s.conn, s.dst, s.msg_id, s.size, False, code))
        return s

    def put_elsewhere(self, dst: Identity, n: int) -> None:
        """Another instance stored an envelope for ``dst`` (and its note arrives)."""
        e = json.loads(wire(ALICE, dst, n))
        self.mailbox.append(QueuedEnvelope(next(self._seq), dst.node_id, ALICE.node_id, e,
                                           len(json.dumps(e))))

    def load(self) -> None:
        lq = self.loads.pop(0)
        items = [q for q in self.mailbox if q.dst == lq.node][:lq.limit]
        self.run(self.server.deliver(lq.conn, items))

    def load_failed(self) -> None:
        lq = self.loads.pop(0)
        self.run(self.server.load_failed(lq.conn))

    def take(self, conn: int) -> list[dict[str, Any]]:
        out, self.inbox[conn] = self.inbox[conn], []
        return out


def acks(frames: list[dict[str, Any]]) -> list[str]:
    assert all(f["type"] == "relay_ack" and f["status"] == "queued" for f in frames), frames
    return [f["msg_id"] for f in frames]


def delivered(frames: list[dict[str, Any]]) -> list[int]:
    assert all(f["type"] == "relay" and "qid" in f for f in frames), frames
    return [f["envelope"]["data"]["n"] for f in frames]


# --- stores answered later ------------------------------------------------------------------


def test_a_deferred_store_is_acknowledged_only_once_the_store_says_it_holds_it() -> None:
    d = Deferred()
    d.attach(1, ALICE)
    d.send(1, BOB, 0)
    assert len(d.stores) == 1 and d.stores[0].conn == 1 and d.stores[0].dst == BOB.node_id
    assert d.take(1) == []  # nothing said before the store answers
    assert d.server.queued(BOB.node_id)[0] == 1
    d.store_ok()
    assert acks(d.take(1)) == [mid(0)]
    assert d.server.queued(BOB.node_id)[0] == 1


def test_a_store_that_failed_answers_unavailable_and_takes_the_count_back() -> None:
    d = Deferred()
    d.attach(1, ALICE)
    d.send(1, BOB, 0)
    d.store_failed()
    (err,) = d.take(1)
    assert err["type"] == "error" and err["code"] == "unavailable"
    assert mid(0) in err["message"]  # which envelope, without its payload
    assert d.server.queued(BOB.node_id) == (0, 0)


@pytest.mark.parametrize(("code", "said"), [
    ("queue_full", "queue_full"),  # refused for its limits
    ("bad_frame", "unavailable"),  # a code the sender has no use for
])
def test_a_refused_store_answers_its_code_or_unavailable_and_takes_the_count_back(
        code: str, said: str) -> None:
    d = Deferred()
    d.attach(1, ALICE)
    d.send(1, BOB, 0)
    d.store_failed(code)
    assert [f["code"] for f in d.take(1)] == [said]
    assert d.server.queued(BOB.node_id) == (0, 0)


def test_a_duplicate_is_acknowledged_and_counted_once() -> None:
    d = Deferred()
    d.attach(1, ALICE)
    d.send(1, BOB, 0)
    d.send(1, BOB, 0)  # the same envelope again (a resend)
    d.store_ok()
    d.store_ok(duplicate=True)
    assert acks(d.take(1)) == [mid(0), mid(0)]
    assert d.server.queued(BOB.node_id)[0] == 1


def test_the_answer_for_a_sender_that_left_goes_nowhere_and_the_count_stays() -> None:
    d = Deferred()
    d.attach(1, ALICE)
    d.send(1, BOB, 0)
    d.run(d.server.disconnect(1))
    d.store_ok()
    assert d.take(1) == []
    assert d.server.queued(BOB.node_id)[0] == 1  # it is stored: it waits for Bob


def test_without_a_shared_store_the_local_limits_still_refuse() -> None:
    d = Deferred(shared=False)
    d.attach(1, ALICE)
    for i in range(1000):
        d.send(1, BOB, i)
    d.send(1, BOB, 1000)
    assert [f["code"] for f in d.take(1)] == ["queue_full"]
    assert len(d.stores) == 1000


def test_a_shared_store_enforces_its_own_limits_not_this_instances_counts() -> None:
    d = Deferred()
    d.attach(1, ALICE)
    for i in range(1001):
        d.send(1, BOB, i)
    assert len(d.stores) == 1001 and d.take(1) == []  # the store decides (queue_full)


# --- order and loads ------------------------------------------------------------------------


def test_while_a_store_is_pending_later_envelopes_for_an_attached_node_queue_behind_it() -> None:
    d = Deferred()
    d.attach(1, ALICE)
    d.send(1, BOB, 0)  # Bob is away: stored
    d.attach(2, BOB)
    d.send(1, BOB, 1)  # Bob is here, but 0 waits: 1 goes behind it
    assert [s.msg_id for s in d.stores] == [mid(0), mid(1)]
    assert d.take(2) == []
    d.store_ok()
    d.store_ok()
    while d.loads:
        d.load()
    assert delivered(d.take(2)) == [0, 1]


def test_a_node_attaching_to_a_shared_store_is_loaded_even_when_this_instance_counted_nothing(
) -> None:
    d = Deferred()
    d.put_elsewhere(BOB, 7)
    assert d.attach(2, BOB) == {"type": "attached", "queued": 0}
    assert [lq.node for lq in d.loads] == [BOB.node_id]
    d.load()
    assert delivered(d.take(2)) == [7]
    assert d.server.queued(BOB.node_id)[0] == 1  # the short load told the true count


def test_without_a_shared_store_an_attach_with_nothing_counted_loads_nothing() -> None:
    d = Deferred(shared=False)
    d.attach(2, BOB)
    assert d.loads == []


def test_mail_arrived_loads_only_for_an_attached_idle_node() -> None:
    d = Deferred()
    assert d.server.mail_arrived(BOB.node_id) == []  # not attached here
    d.attach(2, BOB)
    d.load()  # the attach's load: nothing there
    d.put_elsewhere(BOB, 1)
    d.run(d.server.mail_arrived(BOB.node_id))
    assert len(d.loads) == 1
    d.run(d.server.mail_arrived(BOB.node_id))
    assert len(d.loads) == 1  # one load at a time
    d.load()
    (f,) = d.take(2)
    d.put_elsewhere(BOB, 2)
    d.run(d.server.mail_arrived(BOB.node_id))
    assert d.loads == []  # something is in flight: the ack loads next
    d.run(d.server.receive(2, ack_frame([f["qid"]]), T0, WALL))
    assert len(d.loads) == 1 and d.deletes[-1].qids == (f["qid"],)
    d.load()
    assert delivered(d.take(2)) == [2]


def test_a_congested_node_is_not_loaded_until_it_drains() -> None:
    d = Deferred()
    d.attach(2, BOB)
    d.load()
    d.run(d.server.congested(2, True))
    d.put_elsewhere(BOB, 1)
    d.run(d.server.mail_arrived(BOB.node_id))
    assert d.loads == []
    d.run(d.server.congested(2, False))
    assert len(d.loads) == 1


def test_mail_that_arrives_during_a_load_is_loaded_after_it() -> None:
    d = Deferred()
    d.attach(2, BOB)
    d.put_elsewhere(BOB, 1)  # lands after the attach's load ran...
    lq = d.loads.pop(0)
    d.run(d.server.mail_arrived(BOB.node_id))  # ...its note arrives while it runs
    d.run(d.server.deliver(lq.conn, []))  # the load saw nothing
    assert len(d.loads) == 1
    d.load()
    assert delivered(d.take(2)) == [1]


def test_what_this_instance_stored_during_a_load_is_loaded_after_it_and_counted() -> None:
    d = Deferred()
    d.attach(1, ALICE)
    d.load()  # nothing for Alice
    d.attach(2, BOB)
    d.run(d.server.congested(2, True))
    d.send(1, BOB, 0)
    lq = d.loads.pop(0)  # Bob's attach's load, still out
    d.store_ok()
    assert d.server.queued(BOB.node_id)[0] == 1
    d.run(d.server.deliver(lq.conn, []))  # it ran before the store
    assert d.server.queued(BOB.node_id)[0] == 1  # still counted: order stays kept
    d.run(d.server.congested(2, False))
    d.load()
    assert delivered(d.take(2)) == [0]


def test_a_full_batch_loads_the_rest_after_its_ack() -> None:
    d = Deferred(batch=3)
    for i in range(5):
        d.put_elsewhere(BOB, i)
    d.attach(2, BOB)
    d.load()
    first = d.take(2)
    assert delivered(first) == [0, 1, 2]
    d.run(d.server.receive(2, ack_frame([f["qid"] for f in first]), T0, WALL))
    d.load()
    assert delivered(d.take(2)) == [3, 4]


def test_a_delete_says_below_which_qid_everything_for_the_node_is_done() -> None:
    d = Deferred()
    for i in range(4):
        d.put_elsewhere(BOB, i)
    d.attach(2, BOB)
    d.load()
    q = [f["qid"] for f in d.take(2)]
    d.run(d.server.receive(2, ack_frame([q[2], q[3]]), T0, WALL))
    assert d.deletes[-1].qids == (q[2], q[3]) and d.deletes[-1].below == q[0]  # 0, 1 wait
    d.run(d.server.receive(2, ack_frame([q[1], q[0]]), T0, WALL))
    assert d.deletes[-1].below == q[1] + 1  # nothing older is in flight now


def test_a_failed_load_loads_again_on_the_next_occasion() -> None:
    d = Deferred()
    d.put_elsewhere(BOB, 1)
    d.attach(2, BOB)
    d.load_failed()
    assert d.loads == [] and d.take(2) == []
    d.run(d.server.mail_arrived(BOB.node_id))  # e.g. the shell says so when the bus is back
    d.load()
    assert delivered(d.take(2)) == [1]


def test_recount_takes_the_stores_counts_and_adds_what_is_on_its_way() -> None:
    d = Deferred()
    d.attach(1, ALICE)
    d.send(1, BOB, 0)
    d.server.recount({ALICE.node_id: (3, 300), "gone": (0, 0)})
    assert d.server.queued(ALICE.node_id) == (3, 300)
    assert d.server.queued(BOB.node_id)[0] == 1  # the pending store
    assert d.server.queued("gone") == (0, 0)


def test_the_sqlite_mode_is_unchanged_the_ack_follows_the_store_at_once() -> None:
    server = RelayServer(RELAY, rng=rng_for("relay"))
    d = Deferred()
    d.server = server
    d.attach(1, ALICE)
    d.send(1, BOB, 0)
    assert acks(d.take(1)) == [mid(0)] and d.stores[0].conn == 1


# --- a property: counts never go negative, every store gets exactly one answer -----------------

OPS = st.lists(st.sampled_from([
    "send", "send", "send", "store_ok", "store_ok", "store_dup", "store_fail", "store_full",
    "bob_attach", "bob_leave", "load", "load_fail", "ack", "elsewhere", "recount",
    "congest", "drain", "alice_leave"]), max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_counts_never_go_negative_and_every_store_gets_exactly_one_answer(
        ops: list[str]) -> None:
    d = Deferred(batch=4)
    alice_conn, bob_conn, nxt = 1, None, 100
    d.attach(alice_conn, ALICE)
    alive = {alice_conn}
    answers: dict[str, int] = defaultdict(int)  # msg_id -> answers the sender got
    expected: dict[str, int] = defaultdict(int)  # msg_id -> answers owed (sender alive)
    n = 0

    def collect() -> None:
        for f in d.take(alice_conn):
            if f["type"] == "relay_ack":
                answers[f["msg_id"]] += 1
            elif f["type"] == "error":
                answers[f["message"].split()[2]] += 1

    for op in ops:
        if op == "send" and alice_conn in alive:
            d.send(alice_conn, BOB, n)
            n += 1
        elif op.startswith("store") and d.stores:
            s = d.stores[0]
            if s.conn in alive:
                expected[s.msg_id] += 1
            if op == "store_ok":
                d.store_ok()
            elif op == "store_dup":
                d.store_ok(duplicate=True)
            else:
                d.store_failed("unavailable" if op == "store_fail" else "queue_full")
        elif op == "bob_attach":
            if bob_conn is not None:
                d.run(d.server.disconnect(bob_conn))
            bob_conn, nxt = nxt, nxt + 1
            d.attach(bob_conn, BOB)
        elif op == "bob_leave" and bob_conn is not None:
            d.run(d.server.disconnect(bob_conn))
            d.loads = [lq for lq in d.loads if lq.conn != bob_conn]
            bob_conn = None
        elif op == "load" and d.loads:
            d.load()
        elif op == "load_fail" and d.loads:
            d.load_failed()
        elif op == "ack" and bob_conn is not None:
            qids = [f["qid"] for f in d.take(bob_conn) if f["type"] == "relay" and "qid" in f]
            if qids:
                d.run(d.server.receive(bob_conn, ack_frame(qids), T0, WALL))
        elif op == "elsewhere":
            d.put_elsewhere(BOB, 10_000 + n)
            n += 1
            d.run(d.server.mail_arrived(BOB.node_id))
        elif op == "recount":
            c = sum(1 for q in d.mailbox if q.dst == BOB.node_id)
            d.server.recount({BOB.node_id: (c, 100 * c)})
        elif op in ("congest", "drain") and bob_conn is not None:
            d.run(d.server.congested(bob_conn, op == "congest"))
        elif op == "alice_leave" and alice_conn in alive:
            d.run(d.server.disconnect(alice_conn))
            alive.discard(alice_conn)
        collect()
        for node in (ALICE.node_id, BOB.node_id):
            count, size = d.server.queued(node)
            assert count >= 0 and size >= 0
        assert d.server.total_queued_bytes >= 0
        if bob_conn is not None:  # at most one load out per connection
            assert sum(1 for lq in d.loads if lq.conn == bob_conn) <= 1
    assert dict(answers) == {k: v for k, v in expected.items() if v}
    assert all(v == 1 for v in answers.values())
