"""WebRTC rule properties (SPEC 8.4): fragments always come back whole, the reassembler
fails only as a protocol error, and glare always leaves exactly one offer standing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol.errors import RemoteProtocolError
from hd_protocol.reach.webrtc import (
    Accept,
    Answered,
    Budget,
    Dropped,
    Reassembler,
    SendBye,
    Signaling,
    fragment,
)

node_ids = st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=16, max_size=16)
SDP = "v=0\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=8), st.integers(2, 120))
def test_fragments_reassemble_to_the_same_envelopes_in_order(texts: list[str],
                                                             limit: int) -> None:
    r = Reassembler(1 << 20)
    out: list[str] = []
    for text in texts:
        parts = fragment(text, limit)
        assert all(len(p.encode() if isinstance(p, str) else p) <= limit for p in parts)
        assert (len(parts) == 1 and isinstance(parts[0], str)) == (len(text.encode()) <= limit)
        for p in parts:
            if (m := r.receive(p)) is not None:
                out.append(m)
    assert out == texts and r.pending == 0


messages = st.one_of(st.text(max_size=80), st.binary(max_size=80),
                     st.builds(lambda f, b: bytes([f]) + b, st.sampled_from([0, 1]),
                               st.binary(min_size=1, max_size=80)))


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, max_size=30), st.booleans(), st.integers(1, 200))
def test_the_reassembler_yields_bounded_text_or_a_protocol_error(
    seq: list[str | bytes], preauth: bool, limit: int,
) -> None:
    r = Reassembler(limit, Budget(limit, 3, 400) if preauth else None)
    try:
        for m in seq:
            out = r.receive(m)
            assert out is None or (isinstance(out, str) and len(out.encode()) <= limit)
    except RemoteProtocolError as exc:
        assert exc.code in ("too_large", "bad_fragment", "over_budget")


@settings(max_examples=200, deadline=None)
@given(node_ids, node_ids, st.booleans())
def test_crossing_offers_leave_exactly_one_standing_on_both_sides(a: str, b: str,
                                                                  a_first: bool) -> None:
    if a == b:
        return
    sa, sb = Signaling(a), Signaling(b)
    sa.offer(b, "from-a")
    sb.offer(a, "from-b")
    # Whichever order the lobby delivers them in, each side applies the same rule.
    order = [(sa, b, "from-b"), (sb, a, "from-a")]
    outs = {id(m): m.receive(peer, sid, "offer", SDP) for m, peer, sid in
            (order if a_first else order[::-1])}
    accepts = [o for out in outs.values() for o in out if isinstance(o, Accept)]
    dropped = [o for out in outs.values() for o in out if isinstance(o, Dropped)]
    assert len(accepts) == 1 and len(dropped) == 1
    winner = min(a, b)
    assert accepts[0].peer == winner and dropped[0].sid == f"from-{'a' if winner == b else 'b'}"
    # The kept offer gets its answer; the dropped one's answer would get a bye.
    keeper, loser = (sa, sb) if winner == a else (sb, sa)
    kept_sid = "from-a" if winner == a else "from-b"
    assert keeper.receive(max(a, b), kept_sid, "answer", SDP) == [
        Answered(max(a, b), kept_sid, SDP)]
    lost_sid = "from-b" if winner == a else "from-a"
    assert loser.receive(winner, lost_sid, "answer", SDP) == [SendBye(winner, lost_sid)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(node_ids, st.sampled_from(["s1", "s2", "s3", "bad sid"]),
                          st.sampled_from(["offer", "answer", "bye", "other"]),
                          st.sampled_from(["", SDP, "junk"])), max_size=60))
def test_any_signal_sequence_keeps_the_machine_bounded(
    signals: list[tuple[str, str, str, str]],
) -> None:
    s = Signaling("aaaaaaaaaaaaaaaa")
    s.offer("bbbbbbbbbbbbbbbb", "mine")
    for peer, sid, kind, sdp in signals:
        try:
            s.receive(peer, sid, kind, sdp)
        except RemoteProtocolError as exc:
            assert exc.code == "bad_signal"
        assert len(s) <= 64
