"""A relay broker and the nodes attached to it, joined by lists (no sockets, no clock).

``Net`` plays every shell: a real ``RelayServer`` with its store as a list, and for each
node a real ``RelayClient`` whose shell is ``Node`` — links are lists with a capacity
(what a full link queue looks like), the hub has handshake slots or not. Time is an
int the test moves; ``settle`` runs every machine's due timers until nothing is left.
Shared by tests/unit/test_relay_client.py and tests/property/test_relay_client_props.py;
tests/unit/test_relay_deferred.py takes its identities, rng and envelopes (``ident``,
``rng_for``, ``wire``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hd_protocol import Envelope, Identity, encode_envelope, make_envelope, sign_envelope
from hd_protocol.brokers.relay import (
    CloseConn,
    DeleteQueued,
    LoadQueued,
    QueuedEnvelope,
    RelayServer,
    StoreQueued,
    ToConn,
)
from hd_protocol.brokers.relay_client import Close, Deliver, Dial, Output, RelayClient
from hd_protocol.effects import Send

T0 = 10_000
WALL = 1_764_000_000_000


def rng_for(seed: str) -> Callable[[int], bytes]:
    counter = iter(range(1 << 62))

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()
        return out[:n]

    return rng


def ident(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(f"relay-client-test/{name}".encode()).digest())


RELAY = ident("the relay")


def wire(src: Identity, dst: Identity, n: int, type_: str = "peer_chat") -> str:
    e = make_envelope(type_, msg_id=f"{n:032x}", src=src.node_id, dst=dst.node_id, ts=WALL,
                      data={"n": n})
    return encode_envelope(sign_envelope(e, src))


@dataclass
class Node:
    """One node's shell: what its links took, and how much more they take."""

    who: Identity
    client: RelayClient
    conn: int | None = None
    links: dict[str, list[Envelope]] = field(default_factory=dict)
    room: dict[str, int] = field(default_factory=dict)  # peer -> envelopes it takes now
    slots: bool = True  # the hub has a handshake slot for an inbound link
    events: list[Output] = field(default_factory=list)  # all but Send and Deliver
    offered: list[Deliver] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)  # every qid it acknowledged
    linked_at_ack: dict[int, frozenset[str]] = field(default_factory=dict)  # qid -> links
    started: bool = False  # its shell runs the machine's timers (``Net.attach``)

    def took(self, peer: str) -> list[int]:
        return [e.data["n"] for e in self.links.get(peer, [])]


class Net:
    def __init__(self, *, delivery_batch: int = 256, **client_kw: Any) -> None:
        self.server = RelayServer(RELAY, rng=rng_for("relay"), delivery_batch=delivery_batch)
        self.store: list[QueuedEnvelope] = []
        self.nodes: dict[str, Node] = {}
        self.by_conn: dict[int, Node] = {}
        self.now = T0
        self.sent: dict[int, list[dict[str, Any]]] = {}  # conn -> frames the relay got
        self.ever_stored: dict[int, tuple[str, int]] = {}  # qid -> (dst, envelope's n)
        self._conn = iter(range(1, 1 << 62))
        self._qid = iter(range(1, 1 << 62))
        self.client_kw = client_kw

    # --- the relay's shell --------------------------------------------------------------

    def _server(self, outs: list[Any]) -> None:
        for o in outs:
            if isinstance(o, ToConn):
                node = self.by_conn.get(o.conn)
                if node is not None:
                    self._client(node, node.client.receive(o.frame, self.now))
            elif isinstance(o, CloseConn):
                node = self.by_conn.get(o.conn)
                if node is not None:
                    self.drop(node)
            elif isinstance(o, StoreQueued):
                qid = next(self._qid)
                self.ever_stored[qid] = (o.dst, o.envelope["data"]["n"])
                self.store.append(QueuedEnvelope(qid, o.dst, o.src, o.envelope, o.size))
            elif isinstance(o, LoadQueued):
                items = [q for q in self.store if q.dst == o.node][:o.limit]
                self._server(self.server.deliver(o.conn, items))
            elif isinstance(o, DeleteQueued):
                self.store = [q for q in self.store
                              if not (q.dst == o.node and q.qid in o.qids)]

    # --- each node's shell --------------------------------------------------------------

    def add(self, name: str, who: Identity | None = None, **kw: Any) -> Node:
        who = who or ident(name)
        node = Node(who, RelayClient(who, rng=rng_for(name), **{**self.client_kw, **kw}))
        self.nodes[name] = node
        return node

    def _client(self, node: Node, outs: list[Output]) -> None:
        for o in outs:
            if isinstance(o, Send):
                assert node.conn is not None, "a frame with no connection"
                frame = json.loads(o.wire)
                self.sent.setdefault(node.conn, []).append(frame)
                if frame["type"] == "ack":
                    node.acks += frame["qids"]
                    node.linked_at_ack.update(dict.fromkeys(frame["qids"],
                                                            frozenset(node.links)))
                self._server(self.server.receive(node.conn, o.wire, self.now, WALL))
            elif isinstance(o, Dial):
                node.conn = conn = next(self._conn)
                self.by_conn[conn] = node
                self._client(node, node.client.connected(self.now))
                self._server(self.server.connect(conn, self.now))
            elif isinstance(o, Close):
                node.events.append(o)
                self.drop(node)
            elif isinstance(o, Deliver):
                node.offered.append(o)
                self._client(node, node.client.delivered(o, self.take(node, o), self.now))
            else:
                node.events.append(o)

    def take(self, node: Node, d: Deliver) -> int:
        if d.peer not in node.links:
            if not d.opens or not node.slots:
                return 0
            node.links[d.peer] = []
            node.client.open_link(d.peer)
        n = min(len(d.items), node.room.get(d.peer, 1 << 30))
        node.links[d.peer] += [it.envelope for it in d.items[:n]]
        if d.peer in node.room:
            node.room[d.peer] -= n
        return n

    def drop(self, node: Node) -> None:
        """The node's connection is gone (either side ended it)."""
        if node.conn is None:
            return
        conn, node.conn = node.conn, None
        del self.by_conn[conn]
        self._server(self.server.disconnect(conn, self.now))
        self._client(node, node.client.disconnected(self.now))

    # --- driving ------------------------------------------------------------------------

    def settle(self, until: int | None = None) -> None:
        """Fire every due timer (moving time to each deadline) up to ``until``."""
        until = self.now if until is None else until
        for _ in range(10_000):
            due = [(dl, n) for n in self.nodes.values()
                   if n.started and (dl := n.client.next_deadline()) is not None and dl <= until]
            if not due:
                self.now = max(self.now, until)
                return
            dl, node = min(due, key=lambda x: x[0])
            self.now = max(self.now, dl)
            self._client(node, node.client.on_timer(self.now))
        raise AssertionError("timers never settle")

    def attach(self, *names: str) -> None:
        for name in names:
            self.nodes[name].started = True
        self.settle()
        for name in names:
            assert self.nodes[name].client.attached, name

    def send(self, src: str, dst: str, *numbers: int, type_: str = "peer_chat") -> None:
        a, b = self.nodes[src], self.nodes[dst]
        wires = [wire(a.who, b.who, n, type_) for n in numbers]
        self._client(a, list(a.client.send(b.who.node_id, wires)))
        self.settle()

    def feed(self, name: str, frame: str | dict[str, Any]) -> list[Output]:
        """A frame from the relay, as a lying relay could send it."""
        node = self.nodes[name]
        raw = frame if isinstance(frame, str) else json.dumps(frame)
        outs = node.client.receive(raw, self.now)
        self._client(node, outs)
        return outs

    def stored_for(self, name: str) -> list[int]:
        node_id = self.nodes[name].who.node_id
        return [q.envelope["data"]["n"] for q in self.store if q.dst == node_id]
