"""The relay broker (SPEC 7.7) as one sans-IO machine, driven in memory.

``Broker`` plays the shell: ``ToConn`` lands in a connection's inbox, ``CloseConn``
marks it closed, and the store is a plain list (``StoreQueued`` appends with the next
qid, ``LoadQueued`` hands the oldest entries back through ``deliver``, ``DeleteQueued``
removes). Every output is also kept in one log, so the order of effects can be checked.
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
    LocalProtocolError,
    encode_envelope,
    make_envelope,
    sign_envelope,
    verify_envelope,
)
from hd_protocol.brokers.frames import encode_frame, parse_challenge
from hd_protocol.brokers.relay import (
    BAD_FRAMES_BEFORE_CLOSE,
    CloseConn,
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
from hd_protocol.envelope import envelope_from_obj
from hd_protocol.limits import DEFAULT_LIMITS, Limits

T0 = 2_000  # monotonic ms
WALL = 1_764_000_000_000  # Unix ms


def DeterministicRng(seed: str) -> Callable[[int], bytes]:  # noqa: N802 - reads as a type
    counter = iter(range(1 << 62))

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()
        return out[:n]

    return rng


def ident(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(f"relay-test/{name}".encode()).digest())


RELAY = ident("the relay")
OTHER_RELAY = ident("another relay")


class Broker:
    """A relay, its connections and its store, as lists."""

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.inbox: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.closed: dict[int, CloseConn] = {}
        self.store: list[QueuedEnvelope] = []
        self.log: list[Output] = []
        self._qid = iter(range(1, 1 << 62))

    def run(self, outs: list[Output]) -> list[Output]:
        for o in outs:
            self.log.append(o)
            if isinstance(o, ToConn):
                assert o.conn not in self.closed, f"a frame after closing {o.conn}"
                self.inbox[o.conn].append(json.loads(o.frame))
            elif isinstance(o, CloseConn):
                self.closed[o.conn] = o
            elif isinstance(o, StoreQueued):
                self.store.append(QueuedEnvelope(next(self._qid), o.dst, o.src, o.envelope,
                                                 o.size))
            elif isinstance(o, LoadQueued):
                items = [q for q in self.store if q.dst == o.node][:o.limit]
                self.run(self.server.deliver(o.conn, items))
            elif isinstance(o, DeleteQueued):
                self.store = [q for q in self.store
                              if not (q.dst == o.node and q.qid in o.qids)]
        return outs

    def connect(self, conn: int, now: int = T0) -> dict[str, Any]:
        self.run(self.server.connect(conn, now))
        (chal,) = self.take(conn)
        return chal

    def send(self, conn: int, frame: str | dict[str, Any], now: int = T0) -> list[Output]:
        raw = frame if isinstance(frame, str) else json.dumps(frame)
        start = len(self.log)
        self.run(self.server.receive(conn, raw, now, WALL))
        return self.log[start:]

    def attach(self, conn: int, who: Identity, now: int = T0) -> list[Output]:
        hello = parse_challenge(self.connect(conn, now))
        return self.send(conn, attach_frame(who, hello), now)

    def take(self, conn: int) -> list[dict[str, Any]]:
        out, self.inbox[conn] = self.inbox[conn], []
        return out

    def stored(self, node: str) -> list[str]:
        return [q.envelope["msg_id"] for q in self.store if q.dst == node]


def broker(**kw: Any) -> Broker:
    return Broker(RelayServer(RELAY, rng=DeterministicRng("relay"), **kw))


def wire(src: Identity, dst: str | None, n: int = 0, *, ttl: int = 8,
         text: str = "") -> str:
    e = make_envelope("peer_chat", msg_id=f"{n:032x}", src=src.node_id, dst=dst, ts=WALL,
                      data={"text": text or f"message {n}"}, ttl=ttl)
    return encode_envelope(sign_envelope(e, src))


def env(src: Identity, dst: str | None, n: int = 0, **kw: Any) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(wire(src, dst, n, **kw))
    return obj


def mid(n: int) -> str:
    return f"{n:032x}"


def codes(frames: list[dict[str, Any]]) -> list[str]:
    assert all(f["type"] == "error" for f in frames), frames
    return [f["code"] for f in frames]


def relayed(frames: list[dict[str, Any]]) -> list[str]:
    assert all(f["type"] == "relay" for f in frames), frames
    return [f["envelope"]["msg_id"] for f in frames]


# --- attach (SPEC 7.7 step 1) ------------------------------------------------------------


def test_a_good_attach_proof_is_answered_attached(alice: Identity) -> None:
    b = broker()
    chal = b.connect(1)
    assert chal["type"] == "challenge" and chal["server_id"] == RELAY.node_id
    assert chal["server_key"] == RELAY.public_key
    b.send(1, attach_frame(alice, parse_challenge(chal)))
    assert b.take(1) == [{"type": "attached", "queued": 0}]
    assert b.server.attached(alice.node_id) == 1 and 1 not in b.closed


def test_each_connection_gets_its_own_nonce() -> None:
    b = broker()
    assert b.connect(1)["nonce"] != b.connect(2)["nonce"]


@pytest.mark.parametrize("how", ["other signer", "id of another key", "key not a key",
                                 "sig not base64", "signed for another relay"])
def test_a_bad_attach_proof_is_auth_and_closes(alice: Identity, bob: Identity,
                                               how: str) -> None:
    b = broker()
    chal = b.connect(1)
    hello = parse_challenge(chal)
    if how == "signed for another relay":
        hello = replace(hello, server_id=OTHER_RELAY.node_id)
    f = json.loads(attach_frame(bob if how == "other signer" else alice, hello))
    if how == "other signer":
        f["node_id"], f["public_key"] = alice.node_id, alice.public_key
    elif how == "id of another key":
        f["node_id"] = bob.node_id
    elif how == "key not a key":
        f["public_key"] = "AAAA"
    elif how == "sig not base64":
        f["sig"] = "%%%"
    out = b.send(1, f)
    assert codes(b.take(1)) == ["auth"] and out[-1] == CloseConn(1, 1008,
                                                                 "authentication failed")
    assert b.server.attached(alice.node_id) is None and b.server.attached(bob.node_id) is None


def test_an_attach_replayed_on_another_connection_is_refused(alice: Identity) -> None:
    b = broker()
    frame = attach_frame(alice, parse_challenge(b.connect(1)))
    b.send(1, frame)
    b.connect(2)
    b.send(2, frame)
    assert codes(b.take(2)) == ["auth"] and 2 in b.closed
    assert b.server.attached(alice.node_id) == 1 and 1 not in b.closed


@pytest.mark.parametrize("frame", [
    {"type": "relay", "to": "a" * 16, "envelope": {}},
    {"type": "ack", "qids": [1]},
    {"type": "register"},
], ids=lambda f: f["type"])
def test_nothing_before_attach(frame: dict[str, Any]) -> None:
    b = broker()
    b.connect(1)
    b.send(1, frame)
    assert codes(b.take(1)) == ["unregistered"] and 1 not in b.closed
    assert b.store == []


@pytest.mark.parametrize("frame", [{"type": "attach"},
                                   {"type": "attach", "node_id": "x", "public_key": "y",
                                    "sig": "z", "extra": 1}])
def test_an_attach_without_exactly_its_fields_is_a_bad_request(frame: dict[str, Any]) -> None:
    b = broker()
    b.connect(1)
    b.send(1, frame)
    assert codes(b.take(1)) == ["bad_request"]


def test_attach_again_on_the_same_connection_is_a_bad_request(alice: Identity) -> None:
    b = broker()
    hello = parse_challenge(b.connect(1))
    b.send(1, attach_frame(alice, hello))
    b.take(1)
    b.send(1, attach_frame(alice, hello))
    assert codes(b.take(1)) == ["bad_request"] and b.server.attached(alice.node_id) == 1


def test_the_newest_attach_of_a_node_replaces_the_old_connection(
    alice: Identity, bob: Identity
) -> None:
    b = broker()
    b.attach(1, alice)
    b.take(1)
    b.attach(2, alice)
    assert codes(b.take(1)) == ["replaced"] and 1 in b.closed
    assert b.take(2) == [{"type": "attached", "queued": 0}]
    assert b.server.attached(alice.node_id) == 2
    b.attach(3, bob)
    b.send(3, relay_frame(alice.node_id, wire(bob, alice.node_id)))
    assert relayed(b.take(2)) == [mid(0)]
    assert b.server.disconnect(1) == [] and b.server.attached(alice.node_id) == 2


# --- routing checks (SPEC 7.7 step 2) -----------------------------------------------------


def test_a_good_envelope_goes_live_with_ttl_lowered_and_its_signature_intact(
    alice: Identity, bob: Identity
) -> None:
    b = broker()
    b.attach(1, alice)
    b.attach(2, bob)
    b.take(1), b.take(2)
    e = env(alice, bob.node_id, 7, ttl=1)
    out = b.send(1, relay_frame(bob.node_id, json.dumps(e)))
    assert out == [ToConn(2, encode_frame("relay", {"from": alice.node_id,
                                                    "envelope": {**e, "ttl": 0}}))]
    (f,) = b.take(2)
    assert f == {"type": "relay", "from": alice.node_id, "envelope": {**e, "ttl": 0}}
    assert verify_envelope(envelope_from_obj(f["envelope"]), alice.public_key)
    assert b.take(1) == [] and b.store == []


def bad_relays(alice: Identity, bob: Identity, carol: Identity) -> list[tuple[Any, str]]:
    """(relay frame body from alice, error code)."""
    good = env(alice, bob.node_id)
    return [
        ({"to": bob.node_id, "envelope": env(carol, bob.node_id)}, "bad_request"),  # src
        ({"to": bob.node_id, "envelope": env(alice, carol.node_id)}, "bad_request"),  # dst
        ({"to": bob.node_id, "envelope": env(alice, None)}, "bad_request"),
        ({"to": bob.node_id, "envelope": env(alice, bob.node_id, ttl=0)}, "bad_request"),
        ({"to": bob.node_id.upper(), "envelope": good}, "bad_request"),
        ({"to": None, "envelope": good}, "bad_request"),
        ({"to": bob.node_id, "envelope": {**good, "extra": 1}}, "bad_frame"),
        ({"to": bob.node_id, "envelope": {k: v for k, v in good.items() if k != "sig"}},
         "bad_frame"),
        ({"to": bob.node_id, "envelope": {**good, "sig": "not base64"}}, "bad_frame"),
        ({"to": bob.node_id, "envelope": {**good, "ttl": 17}}, "bad_frame"),
        ({"to": bob.node_id, "envelope": {**good, "v": 2}}, "bad_frame"),
        ({"to": bob.node_id, "envelope": {**good, "msg_id": "x"}}, "bad_frame"),
        ({"to": bob.node_id, "envelope": json.dumps(good)}, "bad_frame"),
        ({"to": bob.node_id, "envelope": [good]}, "bad_frame"),
        ({"to": bob.node_id}, "bad_request"),
        ({"to": bob.node_id, "envelope": good, "qid": 1}, "bad_request"),
    ]


@pytest.mark.parametrize("target", ["attached", "detached"])
def test_spoofed_readdressed_spent_or_malformed_envelopes_go_nowhere(
    alice: Identity, bob: Identity, carol: Identity, target: str
) -> None:
    b = broker()
    b.attach(1, alice)
    if target == "attached":
        b.attach(2, bob)
        b.attach(3, carol)
    b.take(1), b.take(2), b.take(3)
    for i, (body, code) in enumerate(bad_relays(alice, bob, carol)):
        if i == BAD_FRAMES_BEFORE_CLOSE - 1:  # keep the sender open for every case
            b.attach(1, alice)
            b.take(1)
        out = b.send(1, {"type": "relay", **body})
        assert [o.conn for o in out if isinstance(o, ToConn)] == [1], body
        assert codes(b.take(1)) == [code], body
        assert not [o for o in out if isinstance(o, StoreQueued)], body
    assert b.take(2) == [] and b.take(3) == [] and b.store == []
    assert b.server.queued(bob.node_id) == (0, 0)


def test_a_float_in_an_envelope_is_refused_at_the_frame(alice: Identity,
                                                        bob: Identity) -> None:
    b = broker()
    b.attach(1, alice)
    b.take(1)
    frame = relay_frame(bob.node_id, wire(alice, bob.node_id).replace('"ttl":8', '"ttl":8.0'))
    b.send(1, frame)
    assert codes(b.take(1)) == ["bad_frame"] and b.store == []


def test_relay_frame_splices_the_wire_envelope_in_whole(alice: Identity,
                                                        bob: Identity) -> None:
    w = wire(alice, bob.node_id, text="ünïcode \u2028 \"quoted\"")
    f = relay_frame(bob.node_id, w)
    assert f == '{"type":"relay","to":"' + bob.node_id + '","envelope":' + w + "}"
    assert json.loads(f) == {"type": "relay", "to": bob.node_id, "envelope": json.loads(w)}
    for to in ("nobody", 'a"b', "A" * 16):
        with pytest.raises(LocalProtocolError):
            relay_frame(to, w)


def test_ack_frame_is_the_ack_of_spec_7_7() -> None:
    assert json.loads(ack_frame((3, 1, 2))) == {"type": "ack", "qids": [3, 1, 2]}


# --- store and forward (SPEC 7.7 step 3) --------------------------------------------------


def test_an_envelope_for_a_detached_node_is_stored_before_it_is_acked_queued(
    alice: Identity, bob: Identity
) -> None:
    b = broker()
    b.attach(1, alice)
    b.take(1)
    e = env(alice, bob.node_id, 5)
    out = b.send(1, relay_frame(bob.node_id, json.dumps(e)))
    assert len(out) == 2
    store, ack = out
    assert isinstance(store, StoreQueued) and isinstance(ack, ToConn)
    assert (store.dst, store.src, store.msg_id) == (bob.node_id, alice.node_id, mid(5))
    assert store.envelope == {**e, "ttl": 7}
    assert store.expires == WALL + DEFAULT_LIMITS.relay_queue_age_ms
    assert store.size >= len(json.dumps(e, separators=(",", ":")))
    assert json.loads(ack.frame) == {"type": "relay_ack", "msg_id": mid(5),
                                     "status": "queued"}
    assert b.server.queued(bob.node_id) == (1, store.size)
    assert b.server.total_queued_bytes == store.size


def test_the_queue_counts_bytes_not_characters(alice: Identity, bob: Identity) -> None:
    b = broker()
    b.attach(1, alice)
    e = env(alice, bob.node_id, text="é€😀" * 1000)
    (store, _) = b.send(1, relay_frame(bob.node_id, json.dumps(e, ensure_ascii=False)))
    assert isinstance(store, StoreQueued)
    compact = json.dumps(e, ensure_ascii=False, separators=(",", ":"))
    assert store.size >= len(compact.encode("utf-8")) > 2 * len(compact)
    assert b.server.queued(bob.node_id) == (1, store.size)


def test_queued_envelopes_go_out_in_order_with_a_qid_on_attach(
    alice: Identity, bob: Identity
) -> None:
    b = broker()
    b.attach(1, alice)
    for n in range(5):
        b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, n)))
    out = b.attach(2, bob)
    attached, load = out[0], out[1]
    assert isinstance(attached, ToConn) and json.loads(attached.frame) == {
        "type": "attached", "queued": 5}
    assert load == LoadQueued(2, bob.node_id, 256)
    frames = b.take(2)[1:]
    assert relayed(frames) == [mid(n) for n in range(5)]
    assert [f["qid"] for f in frames] == [q.qid for q in b.store]
    assert all(f["from"] == alice.node_id and f["envelope"]["ttl"] == 7 for f in frames)
    assert set(frames[0]) == {"type", "from", "envelope", "qid"}


def test_a_queue_the_relay_started_with_is_announced_and_loaded(alice: Identity) -> None:
    b = broker(queued={alice.node_id: (3, 900)})
    out = b.attach(1, alice)
    assert b.take(1) == [{"type": "attached", "queued": 3}]
    assert LoadQueued(1, alice.node_id, 256) in out
    assert b.server.total_queued_bytes == 900


def test_an_ack_deletes_only_what_was_delivered_to_that_node_and_loads_the_next(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    b = broker(delivery_batch=2)
    b.attach(1, alice)
    for n in range(5):
        b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, n)))
    b.send(1, relay_frame(carol.node_id, wire(alice, carol.node_id, 99)))
    b.attach(2, bob)
    b.attach(3, carol)
    first = b.take(2)[1:]
    assert relayed(first) == [mid(0), mid(1)]  # one batch in flight
    carol_qid = b.take(3)[1]["qid"]
    q0, q1 = (f["qid"] for f in first)

    out = b.send(2, ack_frame([q0, carol_qid, 12345]))  # carol's and unknown: ignored
    assert out == [DeleteQueued(bob.node_id, (q0,))]  # q1 still in flight: no load yet
    assert b.stored(bob.node_id) == [mid(n) for n in range(1, 5)]
    assert b.stored(carol.node_id) == [mid(99)]
    assert b.server.queued(bob.node_id)[0] == 4

    out = b.send(2, ack_frame([q0]))  # again: nothing to do
    assert out == []
    out = b.send(2, ack_frame([q1]))
    assert out[:2] == [DeleteQueued(bob.node_id, (q1,)), LoadQueued(2, bob.node_id, 2)]
    second = b.take(2)
    assert relayed(second) == [mid(2), mid(3)]
    b.send(2, ack_frame([f["qid"] for f in second]))
    third = b.take(2)
    assert relayed(third) == [mid(4)]
    out = b.send(2, ack_frame([third[0]["qid"]]))
    assert out == [DeleteQueued(bob.node_id, (third[0]["qid"],))]  # empty: no load
    assert b.server.queued(bob.node_id) == (0, 0) and b.stored(bob.node_id) == []
    assert b.server.total_queued_bytes > 0  # carol's is still there


def test_a_duplicate_qid_in_an_ack_counts_once(alice: Identity, bob: Identity) -> None:
    b = broker()
    b.attach(1, alice)
    for n in range(3):
        b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, n)))
    b.attach(2, bob)
    qids = [f["qid"] for f in b.take(2)[1:]]
    out = b.send(2, ack_frame([qids[0], qids[0]]))
    assert out == [DeleteQueued(bob.node_id, (qids[0],))]
    assert b.server.queued(bob.node_id)[0] == 2
    b.send(2, ack_frame(qids[1:]))
    assert b.server.queued(bob.node_id) == (0, 0) and b.store == []


@pytest.mark.parametrize("qids", [[], "1", [True], ["1"], [1.5], None,
                                  list(range(1001))], ids=str)
def test_a_malformed_ack_is_a_bad_request(alice: Identity, qids: object) -> None:
    b = broker()
    b.attach(1, alice)
    b.take(1)
    raw = '{"type":"ack","qids":' + json.dumps(qids) + "}"
    b.send(1, raw)
    assert codes(b.take(1)) == ["bad_frame" if qids == [1.5] else "bad_request"]


def test_while_a_destination_has_queued_envelopes_new_ones_queue_behind_them(
    alice: Identity, bob: Identity
) -> None:
    b = broker()
    b.attach(1, alice)
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 0)))
    b.attach(2, bob)
    (first,) = b.take(2)[1:]
    out = b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 1)))  # 0 unacked
    assert isinstance(out[0], StoreQueued) and b.take(2) == []
    b.send(2, ack_frame([first["qid"]]))
    assert relayed(b.take(2)) == [mid(1)]
    assert [f["status"] for f in b.take(1) if f["type"] == "relay_ack"] == ["queued",
                                                                           "queued"]


def test_a_congested_connection_gets_its_new_envelopes_queued(
    alice: Identity, bob: Identity
) -> None:
    b = broker()
    b.attach(1, alice)
    b.attach(2, bob)
    b.take(2)
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 0)))  # live
    assert b.run(b.server.congested(2, True)) == []
    out = b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 1)))
    assert isinstance(out[0], StoreQueued)
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 2)))
    assert relayed(b.take(2)) == [mid(0)]
    out = b.run(b.server.congested(2, False))
    assert out == [LoadQueued(2, bob.node_id, 256)]
    frames = b.take(2)
    assert relayed(frames) == [mid(1), mid(2)] and all("qid" in f for f in frames)
    b.send(2, ack_frame([f["qid"] for f in frames]))
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 3)))  # live again
    assert b.take(2) == [{"type": "relay", "from": alice.node_id,
                          "envelope": {**env(alice, bob.node_id, 3), "ttl": 7}}]


def test_a_congested_connection_is_not_loaded_until_it_drains(
    alice: Identity, bob: Identity
) -> None:
    b = broker()
    b.attach(1, alice)
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 0)))
    hello = parse_challenge(b.connect(2))
    b.run(b.server.congested(2, True))  # its writer is full before it even attached
    out = b.send(2, attach_frame(bob, hello))
    assert not [o for o in out if isinstance(o, LoadQueued)]
    assert b.take(2) == [{"type": "attached", "queued": 1}]
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 1)))
    assert b.take(2) == [] and b.stored(bob.node_id) == [mid(0), mid(1)]
    assert b.run(b.server.congested(2, True)) == []  # still full: still nothing
    assert b.run(b.server.congested(2, False))[0] == LoadQueued(2, bob.node_id, 256)
    assert relayed(b.take(2)) == [mid(0), mid(1)]
    assert b.run(b.server.congested(42, True)) == []  # an unknown connection


def test_deliver_sends_only_that_nodes_envelopes_once(alice: Identity, bob: Identity,
                                                      carol: Identity) -> None:
    b = broker()
    b.attach(1, alice)
    b.attach(2, bob)
    b.take(2)
    mine = QueuedEnvelope(7, bob.node_id, alice.node_id, env(alice, bob.node_id, 7), 10)
    theirs = QueuedEnvelope(8, carol.node_id, alice.node_id, env(alice, carol.node_id, 8),
                            10)
    out = b.run(b.server.deliver(2, [mine, theirs, mine]))
    assert len(out) == 1 and relayed(b.take(2)) == [mid(7)]
    assert b.run(b.server.deliver(2, [mine])) == []  # already in flight
    assert b.server.deliver(99, [mine]) == []
    b.connect(5)
    assert b.server.deliver(5, [mine]) == []  # not attached


def test_a_node_that_leaves_before_acking_gets_its_envelopes_again(
    alice: Identity, bob: Identity
) -> None:
    b = broker()
    b.attach(1, alice)
    for n in range(3):
        b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, n)))
    b.attach(2, bob)
    frames = b.take(2)[1:]
    b.send(2, ack_frame([frames[0]["qid"]]))
    b.server.disconnect(2)
    assert b.server.attached(bob.node_id) is None
    out = b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 3)))
    assert isinstance(out[0], StoreQueued)
    b.attach(3, bob)
    again = b.take(3)
    assert again[0] == {"type": "attached", "queued": 3}
    assert relayed(again[1:]) == [mid(1), mid(2), mid(3)]  # at least once, in order
    assert b.send(3, ack_frame([frames[1]["qid"]]))[0] == DeleteQueued(
        bob.node_id, (frames[1]["qid"],))  # the same qid, now delivered here


def test_acks_on_a_closed_connection_do_nothing(alice: Identity, bob: Identity) -> None:
    b = broker()
    b.attach(1, alice)
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 0)))
    b.attach(2, bob)
    (f,) = b.take(2)[1:]
    b.server.disconnect(2)
    assert b.send(2, ack_frame([f["qid"]])) == []
    assert b.stored(bob.node_id) == [mid(0)]


def test_a_queue_is_limited_per_destination_by_count(alice: Identity, bob: Identity,
                                                     carol: Identity) -> None:
    b = broker(limits=replace(DEFAULT_LIMITS, relay_queue_envelopes=3))
    b.attach(1, alice)
    b.take(1)
    for n in range(3):
        b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, n)))
    out = b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 3)))
    assert not [o for o in out if isinstance(o, StoreQueued)]
    assert [f.get("code", f.get("status")) for f in b.take(1)] == ["queued"] * 3 + [
        "queue_full"]
    b.send(1, relay_frame(carol.node_id, wire(alice, carol.node_id, 4)))  # another dst
    assert b.take(1)[0]["type"] == "relay_ack"
    assert b.stored(bob.node_id) == [mid(n) for n in range(3)]


def test_a_queue_is_limited_per_destination_by_bytes(alice: Identity, bob: Identity,
                                                     carol: Identity) -> None:
    probe = broker()
    probe.attach(1, alice)
    (store, _) = probe.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 0)))
    assert isinstance(store, StoreQueued)
    size = store.size
    b = broker(limits=replace(DEFAULT_LIMITS, relay_queue_bytes=2 * size))
    b.attach(1, alice)
    b.take(1)
    for n in range(3):
        b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, n)))
    assert [f.get("code", f.get("status")) for f in b.take(1)] == ["queued", "queued",
                                                                   "queue_full"]
    assert b.server.queued(bob.node_id) == (2, 2 * size)
    b.send(1, relay_frame(carol.node_id, wire(alice, carol.node_id, 3)))
    assert b.take(1)[0]["type"] == "relay_ack"


def test_the_queues_are_limited_in_total(alice: Identity, bob: Identity,
                                         carol: Identity) -> None:
    probe = broker()
    probe.attach(1, alice)
    (store, _) = probe.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 0)))
    assert isinstance(store, StoreQueued)
    b = broker(limits=replace(DEFAULT_LIMITS, relay_total_bytes=3 * store.size))
    b.attach(1, alice)
    b.take(1)
    for n, dst in enumerate((bob, carol, bob, carol)):
        b.send(1, relay_frame(dst.node_id, wire(alice, dst.node_id, n)))
    assert [f.get("code", f.get("status")) for f in b.take(1)] == ["queued"] * 3 + [
        "queue_full"]
    assert b.server.total_queued_bytes == 3 * store.size


def test_the_default_queue_limits_are_the_spec_ones() -> None:
    d = Limits()
    assert (d.relay_queue_envelopes, d.relay_queue_bytes, d.relay_queue_age_ms,
            d.relay_total_bytes) == (1000, 16 * 1024 * 1024, 24 * 3600 * 1000, 1024 ** 3)


def test_a_full_queue_frees_up_as_the_node_acks(alice: Identity, bob: Identity) -> None:
    b = broker(limits=replace(DEFAULT_LIMITS, relay_queue_envelopes=2))
    b.attach(1, alice)
    for n in range(2):
        b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, n)))
    b.attach(2, bob)
    qids = [f["qid"] for f in b.take(2)[1:]]
    b.take(1)
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 2)))
    assert codes(b.take(1)) == ["queue_full"]  # delivered is not acked: still counted
    b.send(2, ack_frame(qids))
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 3)))
    assert relayed(b.take(2)) == [mid(3)]  # queue empty again: live


def test_expired_envelopes_leave_the_counts(alice: Identity, bob: Identity) -> None:
    b = broker()
    b.attach(1, alice)
    sizes = []
    for n in range(3):
        store = b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, n)))[0]
        assert isinstance(store, StoreQueued)
        sizes.append(store.size)
    b.server.expired(bob.node_id, 2, sizes[0] + sizes[1])
    assert b.server.queued(bob.node_id) == (1, sizes[2])
    b.server.expired(bob.node_id, 1, sizes[2])
    assert b.server.queued(bob.node_id) == (0, 0) and b.server.total_queued_bytes == 0


def test_a_purge_leaves_delivered_envelopes_to_their_ack(alice: Identity,
                                                         bob: Identity) -> None:
    b = broker()
    b.attach(1, alice)
    sizes = []
    for n in range(2):
        store = b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, n)))[0]
        assert isinstance(store, StoreQueued)
        sizes.append(store.size)
    assert b.server.in_flight() == frozenset()
    b.attach(2, bob)
    qids = [f["qid"] for f in b.take(2)[1:]]
    assert b.server.in_flight() == frozenset(qids)
    b.send(2, ack_frame(qids[:1]))
    assert b.server.in_flight() == frozenset(qids[1:])
    # The shell purged nothing in flight; the ack alone counts the second one off.
    b.send(2, ack_frame(qids[1:]))
    assert b.server.queued(bob.node_id) == (0, 0) and b.server.in_flight() == frozenset()


def test_refusals_to_honest_frames_never_close_the_connection(alice: Identity,
                                                              bob: Identity) -> None:
    b = broker(limits=replace(DEFAULT_LIMITS, relay_queue_envelopes=1))
    b.attach(1, alice)
    b.take(1)
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, 0)))
    for n in range(1, 3 * BAD_FRAMES_BEFORE_CLOSE):
        b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, n)), T0 + n * 100)
    got = b.take(1)
    assert [f.get("code", f.get("status")) for f in got] == ["queued"] + ["queue_full"] * (
        3 * BAD_FRAMES_BEFORE_CLOSE - 1)
    assert 1 not in b.closed and b.server.attached(alice.node_id) == 1


# --- rate limits and bad frames --------------------------------------------------------------


def test_malformed_frames_get_errors_then_a_close(alice: Identity, bob: Identity) -> None:
    b = broker()
    b.attach(1, alice)
    b.attach(2, bob)
    b.take(1), b.take(2)
    for i in range(1000):
        b.send(1, ["", "{", "[]", '{"type":"Nope"}', '{"a":1}'][i % 5], T0 + i)
        if i % 100 == 0:
            b.send(2, relay_frame(alice.node_id, wire(bob, alice.node_id, i)), T0 + i)
    got = b.take(1)
    assert codes([f for f in got if f["type"] != "relay"]) == [
        "bad_frame"] * BAD_FRAMES_BEFORE_CLOSE
    assert relayed([f for f in got if f["type"] == "relay"]) == [mid(0)]  # live, still open
    assert 1 in b.closed and b.server.attached(alice.node_id) is None
    assert 2 not in b.closed
    assert [f["type"] for f in b.take(2)] == ["relay_ack"] * 9  # alice gone: queued


def test_control_frames_are_rate_limited_then_closed(alice: Identity) -> None:
    b = broker()
    b.attach(1, alice)  # one token
    b.take(1)
    burst = DEFAULT_LIMITS.rate_burst
    for _ in range(burst - 1):
        assert b.send(1, ack_frame([1])) == []  # unknown qids: quietly ignored
    for _ in range(BAD_FRAMES_BEFORE_CLOSE):
        b.send(1, ack_frame([1]))
    assert codes(b.take(1)) == ["rate_limited"] * BAD_FRAMES_BEFORE_CLOSE
    assert 1 in b.closed


def test_a_frame_over_the_envelope_limit_is_too_large(alice: Identity, bob: Identity) -> None:
    b = broker(limits=replace(DEFAULT_LIMITS, max_envelope_bytes=2000))
    b.attach(1, alice)
    b.take(1)
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, text="x" * 7000)))
    assert codes(b.take(1)) == ["too_large"] and b.store == []
    b.send(1, relay_frame(bob.node_id, wire(alice, bob.node_id, text="x" * 1000)))
    assert b.take(1)[0]["type"] == "relay_ack"


def test_frames_on_an_unknown_connection_are_ignored() -> None:
    b = broker()
    assert b.send(7, ack_frame([1])) == [] and b.server.disconnect(7) == []


# --- the property: exactly once, in order ---------------------------------------------------


STEP = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 1)),
    st.tuples(st.just("send"), st.integers(0, 1)),
    st.tuples(st.just("attach"), st.just(0)),
    st.tuples(st.just("detach"), st.just(0)),
    st.tuples(st.just("ack"), st.integers(0, 3)),
    st.tuples(st.just("congest"), st.booleans().map(int)),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(STEP, min_size=8, max_size=80), batch=st.integers(1, 4),
       cap=st.integers(2, 50), start_attached=st.booleans())
def test_every_accepted_envelope_arrives_once_in_send_order(
    steps: list[tuple[str, int]], batch: int, cap: int, start_attached: bool
) -> None:
    """Two senders, one receiver that comes and goes, congests, and acks what it got
    (all or part of it) whenever it likes. Every envelope the relay accepted (forwarded
    live, or acked ``queued``) reaches the receiver in send order once it stays attached
    and acks everything; the only repeats are envelopes it had received but not acked
    on a connection that then went away (at least once, deduplicated by ``msg_id``)."""
    senders = [ident("s0"), ident("s1")]
    dst = ident("receiver")
    b = broker(delivery_batch=batch, limits=replace(DEFAULT_LIMITS, relay_queue_envelopes=cap))
    conns = iter(range(1, 10_000))
    sender_conn = [0, 0]

    def attach_sender(i: int) -> None:
        sender_conn[i] = next(conns)
        b.attach(sender_conn[i], senders[i])
        b.take(sender_conn[i])

    for i in range(2):
        attach_sender(i)
    rconn: int | None = None
    accepted: list[str] = []
    received: list[str] = []
    unacked: dict[int, str] = {}  # qid -> msg_id delivered on the current connection
    may_repeat: set[str] = set()
    n = 0

    def attach_receiver() -> int:
        c = next(conns)
        b.attach(c, dst)
        return c

    def read(c: int) -> None:
        for f in b.take(c):
            if f["type"] == "relay":
                received.append(f["envelope"]["msg_id"])
                if "qid" in f:
                    unacked[f["qid"]] = f["envelope"]["msg_id"]
            else:
                assert f["type"] == "attached"

    if start_attached:
        rconn = attach_receiver()
        read(rconn)
    for op, arg in steps:
        if op == "send":
            if sender_conn[arg] in b.closed:
                attach_sender(arg)
            s = sender_conn[arg]
            out = b.send(s, relay_frame(dst.node_id, wire(senders[arg], dst.node_id, n)))
            for f in b.take(s):
                if f["type"] == "relay_ack":
                    assert f == {"type": "relay_ack", "msg_id": mid(n), "status": "queued"}
                    accepted.append(mid(n))
                else:
                    assert f["code"] == "queue_full"
            if any(isinstance(o, ToConn) and o.conn == rconn for o in out):
                accepted.append(mid(n))  # forwarded live
            n += 1
        elif op == "attach" and rconn is None:
            rconn = attach_receiver()
        elif op == "detach" and rconn is not None:
            b.server.disconnect(rconn)
            may_repeat.update(unacked.values())
            unacked.clear()
            rconn = None
        elif op == "ack" and rconn is not None and unacked:
            qids = sorted(unacked)[: arg or len(unacked)]
            b.send(rconn, ack_frame(qids))
            for q in qids:
                del unacked[q]
        elif op == "congest" and rconn is not None:
            b.run(b.server.congested(rconn, bool(arg)))
        if rconn is not None:
            read(rconn)

    # The receiver stays (or comes back), drains its connection and acks everything.
    if rconn is None:
        rconn = attach_receiver()
    b.run(b.server.congested(rconn, False))
    read(rconn)
    for _ in range(10_000):
        if not unacked:
            break
        qids = sorted(unacked)
        unacked.clear()
        b.send(rconn, ack_frame(qids))
        read(rconn)
    assert not unacked

    firsts = list(dict.fromkeys(received))
    assert firsts == accepted
    repeats = [m for m in set(received) if received.count(m) > 1]
    assert set(repeats) <= may_repeat
    assert b.stored(dst.node_id) == [] and b.server.queued(dst.node_id) == (0, 0)


@settings(max_examples=300, deadline=None)
@given(at=st.integers(0, 10_000), char=st.sampled_from(list('0123456789",:{} x\\"t')),
       cut=st.booleans())
def test_a_mangled_relay_frame_never_breaks_the_relay_and_what_passes_is_what_was_sent(
    at: int, char: str, cut: bool,
) -> None:
    """One character of a standard ``relay`` frame replaced or cut, anywhere: the relay
    answers (or refuses) and stays up, and what it passes on is the frame's own envelope
    with ``ttl`` lowered — never a splice that put the new ttl somewhere else."""
    alice, bob = ident("alice"), ident("bob")
    b = broker()
    b.attach(1, alice)
    b.attach(2, bob)
    b.take(1), b.take(2)
    frame = relay_frame(bob.node_id, wire(alice, bob.node_id, 3, ttl=5, text='"ttl":5,'))
    i = at % len(frame)
    mangled = frame[:i] + ("" if cut else char) + frame[i + 1:]
    b.send(1, mangled)
    for f in b.take(2):
        sent = json.loads(mangled)["envelope"]
        assert f == {"type": "relay", "from": alice.node_id,
                     "envelope": {**sent, "ttl": sent["ttl"] - 1}}
    assert 1 not in b.closed or b.closed[1].code == 1008  # at worst: bad frames, closed
