"""The join ladder over direct candidates (SPEC 8.2), driven by ``now`` alone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol.candidates import Ladder, LadderDone, StartDial

T0 = 1_764_000_000_000
A, B, C = "ws://10.0.0.1:1/peer-ws", "ws://10.0.0.2:1/peer-ws", "ws://10.0.0.3:1/peer-ws"


def test_first_candidate_is_dialled_at_once_and_the_next_every_250_ms() -> None:
    lad = Ladder([A, B, C], T0)
    assert lad.start(T0) == [StartDial(A)]
    assert lad.next_deadline() == T0 + 250
    assert lad.on_timer(T0 + 249) == []
    assert lad.on_timer(T0 + 250) == [StartDial(B)]
    assert lad.on_timer(T0 + 500) == [StartDial(C)]
    assert lad.next_deadline() == T0 + 15_000  # nothing left to start: only the deadline


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
    lad = Ladder([A, B, C], T0)
    lad.start(T0)
    assert lad.failed(A, "pairing_required", T0 + 5, refused=True) == [
        LadderDone(None, "pairing_required")
    ]
    assert lad.on_timer(T0 + 250) == []


def test_when_every_candidate_failed_the_ladder_reports_the_last_reason() -> None:
    lad = Ladder([A, B], T0)
    lad.start(T0)
    lad.on_timer(T0 + 250)
    assert lad.failed(A, "unreachable", T0 + 300, refused=False) == []
    assert lad.failed(B, "wrong_node", T0 + 310, refused=False) == [
        LadderDone(None, "wrong_node")
    ]


def test_the_overall_deadline_ends_the_ladder() -> None:
    lad = Ladder([A], T0, deadline_ms=15_000)
    lad.start(T0)
    assert lad.next_deadline() == T0 + 15_000
    assert lad.on_timer(T0 + 15_000) == [LadderDone(None, "timeout")]


def test_no_candidate_is_no_address_and_duplicates_are_dialled_once() -> None:
    assert Ladder([], T0).start(T0) == [LadderDone(None, "no_address")]
    lad = Ladder([A, A], T0)
    lad.start(T0)
    assert lad.on_timer(T0 + 250) == []


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 6),
    events=st.lists(st.tuples(st.sampled_from(["tick", "fail", "win", "refuse"]),
                              st.integers(0, 5), st.integers(1, 400)), max_size=30),
)
def test_ladder_dials_each_candidate_at_most_once_and_ends_exactly_once(
    n: int, events: list[tuple[str, int, int]]
) -> None:
    urls = [f"ws://10.0.0.{i}:1/peer-ws" for i in range(n)]
    lad = Ladder(urls, T0)
    now = T0
    outs = list(lad.start(now))
    for kind, idx, dt in events:
        now += dt
        url = urls[idx % n]
        if kind == "tick":
            outs += lad.on_timer(now)
        elif kind == "fail":
            outs += lad.failed(url, "unreachable", now, refused=False)
        elif kind == "refuse":
            outs += lad.failed(url, "blocked", now, refused=True)
        else:
            outs += lad.succeeded(url)
    outs += lad.on_timer(T0 + 10**6)  # past every deadline
    started = [o.url for o in outs if isinstance(o, StartDial)]
    done = [o for o in outs if isinstance(o, LadderDone)]
    assert len(started) == len(set(started)) <= n
    assert len(done) == 1
    if done[0].url is not None:
        assert done[0].url in started
