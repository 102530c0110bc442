"""Session properties (SPEC 3.1, 5): whatever order a hostile path delivers in, a
session acts on each genuine envelope at most once, never out of order, and never on
one re-addressed to it."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol import Identity, Session, decode_envelope, encode_envelope
from hd_protocol.peer.session import Message, PeerError, Pong, Reply, Send

T0 = 1_764_000_000_000
ACTED_ON = (Message, Reply, PeerError, Pong)


def acted_on_by(outputs: list[Any]) -> list[Any]:
    """Outputs that show the envelope was acted on: delivered, or (a ping) answered."""
    return [o for o in outputs if isinstance(o, ACTED_ON)
            or (isinstance(o, Send) and decode_envelope(o.wire).type == "pong")]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_session_never_acts_on_a_replayed_reordered_or_readdressed_envelope(
    handshake: Any, rng_factory: Any, alice: Identity, bob: Identity, carol: Identity,
    data: Any,
) -> None:
    res_a, res_b = handshake(alice, bob, now=T0)
    sender = Session(alice, res_a, rng=rng_factory("sender"), now=T0)
    receiver = Session(bob, res_b, rng=rng_factory("receiver"), now=T0)

    # The receiver has a few requests out, so some of the sender's envelopes are replies.
    requests = []
    for _ in range(data.draw(st.integers(0, 3), label="requests")):
        mid, out = receiver.request("agent_request", {}, T0)
        sender.receive(out[0].wire, T0)
        requests.append(mid)

    # What the sender really sent, in order, plus copies re-addressed on the path.
    pool: list[tuple[str, str, int, str]] = []  # (kind, wire, seq, msg_id)
    for i in range(data.draw(st.integers(1, 8), label="sent")):
        if requests and data.draw(st.booleans()):
            re = data.draw(st.sampled_from(requests))
            mid, out = sender.send("agent_result", {"i": i}, T0, re=re)
        else:
            mid, out = sender.send(data.draw(st.sampled_from(["peer_chat", "ping"])),
                                   {"i": i}, T0)
        env = decode_envelope(out[0].wire)
        assert env.seq == i + 1
        pool.append(("genuine", out[0].wire, i + 1, mid))
        target = data.draw(st.sampled_from([carol.node_id, alice.node_id, None]))
        moved = encode_envelope(dataclasses.replace(env, dst=target))
        pool.append(("readdressed", moved, i + 1, mid))

    deliveries = data.draw(
        st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=24), label="deliveries"
    )
    highest, acted_on = 0, set()
    for k in deliveries:
        kind, wire, seq, mid = pool[k]
        was_closed = receiver.closed is not None
        out = receiver.receive(wire, T0 + 1)
        acted = acted_on_by(out)
        if kind == "readdressed" or seq <= highest or was_closed:
            assert acted == [], (kind, seq, highest, out)
            continue
        # A genuine envelope newer than anything accepted is accepted, exactly once.
        assert mid not in acted_on and len(acted) == 1, out
        acted_on.add(mid)
        highest = seq
    assert receiver.rx_seq == highest
