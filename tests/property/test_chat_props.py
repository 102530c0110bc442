"""SPEC 6.2 properties: nothing is lost, nothing is duplicated, storage comes first.

Two nodes, each a ``ChatLog`` over a simulated store that applies its persist effects
(insert-only for messages, so an overwrite fails the test). Hypothesis drives sends on
both sides, delivery of in-flight envelopes in any order, duplication, sessions
dropping (in-flight envelopes lost), node restarts (the machine rebuilt from its store)
and read marks. Once the session is up and everything delivered:

- every message either side created is stored exactly once on the other side, with
  its text, and marked ``delivered`` at its sender;
- each node's store matches its machine (so a restart loses nothing);
- a send effect never leaves before its message is stored; an ack never leaves
  before the acked message is stored;
- unread counts equal the inbound messages after the read mark.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol.apps.chat import (
    ChatLog,
    ChatMessage,
    PersistMessage,
    PersistReadMark,
    PersistStatus,
    SendChat,
)
from hd_protocol.apps.collab import PeerErrorReply, SendToPeer
from hd_protocol.peer.session import Message

NODES = ["a" * 16, "b" * 16]
MAX_DELIVERIES = 5_000


@dataclass
class Store:
    messages: dict[tuple[str, str], ChatMessage] = field(default_factory=dict)
    read_marks: dict[str, int] = field(default_factory=dict)


@dataclass
class Node:
    index: int
    rng: Any
    store: Store = field(default_factory=Store)
    log: ChatLog | None = None

    def boot(self) -> ChatLog:
        self.log = ChatLog(
            NODES[self.index], rng=self.rng, messages=list(self.store.messages.values()),
            read_marks=self.store.read_marks, self_name=f"node{self.index}",
        )
        return self.log


@dataclass
class Net:
    nodes: list[Node]
    live: bool = False
    queue: list[tuple[int, Message]] = field(default_factory=list)  # (dst, msg)
    created: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (sender, text)
    clock: int = 0
    ids: int = 0

    def machine(self, i: int) -> ChatLog:
        m = self.nodes[i].log
        assert m is not None
        return m

    def run(self, i: int, effects: list[Any]) -> None:
        store = self.nodes[i].store
        other = NODES[1 - i]
        for e in effects:
            assert not isinstance(e, PeerErrorReply), e
            if isinstance(e, PersistMessage):
                key = (e.message.peer_id, e.message.id)
                assert key not in store.messages, "a stored message was overwritten"
                store.messages[key] = e.message
                if e.message.direction == "out":
                    self.created[e.message.id] = (i, e.message.text)
            elif isinstance(e, PersistStatus):
                key = (e.peer_id, e.id)
                store.messages[key] = replace(store.messages[key], status=e.status)
            elif isinstance(e, PersistReadMark):
                store.read_marks[e.peer_id] = e.seq
            elif isinstance(e, SendChat):
                # SPEC 6.2: stored (queued) before anything goes on the wire.
                assert (e.peer_id, e.msg_id) in store.messages
                assert self.live, "send without a session"
                self.clock += 1
                self.queue.append(
                    (1 - i, Message("peer_chat", e.msg_id, None, e.data, self.clock))
                )
            elif isinstance(e, SendToPeer):
                assert e.type == "peer_chat_ack" and e.peer_id == other
                assert store.messages[(other, e.data["id"])].direction == "in"
                assert self.live, "ack without a session"
                self.ids += 1
                self.queue.append(
                    (1 - i, Message(e.type, f"{self.ids:032x}", e.re, e.data, self.clock))
                )

    def open(self) -> None:
        self.live = True
        for i in (0, 1):
            self.run(i, self.machine(i).session_opened(NODES[1 - i]))

    def drop(self) -> None:
        self.live = False
        self.queue.clear()
        for i in (0, 1):
            self.machine(i).session_closed(NODES[1 - i])

    def deliver(self, index: int) -> None:
        dst, msg = self.queue.pop(index % len(self.queue))
        self.clock += 1
        self.run(dst, self.machine(dst).receive(NODES[1 - dst], msg, self.clock))


def rng_for(i: int) -> Any:
    counter = itertools.count(1)
    return lambda n: bytes([i]) + next(counter).to_bytes(n - 1, "big")


steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 1), st.text(alphabet="ab é", max_size=4)),
        st.tuples(st.just("deliver"), st.integers(0, 1000)),
        st.tuples(st.just("deliver"), st.integers(0, 1000)),
        st.tuples(st.just("duplicate"), st.integers(0, 1000)),
        st.tuples(st.just("toggle"), st.just(0)),
        st.tuples(st.just("restart"), st.integers(0, 1)),
        st.tuples(st.just("read"), st.integers(0, 1)),
    ),
    max_size=50,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.booleans(), st.randoms(use_true_random=False))
def test_every_message_arrives_exactly_once_and_survives_restarts(
    plan: list[tuple[Any, ...]], start_live: bool, rnd: random.Random
) -> None:
    net = Net([Node(0, rng_for(0)), Node(1, rng_for(1))])
    for node in net.nodes:
        node.boot()
    if start_live:
        net.open()
    for kind, arg, *rest in plan:
        if kind == "send":
            if rest[0].strip():
                net.clock += 1
                net.run(arg, net.machine(arg).send(NODES[1 - arg], rest[0], net.clock))
        elif kind == "deliver" and net.queue:
            net.deliver(arg)
        elif kind == "duplicate" and net.queue:
            net.queue.append(net.queue[arg % len(net.queue)])
        elif kind == "toggle":
            net.drop() if net.live else net.open()
        elif kind == "restart":
            # A restart ends the session; the machine comes back from its store only.
            if net.live:
                net.drop()
            net.nodes[arg].boot()
        elif kind == "read":
            net.run(arg, net.machine(arg).read(NODES[1 - arg]))
    if not net.live:
        net.open()
    for _ in range(MAX_DELIVERIES):
        if not net.queue:
            break
        net.deliver(rnd.randrange(len(net.queue)))
    assert not net.queue, "acks and messages keep bouncing"

    for i in (0, 1):
        node, peer = net.nodes[i], NODES[1 - i]
        hist = net.machine(i).history(peer)
        # The store is the machine: a restart now would lose nothing.
        assert {(m.peer_id, m.id): m for m in hist} == node.store.messages
        assert [m.seq for m in hist] == sorted({m.seq for m in hist})
        outbound = {m.id: m for m in hist if m.direction == "out"}
        inbound = {m.id: m for m in hist if m.direction == "in"}
        assert all(m.status == "delivered" for m in outbound.values())
        sent_by_peer = {k: text for k, (s, text) in net.created.items() if s == 1 - i}
        assert {k: m.text for k, m in inbound.items()} == sent_by_peer
        mark = node.store.read_marks.get(peer, 0)
        unread = sum(1 for m in inbound.values() if m.seq > mark)
        assert net.machine(i).unread_counts().get(peer, 0) == unread


# --- never a crash on peer input --------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["peer_chat", "peer_chat_ack"]),
    st.dictionaries(st.sampled_from(["text", "from_name", "id", "x"]),
                    json_values | st.text(alphabet="0123456789abcdef", min_size=32,
                                          max_size=32)),
)
def test_any_inbound_payload_yields_effects_or_a_typed_error_never_an_exception(
    type_: str, data: dict[str, Any]
) -> None:
    c = ChatLog(NODES[0], rng=rng_for(0))
    c.session_opened(NODES[1])
    out = c.receive(NODES[1], Message(type_, "0" * 32, None, data, 0), now=1)
    errors = [e for e in out if isinstance(e, PeerErrorReply)]
    if errors:
        assert out == errors and errors[0].code in {"bad_request", "too_large"}
        assert c.history(NODES[1]) == []
