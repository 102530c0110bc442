"""Invariants of ``RelayClient`` against the real ``RelayServer`` (SPEC 7.7).

Random runs of sends (live or stored, as the receiver's attachment comes and goes),
links that take some or none, a hub with or without handshake slots, reconnects and
time. After every step: a link sees each peer's envelopes in the order they were sent,
never one twice; the node acknowledged only stored envelopes a link took; what it holds
stays within its bounds. At the end, with room everywhere: nothing that was stored is
lost. And nothing a relay sends makes the machine raise.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from relay_client_net import T0, Net, ident, wire

from hd_protocol.brokers.frames import challenge
from hd_protocol.brokers.relay_client import (
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

SENDERS = ("alice", "carol")  # alice's link is open from the start; carol opens by hello

step = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(SENDERS), st.integers(1, 6)),
    st.tuples(st.just("room"), st.sampled_from(SENDERS), st.integers(0, 4) | st.none()),
    st.tuples(st.just("slots"), st.booleans()),
    st.tuples(st.just("bob"), st.sampled_from(["drop", "away", "back"])),
    st.tuples(st.just("tick"), st.integers(0, 6_000)),
)


def _world(max_held: int, delivery_batch: int) -> tuple[Net, dict[str, int]]:
    net = Net(delivery_batch=delivery_batch, max_held=max_held)
    for name in ("alice", "carol", "bob"):
        net.add(name)
    bob = net.nodes["bob"]
    bob.links[ident("alice").node_id] = []
    bob.client.open_link(ident("alice").node_id)
    net.attach("alice", "carol", "bob")
    return net, {"alice": 1, "carol": 0}  # carol's first (n = 0) is her hello


def _check(net: Net, max_held: int) -> None:
    bob = net.nodes["bob"]
    for name in SENDERS:
        got = bob.took(ident(name).node_id)
        assert got == sorted(set(got)), (name, got)  # in order, never twice
    # Numbers are distinct across senders (alice odd, carol even): an n names one envelope.
    taken = {n for name in SENDERS for n in bob.took(ident(name).node_id)}
    for qid in bob.acks:
        dst, n = net.ever_stored[qid]
        # Acked only once taken, or when it never can be: a session envelope from a peer
        # with no link (its hello was lost: a session that is gone, SPEC 7.7's ack rule).
        assert dst == bob.who.node_id and (n in taken or _gone_session(
            n, bob.linked_at_ack[qid])), (qid, n)
    assert bob.client.held <= max_held


def _sender(n: int) -> str:
    return ident("alice" if n % 2 else "carol").node_id


def _gone_session(n: int, links: frozenset[str]) -> bool:
    return n != 0 and _sender(n) not in links  # carol's n = 0 is her hello


@settings(max_examples=120, deadline=None)
@example(steps=[("slots", False), ("send", "carol", 2), ("bob", "drop"), ("send", "carol", 1),
                ("tick", 750)], max_held=2, batch=1)
@given(steps=st.lists(step, max_size=40), max_held=st.sampled_from([2, 8, 1024]),
       batch=st.sampled_from([1, 3, 256]))
def test_in_order_acked_only_when_taken_and_nothing_stored_is_lost(
    steps: list[tuple[Any, ...]], max_held: int, batch: int
) -> None:
    net, next_n = _world(max_held, batch)
    bob = net.nodes["bob"]
    sent: dict[str, list[int]] = {name: [] for name in SENDERS}
    for op in steps:
        if op[0] == "send":
            _, src, count = op
            nums = [next_n[src] + 2 * i for i in range(count)]
            next_n[src] = nums[-1] + 2
            sent[src] += nums
            if nums[0] == 0:  # carol's first: her hello opens bob's link to her
                net.send(src, "bob", 0, type_="hello")
                nums = nums[1:]
            if nums:
                net.send(src, "bob", *nums)
        elif op[0] == "room":
            peer = ident(op[1]).node_id
            if op[2] is None:
                bob.room.pop(peer, None)
            else:
                bob.room[peer] = op[2]
        elif op[0] == "slots":
            bob.slots = op[1]
        elif op[0] == "bob":
            if op[1] in ("drop", "away"):
                net.drop(bob)
            bob.started = op[1] != "away"
        else:
            net.settle(net.now + op[1])
        _check(net, max_held)
    bob.room.clear()
    bob.slots = bob.started = True
    for _ in range(20):  # reconnects, re-offers and redeliveries all run out
        net.settle(net.now + 60_000)
    _check(net, max_held)
    assert net.stored_for("bob") == []  # every stored one was taken and acknowledged
    taken = {n for name in SENDERS for n in bob.took(ident(name).node_id)}
    # ...but those of a session that never opened (its hello was live, and lost).
    assert {n for dst, n in net.ever_stored.values()
            if dst == bob.who.node_id and not _gone_session(n, frozenset(bob.links))} <= taken
    if max_held == 1024:  # room to hold everything: not even a live one is lost
        for name in SENDERS:
            assert bob.took(ident(name).node_id) == sent[name]


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
_frame = st.fixed_dictionaries(
    {"type": st.sampled_from(["relay", "relay_ack", "error", "attached", "challenge",
                              "ack", "x"])},
    optional={"from": st.sampled_from([ident("carol").node_id, "x"]) | _json,
              "envelope": _json, "qid": st.integers(-3, 2**63) | _json,
              "msg_id": _json, "code": _json, "message": _json, "queued": _json})
OUTPUTS = (Send, Dial, Close, Attached, Deliver, Queued, RelayError, Dropped)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(_frame.map(json.dumps) | st.text(max_size=40)
                       | st.binary(max_size=40), max_size=8),
       state=st.sampled_from(["challenged", "attaching", "attached"]))
def test_nothing_a_relay_sends_makes_the_machine_raise(
    frames: list[Any], state: str
) -> None:
    bob = ident("bob")
    c = RelayClient(bob, rng=lambda n: b"\x07" * n)
    c.on_timer(T0)
    c.connected(T0)
    if state != "challenged":
        c.receive(challenge(ident("relay"), b"\x01" * 32), T0)
    if state == "attached":
        c.receive(json.dumps({"type": "attached", "queued": 0}), T0)
        c.open_link(ident("carol").node_id)
        frames = [json.dumps({"type": "relay", "from": ident("carol").node_id,
                              "envelope": json.loads(wire(ident("carol"), bob, 1)),
                              "qid": 1})] + frames
    for raw in frames:
        for o in c.receive(raw, T0):
            assert isinstance(o, OUTPUTS)
            if isinstance(o, Deliver):
                c.delivered(o, 0, T0)
        for o in c.on_timer(T0 + 10_000_000):
            assert isinstance(o, OUTPUTS)
