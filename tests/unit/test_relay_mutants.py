"""The relay broker (SPEC 7.7), pinned where mutation testing found it loose: the exact
answers to a replaced node and to a misbehaving connection, the queue bookkeeping of
acks and expiries, the size a stored envelope is charged, and the data rate limit.

The shell is played by hand here: each test feeds the ``RelayServer`` and reads the
outputs it returns, so every field of every output can be checked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest

from hd_protocol import (
    Identity,
    LocalProtocolError,
    encode_envelope,
    make_envelope,
    sign_envelope,
)
from hd_protocol.brokers.frames import parse_challenge
from hd_protocol.brokers.relay import (
    MAX_ACK_QIDS,
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
from hd_protocol.limits import DEFAULT_LIMITS

T0 = 2_000
WALL = 1_764_000_000_000


def ident(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(f"relay-mutants/{name}".encode()).digest())


RELAY, A, B = ident("relay"), ident("a"), ident("b")


def rng(n: int) -> bytes:
    return b"\x07" * n


def server(**kw: Any) -> RelayServer:
    return RelayServer(RELAY, rng=rng, **kw)


def attach(s: RelayServer, conn: int, who: Identity, now: int = T0) -> list[Output]:
    [chal] = s.connect(conn, now)
    assert isinstance(chal, ToConn)
    return s.receive(conn, attach_frame(who, parse_challenge(json.loads(chal.frame))), now,
                     WALL)


def wire(src: Identity, dst: Identity, n: int = 0) -> str:
    e = make_envelope("peer_chat", msg_id=f"{n:032x}", src=src.node_id, dst=dst.node_id,
                      ts=WALL, data={"text": f"message {n}"}, ttl=8)
    return encode_envelope(sign_envelope(e, src))


def frames(outs: list[Output], conn: int) -> list[dict[str, Any]]:
    return [json.loads(o.frame) for o in outs if isinstance(o, ToConn) and o.conn == conn]


def item(qid: int, size: int = 100, dst: Identity = B) -> QueuedEnvelope:
    return QueuedEnvelope(qid, dst.node_id, A.node_id, json.loads(wire(A, dst, qid)), size)


# --- replaced, refused, closed --------------------------------------------------------------


def test_a_node_attaching_again_closes_its_old_connection_with_replaced() -> None:
    s = server()
    attach(s, 1, A)
    out = attach(s, 2, A)
    assert out[:2] == [
        ToConn(1, '{"type":"error","code":"replaced","message":"the node attached again"}'),
        CloseConn(1, 1000, "replaced")]
    assert frames(out, 2) == [{"type": "attached", "queued": 0}]


def test_the_replaced_connection_is_forgotten_at_once() -> None:
    s = server()
    attach(s, 1, A)
    attach(s, 2, A)
    attach(s, 3, B)
    # no longer a connection: what still arrives on it goes nowhere
    assert s.receive(1, relay_frame(B.node_id, wire(A, B)), T0, WALL) == []
    assert s.attached(A.node_id) == 2


def test_too_many_bad_frames_close_with_their_reason_and_each_error_has_a_message() -> None:
    s = server()
    attach(s, 1, A)
    outs: list[Output] = []
    for _ in range(16):
        outs += s.receive(1, '{"type":"nonsense"}', T0, WALL)
    errors = frames(outs, 1)
    assert len(errors) == 16
    assert all(e == {"type": "error", "code": "bad_request", "message": "no frame nonsense here"}
               for e in errors)
    assert outs[-1] == CloseConn(1, 1008, "too many bad frames")


def test_relay_frame_refuses_a_to_that_is_no_node_id_as_a_local_bad_request() -> None:
    with pytest.raises(LocalProtocolError) as err:
        relay_frame("nope", "{}")
    assert err.value.code == "bad_request"


# --- rates ----------------------------------------------------------------------------------


def test_the_default_data_rate_is_20000_frames_a_second_in_bursts_of_40000() -> None:
    assert server().data_rate == (20_000, 40_000)


def test_relay_frames_of_an_attached_node_draw_on_the_data_bucket_only() -> None:
    """Control frames get ``rate_burst``; an attached node's envelopes are not held to it."""
    s = server(limits=replace(DEFAULT_LIMITS, rate_burst=3, rate_per_s=1))
    attach(s, 1, A)
    attach(s, 2, B)
    outs: list[Output] = []
    for n in range(10):
        outs += s.receive(1, relay_frame(B.node_id, wire(A, B, n)), T0, WALL)
    assert [f["envelope"]["msg_id"] for f in frames(outs, 2)] == [f"{n:032x}" for n in range(10)]
    assert frames(outs, 1) == []


def test_the_data_bucket_refills_at_the_data_rate_not_the_burst() -> None:
    s = server(data_rate_per_s=1_000, data_burst=2)  # one frame per ms
    attach(s, 1, A)
    attach(s, 2, B)
    send = [relay_frame(B.node_id, wire(A, B, n)) for n in range(4)]
    assert frames(s.receive(1, send[0], T0, WALL), 2)
    assert frames(s.receive(1, send[1], T0, WALL), 2)
    assert [f["code"] for f in frames(s.receive(1, send[2], T0, WALL), 1)] == ["rate_limited"]
    assert frames(s.receive(1, send[3], T0 + 1, WALL), 2)  # one token after one ms
    assert [f["code"] for f in frames(s.receive(1, send[3], T0 + 1, WALL), 1)] == [
        "rate_limited"]


# --- store and forward ------------------------------------------------------------------------


def test_a_stored_envelope_is_charged_the_bytes_of_its_relay_frame() -> None:
    s = server()
    attach(s, 1, A)
    [store, _ack] = s.receive(1, relay_frame(B.node_id, wire(A, B)), T0, WALL)
    assert isinstance(store, StoreQueued)
    frame = json.dumps({"type": "x", "e": store.envelope}, separators=(",", ":"),
                       ensure_ascii=False)
    assert store.size == len(frame.encode("utf-8"))
    assert s.queued(B.node_id) == (1, store.size)


def test_a_node_with_queued_envelopes_gets_them_loaded_even_if_their_bytes_say_zero() -> None:
    s = server(queued={B.node_id: (2, 0)})
    out = attach(s, 1, B)
    assert out[-1] == LoadQueued(1, B.node_id, 256)


def test_a_node_whose_count_says_one_queued_gets_the_next_one_stored_not_sent() -> None:
    """Order is kept by the envelope count, whatever the byte count says."""
    s = server(queued={B.node_id: (1, 0)})
    attach(s, 2, B)
    attach(s, 1, A)
    out = s.receive(1, relay_frame(B.node_id, wire(A, B)), T0, WALL)
    assert isinstance(out[0], StoreQueued) and frames(out, 2) == []


def test_deliver_skips_an_item_for_another_node_or_in_flight_and_sends_the_rest() -> None:
    s = server()
    attach(s, 1, B)
    assert len(s.deliver(1, [item(1)])) == 1
    out = s.deliver(1, [item(2, dst=A), item(1), item(3)])
    assert [f["qid"] for f in frames(out, 1)] == [3]


def test_an_ack_of_1000_qids_is_taken() -> None:
    s = server()
    attach(s, 1, B)
    out = s.receive(1, ack_frame(list(range(1, MAX_ACK_QIDS + 1))), T0, WALL)
    assert out == []  # none of them delivered: nothing to delete, and no error


def test_acks_keep_the_queue_counts_of_what_is_left() -> None:
    s = server(queued={B.node_id: (3, 250)})
    attach(s, 1, B)
    s.deliver(1, [item(1, 100), item(2, 100), item(3, 100)])
    assert s.receive(1, ack_frame([1]), T0, WALL) == [DeleteQueued(B.node_id, (1,))]
    assert s.queued(B.node_id) == (2, 150)
    s.receive(1, ack_frame([2]), T0, WALL)
    assert s.queued(B.node_id) == (1, 50)
    s.receive(1, ack_frame([3]), T0, WALL)
    assert s.queued(B.node_id) == (0, 0) and s.total_queued_bytes == 0


def test_a_partial_ack_that_frees_more_bytes_than_counted_leaves_zero_bytes() -> None:
    s = server(queued={B.node_id: (2, 100)})
    attach(s, 1, B)
    s.deliver(1, [item(1, 300), item(2, 300)])
    s.receive(1, ack_frame([1]), T0, WALL)
    assert s.queued(B.node_id) == (1, 0)


def test_the_last_ack_forgets_the_node_even_when_its_bytes_did_not_add_up() -> None:
    s = server(queued={B.node_id: (1, 300)})
    attach(s, 1, B)
    s.deliver(1, [item(1, 100)])
    s.receive(1, ack_frame([1]), T0, WALL)
    assert s.queued(B.node_id) == (0, 0) and s.total_queued_bytes == 0


def test_an_ack_of_envelopes_the_counts_no_longer_hold_is_taken() -> None:
    s = server()
    attach(s, 1, B)
    s.deliver(1, [item(1)])  # e.g. counted off by an expiry meanwhile
    assert s.receive(1, ack_frame([1]), T0, WALL) == [DeleteQueued(B.node_id, (1,))]
    assert s.queued(B.node_id) == (0, 0)


def test_expired_envelopes_are_counted_off_the_queue() -> None:
    s = server(queued={B.node_id: (3, 300)})
    s.expired(B.node_id, 1, 100)
    assert s.queued(B.node_id) == (2, 200)
    s.expired(B.node_id, 1, 500)
    assert s.queued(B.node_id) == (1, 0)
    s.expired(B.node_id, 1, 0)
    assert s.queued(B.node_id) == (0, 0) and s.total_queued_bytes == 0
    s.expired(B.node_id, 1, 0)  # more than counted: still nothing, no error
    assert s.queued(B.node_id) == (0, 0)


def test_the_last_expiry_forgets_the_node_even_when_its_bytes_did_not_add_up() -> None:
    s = server(queued={B.node_id: (1, 300)})
    s.expired(B.node_id, 1, 100)
    assert s.queued(B.node_id) == (0, 0) and s.total_queued_bytes == 0
