"""The node's side of a relay (SPEC 7.7): ``RelayClient``, driven in memory.

Most tests run the real ``RelayServer`` and real clients joined by lists
(``relay_client_net.Net``), so what the client sends is what a relay accepts and its
store shows what the node's acks deleted; the rest hand the client frames a lying or
broken relay could send. Time is an int the test moves.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from relay_client_net import RELAY, T0, Net, Node, ident, wire

from hd_protocol import LocalProtocolError
from hd_protocol.brokers.frames import challenge, encode_frame
from hd_protocol.brokers.relay import MAX_ACK_QIDS
from hd_protocol.brokers.relay_client import (
    ATTACH_TIMEOUT_MS,
    RETRY_CAP_MS,
    RETRY_MS,
    Attached,
    Close,
    Deliver,
    Dial,
    Dropped,
    Queued,
    RelayClient,
    RelayError,
)
from hd_protocol.effects import Send


def two(**kw: Any) -> tuple[Net, Node, Node]:
    net = Net(**kw)
    a, b = net.add("alice"), net.add("bob")
    return net, a, b


def bob_offline_with(net: Net, *numbers: int) -> None:
    """alice sends while bob is away: the relay stores them for bob."""
    net.attach("alice")
    net.send("alice", "bob", *numbers)
    assert net.stored_for("bob") == list(numbers)


def relay_frame_to(who: Node, src_name: str, n: int, qid: int | None = None,
                   **over: Any) -> dict[str, Any]:
    src = ident(src_name)
    f: dict[str, Any] = {"type": "relay", "from": src.node_id,
                         "envelope": json.loads(wire(src, who.who, n))}
    if qid is not None:
        f["qid"] = qid
    f.update(over)
    return f


def attached_client(net: Net, name: str = "bob") -> Node:
    net.attach(name)
    return net.nodes[name]


# --- attach (SPEC 7.7 step 1) ------------------------------------------------------------


def test_the_first_timer_dials_and_the_challenge_is_answered_with_a_good_attach() -> None:
    net, a, _ = two()
    assert a.client.next_deadline() == 0  # due at once
    assert a.client.on_timer(T0) == [Dial()]
    assert a.client.on_timer(T0) == []  # one dial at a time
    net.nodes["alice"].client = RelayClient(a.who, rng=a.client.rng)
    net.attach("alice")
    assert net.server.attached(a.who.node_id) == a.conn
    assert Attached(0) in a.events


def test_attached_reports_what_the_relay_holds_for_us() -> None:
    net, a, b = two()
    bob_offline_with(net, 1, 2, 3)
    net.attach("bob")
    assert Attached(3) in b.events


def test_a_relay_that_does_not_attach_in_time_is_left_and_redialled_after_a_backoff() -> None:
    c = RelayClient(ident("alice"), rng=lambda n: b"\0" * n)
    c.on_timer(T0)
    c.connected(T0)
    assert c.next_deadline() == T0 + ATTACH_TIMEOUT_MS
    assert c.on_timer(T0 + ATTACH_TIMEOUT_MS - 1) == []
    (close,) = c.on_timer(T0 + ATTACH_TIMEOUT_MS)
    assert isinstance(close, Close) and not c.attached
    now = T0 + ATTACH_TIMEOUT_MS
    c.disconnected(now)
    assert c.next_deadline() == now + 500  # 1 s step, half fixed, no jitter from rng 0
    assert c.on_timer(now + 499) == []
    assert c.on_timer(now + 500) == [Dial()]


def test_the_backoff_grows_with_each_failure_and_starts_over_after_an_attach() -> None:
    net, a, _ = two()
    a.started = True
    c = a.client
    delays = []
    now = T0
    c.on_timer(now)
    for _ in range(4):  # dials that fail
        c.disconnected(now)
        dl = c.next_deadline()
        assert dl is not None
        delays.append(dl - now)
        now = dl
        assert c.on_timer(now) == [Dial()]
    assert all(1000 * 2**i // 2 <= d <= 1000 * 2**i for i, d in enumerate(delays)), delays
    net.now = now
    c.disconnected(now)
    net.settle(now + 60_000)  # the next dial attaches
    assert c.attached
    net.drop(a)
    dl = c.next_deadline()
    assert dl is not None and dl - net.now <= 1000


def test_a_relay_with_another_key_than_the_pinned_one_is_refused() -> None:
    c = RelayClient(ident("alice"), rng=lambda n: b"\1" * n,
                    pinned_key=ident("the relay we know").public_key)
    c.on_timer(T0)
    c.connected(T0)
    out = c.receive(challenge(RELAY, b"\2" * 32), T0)
    assert [type(o) for o in out] == [Dropped, Close] and out[0].code == "auth"
    assert not c.attached


@pytest.mark.parametrize("frame", [
    encode_frame("attached", {"queued": 0}),  # before any challenge
    encode_frame("relay", {"from": "x", "envelope": {}}),
    "not json", "[]", '{"type": 7}',
])
def test_anything_but_a_challenge_first_closes_the_connection(frame: str) -> None:
    c = RelayClient(ident("alice"), rng=lambda n: b"\1" * n)
    c.on_timer(T0)
    c.connected(T0)
    out = c.receive(frame, T0)
    assert isinstance(out[-1], Close) and out[-1].code == 1008 and not c.attached
    assert c.next_deadline() is None  # nothing due until the shell says disconnected


@pytest.mark.parametrize("answer", [
    encode_frame("relay_ack", {"msg_id": "x"}), encode_frame("attached", {}),
    encode_frame("attached", {"queued": "3"}), encode_frame("challenge", {}),
])
def test_after_the_attach_only_attached_will_do(answer: str) -> None:
    c = RelayClient(ident("alice"), rng=lambda n: b"\1" * n)
    c.on_timer(T0)
    c.connected(T0)
    (attach,) = c.receive(challenge(RELAY, b"\2" * 32), T0)
    assert isinstance(attach, Send) and json.loads(attach.wire)["type"] == "attach"
    out = c.receive(answer, T0)
    assert isinstance(out[-1], Close) and not c.attached


def test_an_error_before_the_attach_is_reported_and_closes() -> None:
    c = RelayClient(ident("alice"), rng=lambda n: b"\1" * n)
    c.on_timer(T0)
    c.connected(T0)
    c.receive(challenge(RELAY, b"\2" * 32), T0)
    out = c.receive(encode_frame("error", {"code": "auth", "message": "no"}), T0)
    assert out[0] == RelayError("auth", "no") and isinstance(out[1], Close)


# --- sending (SPEC 7.7 step 2) ------------------------------------------------------------


def test_sending_before_the_attach_is_a_local_error() -> None:
    c = RelayClient(ident("alice"), rng=lambda n: b"\1" * n)
    with pytest.raises(LocalProtocolError):
        c.send(ident("bob").node_id, ["{}"])


def test_what_a_link_sends_reaches_the_attached_peer_live_in_order() -> None:
    net, a, b = two()
    net.attach("alice", "bob")
    b.links[a.who.node_id] = []
    b.client.open_link(a.who.node_id)
    net.send("alice", "bob", 1, 2, 3)
    assert b.took(a.who.node_id) == [1, 2, 3]
    assert net.store == [] and b.acks == []  # live: nothing stored, nothing to ack


def test_a_send_for_a_detached_peer_is_queued_and_reported() -> None:
    net, a, _ = two()
    bob_offline_with(net, 7)
    assert [e for e in a.events if isinstance(e, Queued)] == [Queued(f"{7:032x}")]


def test_a_bad_destination_is_a_local_error() -> None:
    net, a, _ = two()
    net.attach("alice")
    with pytest.raises(LocalProtocolError):
        a.client.send("not a node id", ["{}"])


# --- receiving: routing ---------------------------------------------------------------------


def test_a_hello_from_a_peer_without_a_link_asks_for_an_inbound_link() -> None:
    net, a, b = two()
    net.attach("alice", "bob")
    net.send("alice", "bob", 1, type_="hello")
    (d,) = b.offered
    assert d.opens and d.peer == a.who.node_id and b.took(a.who.node_id) == [1]


def test_a_session_envelope_from_a_peer_without_a_link_is_dropped_and_its_stored_copy_acked(
) -> None:
    net, a, b = two()
    bob_offline_with(net, 1)
    net.attach("bob")
    assert b.offered == [] and a.who.node_id not in b.links
    assert any(isinstance(e, Dropped) and e.code == "not_found" for e in b.events)
    assert net.stored_for("bob") == []  # a session that is gone: it would come back for ever


@pytest.mark.parametrize("how", ["from another", "for another", "malformed"])
def test_an_envelope_not_ours_is_dropped_and_acknowledged(how: str) -> None:
    net, _, b = two()
    b = attached_client(net)
    f = relay_frame_to(b, "carol", 1, qid=5)
    if how == "from another":
        f["from"] = ident("dave").node_id
    elif how == "for another":
        f["envelope"] = json.loads(wire(ident("carol"), ident("erin"), 1))
    else:
        f["envelope"] = {**f["envelope"], "sig": "AA=="}
    out = net.feed("bob", f)
    assert [type(o) for o in out] == [Dropped]
    net.settle()
    assert b.acks == [5] and b.offered == []


@pytest.mark.parametrize("frame", [
    {"type": "relay", "from": "x"}, {"type": "relay", "envelope": {}},
    {"type": "relay", "from": "x", "envelope": {}, "qid": 1, "extra": 1},
    {"type": "relay", "from": "x", "envelope": {}, "qid": "1"},
    {"type": "relay", "from": "x", "envelope": {}, "qid": -1},
    {"type": "relay", "from": "x", "envelope": {}, "qid": True},
    {"type": "relay_ack"}, {"type": "challenge"}, {"type": "surprise"},
    "", "{", "null", "[1]", '{"type":"relay","type":"relay"}', "x" * (2 << 20),
])
def test_a_broken_frame_after_the_attach_is_dropped_never_raised(frame: Any) -> None:
    net, _, b = two()
    b = attached_client(net)
    out = net.feed("bob", frame)
    assert [type(o) for o in out] == [Dropped] and b.client.attached


def test_a_relay_ack_is_reported_and_an_error_after_the_attach_does_not_close() -> None:
    net, _, b = two()
    b = attached_client(net)
    assert net.feed("bob", {"type": "relay_ack", "msg_id": "m", "status": "queued"}) == [
        Queued("m")]
    assert net.feed("bob", {"type": "error", "code": "queue_full", "message": "m"}) == [
        RelayError("queue_full", "m")]
    assert b.client.attached


def test_replaced_by_another_attach_closes() -> None:
    net, _, _ = two()
    attached_client(net)
    out = net.feed("bob", {"type": "error", "code": "replaced", "message": "again"})
    assert isinstance(out[-1], Close)


# --- the ack rule (SPEC 7.7 step 3, from the node's side) ---------------------------------


def test_only_the_stored_envelopes_the_node_took_are_acknowledged() -> None:
    """The relay deletes what we ack. A link that is full takes only some: the rest
    must stay in the mailbox (the old shell acked the whole batch and lost them)."""
    net, a, b = two()
    b.links[a.who.node_id] = []
    b.client.open_link(a.who.node_id)
    b.room[a.who.node_id] = 2
    bob_offline_with(net, 1, 2, 3, 4, 5)
    net.attach("bob")
    assert b.took(a.who.node_id) == [1, 2]
    assert len(b.acks) == 2
    assert net.stored_for("bob") == [3, 4, 5]  # not taken: not acked, not lost


def test_what_was_not_taken_is_offered_again_and_acked_once_taken() -> None:
    net, a, b = two()
    b.links[a.who.node_id] = []
    b.client.open_link(a.who.node_id)
    b.room[a.who.node_id] = 0
    bob_offline_with(net, 1, 2, 3)
    net.attach("bob")
    assert b.took(a.who.node_id) == [] and b.acks == [] and b.client.held == 3
    t = net.now
    net.settle(t + RETRY_MS - 1)
    assert len(b.offered) == 1  # not yet
    b.room[a.who.node_id] = 1
    net.settle(t + RETRY_MS)
    assert b.took(a.who.node_id) == [1] and net.stored_for("bob") == [2, 3]
    b.room.pop(a.who.node_id)
    net.settle(net.now + RETRY_CAP_MS)
    assert b.took(a.who.node_id) == [1, 2, 3] and net.stored_for("bob") == []
    assert sorted(b.acks) == sorted(set(b.acks)) and len(b.acks) == 3


def test_offers_back_off_while_nothing_is_taken() -> None:
    net, a, b = two()
    b.links[a.who.node_id] = []
    b.client.open_link(a.who.node_id)
    b.room[a.who.node_id] = 0
    bob_offline_with(net, 1)
    net.attach("bob")
    gaps = []
    for _ in range(6):
        before = net.now
        dl = b.client.next_deadline()
        assert dl is not None
        gaps.append(dl - before)
        net.settle(dl)
    assert gaps == [RETRY_MS, RETRY_MS << 1, RETRY_MS << 2, RETRY_MS << 3, RETRY_MS << 4,
                    RETRY_CAP_MS], gaps
    assert b.acks == [] and net.stored_for("bob") == [1]


def test_newer_envelopes_wait_behind_held_ones_so_the_link_sees_them_in_order() -> None:
    net, a, b = two()
    net.attach("alice", "bob")
    b.links[a.who.node_id] = []
    b.client.open_link(a.who.node_id)
    b.room[a.who.node_id] = 1
    net.send("alice", "bob", 1, 2)  # live: 1 taken, 2 held
    b.room[a.who.node_id] = 5
    net.send("alice", "bob", 3)  # live too, but 2 waits: 3 goes behind it
    assert b.took(a.who.node_id) == [1]
    net.settle(net.now + RETRY_CAP_MS)
    assert b.took(a.who.node_id) == [1, 2, 3]


def test_a_hello_while_the_hub_has_no_slot_waits_and_opens_the_link_later() -> None:
    net, a, b = two()
    b = attached_client(net)
    b.slots = False
    alice_id = a.who.node_id
    hello = json.loads(wire(a.who, b.who, 10, "hello"))
    net.feed("bob", relay_frame_to(b, "alice", 10, qid=40, envelope=hello))
    net.feed("bob", relay_frame_to(b, "alice", 11, qid=41))  # waits behind its hello
    assert alice_id not in b.links and b.acks == [] and b.client.held == 2
    b.slots = True
    net.settle(net.now + RETRY_MS)
    assert b.took(alice_id) == [10, 11] and sorted(b.acks) == [40, 41]
    assert [d.opens for d in b.offered] == [True, True]


def test_a_duplicate_of_a_taken_envelope_is_dropped_and_acknowledged() -> None:
    net, _, b = two()
    b = attached_client(net)
    carol = ident("carol").node_id
    hello = json.loads(wire(ident("carol"), b.who, 1, "hello"))
    net.feed("bob", relay_frame_to(b, "carol", 1, envelope=hello))
    net.feed("bob", relay_frame_to(b, "carol", 1, qid=9, envelope=hello))
    net.settle()
    assert b.took(carol) == [1] and b.acks == [9] and len(b.offered) == 1


def test_held_envelopes_of_a_link_that_closed_are_acknowledged() -> None:
    net, a, b = two()
    b.links[a.who.node_id] = []
    b.client.open_link(a.who.node_id)
    b.room[a.who.node_id] = 0
    bob_offline_with(net, 1, 2)
    net.attach("bob")
    assert b.client.held == 2
    b.client.close_link(a.who.node_id, net.now)
    net.settle()
    assert b.client.held == 0 and len(b.acks) == 2 and net.stored_for("bob") == []


def test_envelopes_not_taken_by_a_link_that_closed_meanwhile_are_acked_at_the_next_offer(
) -> None:
    net, _, b = two()
    b = attached_client(net)
    c, carol = b.client, ident("carol").node_id
    c.open_link(carol)
    (d,) = c.receive(json.dumps(relay_frame_to(b, "carol", 1, qid=4)), net.now)
    assert isinstance(d, Deliver) and not d.opens
    c.close_link(carol, net.now)  # the link went while the shell was handing it over
    assert c.delivered(d, 0, net.now) == []
    assert c.held == 1 and 4 not in b.acks
    net.settle(net.now + RETRY_MS)
    assert c.held == 0 and b.acks == [4]


def test_acks_go_out_in_frames_of_at_most_a_thousand_qids() -> None:
    net, _, b = two()
    b = attached_client(net)
    carol = ident("carol")
    b.links[carol.node_id] = []
    b.client.open_link(carol.node_id)
    # A relay hands us 2500 stored envelopes in one read: one ack pass after it.
    c = b.client
    for i in range(2500):
        for o in c.receive(json.dumps(relay_frame_to(b, "carol", i, qid=i + 1)), net.now):
            assert isinstance(o, Deliver)
            c.delivered(o, 1, net.now)
    acks = [json.loads(o.wire) for o in c.on_timer(net.now) if isinstance(o, Send)]
    assert [len(f["qids"]) for f in acks] == [MAX_ACK_QIDS, MAX_ACK_QIDS, 500]
    assert c.on_timer(net.now) == []


# --- reconnects -------------------------------------------------------------------------------


def test_after_a_reconnect_what_was_not_taken_comes_again_from_the_mailbox() -> None:
    net, a, b = two()
    b.links[a.who.node_id] = []
    b.client.open_link(a.who.node_id)
    b.room[a.who.node_id] = 1
    bob_offline_with(net, 1, 2, 3)
    net.attach("bob")
    assert b.took(a.who.node_id) == [1] and b.client.held == 2
    net.drop(b)  # held stored ones are let go: the relay has them
    assert b.client.held == 0
    b.room.pop(a.who.node_id)
    net.settle(net.now + 60_000)
    assert b.took(a.who.node_id) == [1, 2, 3] and net.stored_for("bob") == []


def test_live_envelopes_held_over_a_reconnect_are_kept() -> None:
    net, a, b = two()
    net.attach("alice", "bob")
    b.links[a.who.node_id] = []
    b.client.open_link(a.who.node_id)
    b.room[a.who.node_id] = 0
    net.send("alice", "bob", 1)
    net.drop(b)
    assert b.client.held == 1  # the relay does not keep a live one: we do
    b.room.pop(a.who.node_id)
    net.settle(net.now + 60_000)
    assert b.took(a.who.node_id) == [1]


def test_what_does_not_fit_stays_in_the_mailbox_and_a_reattach_brings_it_in_order() -> None:
    net, a, b = two(max_held=2)
    b.links[a.who.node_id] = []
    b.client.open_link(a.who.node_id)
    b.room[a.who.node_id] = 1
    bob_offline_with(net, *range(1, 7))
    net.attach("bob")
    # 1 taken, 2 and 3 held, 4..6 left to the relay (and kept from the link: order).
    assert b.took(a.who.node_id) == [1] and b.client.held == 2
    assert net.stored_for("bob") == [2, 3, 4, 5, 6]
    b.room.pop(a.who.node_id)
    net.settle(net.now + RETRY_MS)
    assert b.took(a.who.node_id) == [1, 2, 3]
    assert Close(1000, "redeliver") in b.events  # nothing held: ask for the rest again
    net.settle(net.now + 60_000)
    assert b.took(a.who.node_id) == [1, 2, 3, 4, 5, 6] and net.stored_for("bob") == []


def test_frames_after_the_client_let_the_connection_go_are_ignored() -> None:
    net, _, b = two()
    b = attached_client(net)
    out = net.feed("bob", {"type": "error", "code": "replaced", "message": ""})
    assert isinstance(out[-1], Close)
    c = b.client
    assert c.receive(json.dumps(relay_frame_to(b, "carol", 1, qid=3)), net.now) == []
