"""The join ladder over typed candidates (SPEC 8.2), driven by a monotonic ``now`` alone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol.peer.candidates import (
    LADDER_DEADLINE_MS,
    DialCandidate,
    Ladder,
    LadderDone,
    StartDial,
    direct_candidates,
)

T0 = 5_000  # monotonic ms: any origin
A, B, C = (DialCandidate("direct", f"ws://10.0.0.{i}:1/peer-ws", 10 - i) for i in (1, 2, 3))
LAN = DialCandidate("lan", "ws://192.168.1.7:1/peer-ws", 5)
RTC = DialCandidate("webrtc", "peer:abc", 0)
RELAY = DialCandidate("relay", "ws://relay.example:1/relay-ws", 0)


def started(outs: list[object]) -> list[DialCandidate]:
    return [o.candidate for o in outs if isinstance(o, StartDial)]


def test_first_candidate_is_dialled_at_once_and_the_next_every_250_ms() -> None:
    lad = Ladder([A, B, C], T0)
    assert lad.start(T0) == [StartDial(A)]
    assert lad.next_deadline() == T0 + 250
    assert lad.on_timer(T0 + 249) == []
    assert lad.on_timer(T0 + 250) == [StartDial(B)]
    assert lad.on_timer(T0 + 500) == [StartDial(C)]
    assert lad.next_deadline() == T0 + 15_000  # nothing left to start: only the deadline


def test_candidates_are_tried_by_priority_whatever_order_they_come_in() -> None:
    lad = Ladder([C, LAN, A, B], T0)
    outs = lad.start(T0)
    for t in (250, 500, 750):
        outs += lad.on_timer(T0 + t)
    assert started(outs) == [A, B, C, LAN]


def test_webrtc_starts_at_1_s_and_the_relay_at_1_5_s_beside_what_still_tries() -> None:
    lad = Ladder([RELAY, RTC, A], T0)
    assert lad.start(T0) == [StartDial(A)]
    assert lad.next_deadline() == T0 + 1_000
    assert lad.on_timer(T0 + 999) == []
    assert lad.on_timer(T0 + 1_000) == [StartDial(RTC)]
    assert lad.next_deadline() == T0 + 1_500
    assert lad.on_timer(T0 + 1_500) == [StartDial(RELAY)]
    # A still runs beside them; the first to authenticate wins, whatever its kind.
    assert lad.succeeded(RELAY) == [LadderDone(RELAY)]


def test_when_every_direct_candidate_failed_the_next_timed_kind_starts_at_once() -> None:
    lad = Ladder([A, RELAY], T0)
    lad.start(T0)
    assert lad.failed(A, "unreachable", T0 + 20, refused=False) == [StartDial(RELAY)]


def test_a_ladder_of_only_a_relay_starts_it_at_once() -> None:
    assert Ladder([RELAY], T0).start(T0) == [StartDial(RELAY)]


def test_first_authenticated_session_wins_and_ends_the_ladder() -> None:
    lad = Ladder([A, B, C], T0)
    lad.start(T0)
    lad.on_timer(T0 + 250)
    assert lad.succeeded(B) == [LadderDone(B)]
    assert lad.next_deadline() is None
    assert lad.succeeded(A) == [] and lad.on_timer(T0 + 600) == []


def test_a_failed_dial_starts_the_next_candidate_without_waiting() -> None:
    lad = Ladder([A, B], T0)
    lad.start(T0)
    assert lad.failed(A, "unreachable", T0 + 10, refused=False) == [StartDial(B)]


def test_an_explicit_refusal_stops_the_ladder_at_once() -> None:
    lad = Ladder([A, B, C, RELAY], T0)
    lad.start(T0)
    assert lad.failed(A, "pairing_required", T0 + 5, refused=True) == [
        LadderDone(None, "pairing_required")
    ]
    assert lad.on_timer(T0 + 250) == [] and lad.on_timer(T0 + 2_000) == []


def test_when_every_candidate_failed_the_ladder_reports_the_last_reason() -> None:
    lad = Ladder([A, B], T0)
    lad.start(T0)
    lad.on_timer(T0 + 250)
    assert lad.failed(A, "unreachable", T0 + 300, refused=False) == []
    assert lad.failed(B, "wrong_node", T0 + 310, refused=False) == [
        LadderDone(None, "wrong_node")
    ]


def test_the_ladder_has_its_own_15_s_deadline() -> None:
    assert LADDER_DEADLINE_MS == 15_000
    lad = Ladder([A], T0)
    lad.start(T0)
    assert lad.next_deadline() == T0 + 15_000
    assert lad.on_timer(T0 + 14_999) == []
    assert lad.on_timer(T0 + 15_000) == [LadderDone(None, "timeout")]


def test_no_candidate_is_no_address_and_duplicates_are_dialled_once() -> None:
    assert Ladder([], T0).start(T0) == [LadderDone(None, "no_address")]
    lad = Ladder([A, A], T0)
    lad.start(T0)
    assert lad.on_timer(T0 + 250) == []


def test_plain_urls_are_direct_candidates_best_first() -> None:
    urls = [A.address, B.address]
    assert [c.kind for c in direct_candidates(urls)] == ["direct", "direct"]
    lad = Ladder(urls, T0)
    (first,) = lad.start(T0)
    assert isinstance(first, StartDial) and first.url == A.address
    assert lad.succeeded(A.address) == [LadderDone(DialCandidate("direct", A.address))]


@settings(max_examples=300, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["direct", "lan", "webrtc", "relay"]), min_size=1,
                   max_size=6),
    events=st.lists(st.tuples(st.sampled_from(["tick", "fail", "win", "refuse"]),
                              st.integers(0, 5), st.integers(1, 700)), max_size=30),
)
def test_ladder_dials_each_candidate_at_most_once_and_ends_exactly_once(
    kinds: list[str], events: list[tuple[str, int, int]]
) -> None:
    cands = [DialCandidate(k, f"addr-{i}", i) for i, k in enumerate(kinds)]
    lad = Ladder(cands, T0)
    now = T0
    outs = list(lad.start(now))
    for kind, idx, dt in events:
        now += dt
        cand = cands[idx % len(cands)]
        if kind == "tick":
            outs += lad.on_timer(now)
        elif kind == "fail":
            outs += lad.failed(cand, "unreachable", now, refused=False)
        elif kind == "refuse":
            outs += lad.failed(cand, "blocked", now, refused=True)
        else:
            outs += lad.succeeded(cand)
        dl = lad.next_deadline()
        assert dl is None or dl <= T0 + LADDER_DEADLINE_MS
    outs += lad.on_timer(T0 + 10**6)  # past every deadline
    begun = started(outs)
    done = [o for o in outs if isinstance(o, LadderDone)]
    assert len(begun) == len(set(begun)) <= len(cands)
    assert len(done) == 1
    if done[0].candidate is not None:
        assert done[0].candidate in begun


def test_direct_candidates_keep_the_given_order_as_descending_priorities() -> None:
    urls = ["ws://a:1/peer-ws", "ws://b:1/peer-ws", "ws://c:1/peer-ws"]
    assert direct_candidates(urls) == [DialCandidate("direct", "ws://a:1/peer-ws", 3),
                                       DialCandidate("direct", "ws://b:1/peer-ws", 2),
                                       DialCandidate("direct", "ws://c:1/peer-ws", 1)]


def test_custom_start_offsets_replace_the_spec_ones_and_a_kind_without_one_starts_at_once(
) -> None:
    other = DialCandidate("carrier_pigeon", "coo:1", 0)
    lad = Ladder([A, RELAY, other], T0, offsets_ms={"relay": 1, "direct": 0})
    assert started(lad.start(T0)) == [A]
    assert lad.next_deadline() == T0 + 1  # the relay after 1 ms, not the SPEC's 1.5 s
    assert started(lad.on_timer(T0 + 1)) == [RELAY]
    assert started(lad.on_timer(T0 + 250)) == [other]  # no offset: staggered like direct


def test_a_candidate_listed_twice_is_dialled_once_and_the_rest_still_are() -> None:
    lad = Ladder([A, A, B], T0)
    assert started(lad.start(T0)) == [A]
    assert started(lad.on_timer(T0 + 250)) == [B]
    assert lad.on_timer(T0 + 500) == []


def test_timed_candidates_due_together_start_best_first_in_one_timer() -> None:
    rtc_hi = DialCandidate("webrtc", "peer:hi", 9)
    rtc_lo = DialCandidate("webrtc", "peer:lo", 1)
    lad = Ladder([A, B, rtc_lo, rtc_hi], T0, stagger_ms=1_000)
    lad.start(T0)
    assert started(lad.on_timer(T0 + 1_000)) == [B, rtc_hi, rtc_lo]


def test_outcomes_for_unknown_or_finished_dials_change_nothing() -> None:
    lad = Ladder([A, B], T0)
    lad.start(T0)
    assert lad.succeeded(B) == [] and lad.failed("ws://nowhere:1/peer-ws", "x", T0,
                                                 refused=False) == []
    assert lad.succeeded("ws://10.0.0.1:1/peer-ws") == [LadderDone(A)]
    assert lad.succeeded(A) == [] and lad.failed(A, "late", T0, refused=True) == []


def test_the_last_failure_reason_is_reported_when_nothing_is_left() -> None:
    lad = Ladder([A, B], T0)
    lad.start(T0)
    lad.on_timer(T0 + 250)
    assert lad.failed(A, "unreachable", T0 + 300, refused=False) == []
    assert lad.failed(B, "busy", T0 + 301, refused=False) == [LadderDone(None, "busy")]
    assert lad.next_deadline() is None and lad.on_timer(T0 + 20_000) == []


def test_before_it_starts_a_ladder_is_only_due_at_its_deadline() -> None:
    assert Ladder([A, B], T0).next_deadline() == T0 + LADDER_DEADLINE_MS
