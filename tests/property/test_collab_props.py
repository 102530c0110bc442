"""SPEC 6.1 property: replicas of a pane converge on the greatest state written.

A sans-IO network of 2..5 ``Panes`` machines joined by an arbitrary connected share
graph. Hypothesis drives local writes (on fresh and stale base revisions), delivery of
in-flight messages in any order, duplication, and sessions dropping (in-flight
messages lost) and reopening (catch-up). Once every link is up again and every message
delivered, all replicas must hold the same ``(rev, author, text)`` — the greatest one
written — and no ``(rev, author)`` may have crossed a link twice in the same direction
within one session.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol.apps.collab import (
    Pane,
    Panes,
    PeerErrorReply,
    PersistPane,
    SendToPeer,
    TabReply,
    parse_op,
)
from hd_protocol.peer.session import Message

NODES = [c * 16 for c in "abcde"]
KEY = "scratch"
# Far above what any example needs; hitting it means messages loop.
MAX_DELIVERIES = 5_000


@dataclass
class Edge:
    u: int
    v: int
    # "both": each side shares with the other (any levels); "u"/"v": only that side
    # shares, which needs the other to trust it (sharing becomes mutual on contact).
    sharing: str
    level_uv: str  # u's view of v
    level_vu: str
    open: bool = True
    epoch: int = 0


@dataclass
class Net:
    machines: list[Panes]
    edges: dict[frozenset[int], Edge]
    queue: list[tuple[int, int, int, Message]] = field(default_factory=list)
    sent: Counter[tuple[int, int, int, int, str]] = field(default_factory=Counter)
    written: set[tuple[int, str, str]] = field(default_factory=lambda: {(0, "", "")})
    ids: int = 0

    def run(self, src: int, effects: list[Any]) -> None:
        for e in effects:
            assert not isinstance(e, PeerErrorReply), e  # every peer here is permitted
            if isinstance(e, PersistPane) and e.pane.author == NODES[src]:
                self.written.add((e.pane.rev, e.pane.author, e.pane.text))
            if isinstance(e, SendToPeer):
                dst = NODES.index(e.peer_id)
                edge = self.edges[frozenset({src, dst})]
                assert edge.open, "a send to a peer without a live session"
                self.ids += 1
                msg = Message(e.type, f"{self.ids:032x}", e.re, e.data, 0)
                self.queue.append((src, dst, edge.epoch, msg))
                if e.type == "collab_op":
                    self.sent[(src, dst, edge.epoch, e.data["rev"], e.data["author"])] += 1

    def open(self, edge: Edge) -> None:
        edge.open = True
        edge.epoch += 1
        m = self.machines
        self.run(edge.u, m[edge.u].session_opened(NODES[edge.v], edge.level_uv))  # type: ignore[arg-type]
        self.run(edge.v, m[edge.v].session_opened(NODES[edge.u], edge.level_vu))  # type: ignore[arg-type]

    def drop(self, edge: Edge) -> None:
        edge.open = False
        self.machines[edge.u].session_closed(NODES[edge.v])
        self.machines[edge.v].session_closed(NODES[edge.u])
        link = {edge.u, edge.v}
        self.queue = [q for q in self.queue if {q[0], q[1]} != link]

    def deliver(self, index: int) -> None:
        src, dst, epoch, msg = self.queue.pop(index % len(self.queue))
        assert self.edges[frozenset({src, dst})].epoch == epoch
        self.run(dst, self.machines[dst].receive(NODES[src], msg))

    def write(self, node: int, stale: int, text: str) -> None:
        pane = self.machines[node].pane(KEY)
        out = self.machines[node].local_write(KEY, max(0, pane.rev - stale), text)
        if stale and pane.rev:
            assert out == [TabReply("collab", "rejected", pane.op_data())]
        self.run(node, out)


@st.composite
def networks(draw: st.DrawFn) -> Net:
    n = draw(st.integers(2, len(NODES)))
    pairs = {frozenset({i, draw(st.integers(0, i - 1))}) for i in range(1, n)}  # a tree
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=6))
    pairs |= {frozenset(p) for p in extra if p[0] != p[1]}
    edges = {}
    for pair in sorted(pairs, key=sorted):
        u, v = sorted(pair)
        sharing = draw(st.sampled_from(["both", "u", "v"]))
        levels = st.sampled_from(["trusted", "guest"]) if sharing == "both" else st.just("trusted")
        edges[pair] = Edge(u, v, sharing, draw(levels), draw(levels))
    net = Net([Panes(NODES[i]) for i in range(n)], edges)
    for edge in edges.values():
        net.open(edge)
    for edge in edges.values():
        if edge.sharing in ("both", "u"):
            net.run(edge.u, net.machines[edge.u].share(KEY, NODES[edge.v]))
        if edge.sharing in ("both", "v"):
            net.run(edge.v, net.machines[edge.v].share(KEY, NODES[edge.u]))
    return net


steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 4), st.sampled_from([0, 0, 1, 2]),
                  st.text(alphabet="xyz", max_size=3)),
        st.tuples(st.just("deliver"), st.integers(0, 1000)),
        st.tuples(st.just("deliver"), st.integers(0, 1000)),
        st.tuples(st.just("duplicate"), st.integers(0, 1000)),
        st.tuples(st.just("drop"), st.integers(0, 100)),
        st.tuples(st.just("reopen"), st.integers(0, 100)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(networks(), steps, st.randoms(use_true_random=False))
def test_all_replicas_converge_on_the_greatest_state_written(
    net: Net, plan: list[tuple[Any, ...]], rnd: random.Random
) -> None:
    edges = list(net.edges.values())
    for step in plan:
        kind = step[0]
        if kind == "write":
            net.write(step[1] % len(net.machines), step[2], step[3])
        elif kind == "deliver" and net.queue:
            net.deliver(step[1])
        elif kind == "duplicate" and net.queue:
            net.queue.append(net.queue[step[1] % len(net.queue)])
        elif kind == "drop" and edges[step[1] % len(edges)].open:
            net.drop(edges[step[1] % len(edges)])
        elif kind == "reopen" and not edges[step[1] % len(edges)].open:
            net.open(edges[step[1] % len(edges)])
    for edge in edges:
        if not edge.open:
            net.open(edge)
    deliveries = 0
    while net.queue:
        net.deliver(rnd.randrange(len(net.queue)))
        deliveries += 1
        assert deliveries < MAX_DELIVERIES, "messages keep looping"

    greatest = max(net.written)
    for m in net.machines:
        p = m.pane(KEY)
        assert (p.rev, p.author, p.text) == greatest
    # SPEC 6.1: an op crosses each link at most once (per direction, per session).
    assert all(count == 1 for count in net.sent.values()), net.sent.most_common(3)


# --- never a crash on peer input --------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=8,
)
payloads = st.one_of(
    st.dictionaries(st.sampled_from(["paneKey", "rev", "author", "text", "x"]), json_values),
    st.fixed_dictionaries({
        "paneKey": st.sampled_from([KEY, "", "bad key", "a" * 129]) | json_values,
        "rev": st.integers(-2, 3) | json_values,
        "author": st.sampled_from(["", NODES[1], NODES[1].upper()]) | json_values,
        "text": st.text(max_size=10) | json_values,
    }),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["collab_op", "collab_join", "collab_leave"]), payloads,
       st.sampled_from(["trusted", "guest"]))
def test_any_inbound_payload_yields_effects_or_a_typed_error_never_an_exception(
    type_: str, data: dict[str, Any], level: str
) -> None:
    h = Panes(NODES[0], [Pane(KEY, "t", 1, NODES[0], frozenset({NODES[2]}))])
    h.session_opened(NODES[1], level)  # type: ignore[arg-type]
    before = h.pane(KEY)
    out = h.receive(NODES[1], Message(type_, "0" * 32, None, data, 0))
    errors = [e for e in out if isinstance(e, PeerErrorReply)]
    if errors:
        assert out == errors and len(errors) == 1
        assert errors[0].code in {"bad_request", "too_large", "forbidden"}
        assert h.pane(KEY) == before
    elif type_ == "collab_op":
        parse_op(data, 512 * 1024)  # accepted means valid
