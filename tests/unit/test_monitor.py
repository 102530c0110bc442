"""The peer monitor's figures (SPEC 6.4), driven by ``now`` alone: the RFC 6298 RTT
estimator, ping timeouts, and traffic over a sliding 10 s window."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hd_node.features.bench import percentiles
from hd_protocol import Identity, LocalProtocolError, decode_envelope
from hd_protocol.envelope import wire_size
from hd_protocol.limits import DEFAULT_LIMITS
from hd_protocol.peer.admission import Decision
from hd_protocol.peer.connection import (
    FIRST_PING_MS,
    Connection,
    Established,
    NeedAdmission,
    Pong,
    Timeout,
)
from hd_protocol.peer.monitor import LinkMonitor, RttEstimator, SlidingCounter
from hd_protocol.peer.session import Stats

T0 = 1_000  # monotonic ms
WALL = 1_764_000_000_000
INTERVAL = DEFAULT_LIMITS.ping_interval_ms
CHAT = {"text": "hello", "from_name": "a"}


def _rng(seed: str) -> Callable[[int], bytes]:
    counter = iter(range(1 << 62))

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()
        return out[:n]

    return rng


def opened(alice: Identity, bob: Identity) -> tuple[Connection, Connection]:
    """A dialer and an acceptor with an open session at ``T0``."""
    d = Connection.dial(alice, rng=_rng("d"), now=T0, wall=WALL,
                        expected_node_id=bob.node_id)
    a = Connection.accept(bob, rng=_rng("a"), now=T0, wall=WALL)
    busy = True
    while busy:
        busy = False
        for src, dst in ((d, a), (a, d)):
            for f in src.frames_to_send():
                dst.receive(f, T0, WALL)
                busy = True
            while (ev := dst.next_event()) is not None:
                if isinstance(ev, NeedAdmission):
                    dst.admit(Decision("trusted"), T0, WALL)
                    busy = True
                else:
                    assert isinstance(ev, Established)
    assert d.is_open and a.is_open
    return d, a


# --- RTT: RFC 6298 --------------------------------------------------------------------


def test_the_first_rtt_sample_sets_srtt_to_r_and_rttvar_to_r_over_2() -> None:
    est = RttEstimator()
    assert (est.last_ms, est.srtt_ms, est.rttvar_ms, est.samples) == (None, None, None, 0)
    est.observe(100)
    assert (est.last_ms, est.srtt_ms, est.rttvar_ms, est.samples) == (100, 100.0, 50.0, 1)


def test_later_rtt_samples_update_rttvar_with_the_old_srtt_then_srtt() -> None:
    est = RttEstimator()
    for r in (100, 200, 40, 40):
        est.observe(r)
    # 200: RTTVAR = 3/4*50 + 1/4*|100-200| = 62.5      SRTT = 7/8*100 + 1/8*200 = 112.5
    # 40:  RTTVAR = 3/4*62.5 + 1/4*|112.5-40| = 65.0   SRTT = 7/8*112.5 + 1/8*40 = 103.4375
    # 40:  RTTVAR = 3/4*65 + 1/4*|103.4375-40| = 64.609375
    #      SRTT = 7/8*103.4375 + 1/8*40 = 95.5078125
    assert (est.last_ms, est.samples) == (40, 4)
    assert est.rttvar_ms == 64.609375
    assert est.srtt_ms == 95.5078125


def test_pongs_of_the_5_s_pings_feed_the_connections_rtt_figures(
    alice: Identity, bob: Identity
) -> None:
    d, a = opened(alice, bob)
    t = T0
    for i, delay in enumerate((40, 80, 20)):
        t += INTERVAL if i else FIRST_PING_MS  # the first a second in, then every 5 s
        assert d.next_deadline() == t
        d.handle_timer(t, WALL)
        (ping,) = d.frames_to_send()
        assert decode_envelope(ping).type == "ping"
        a.receive(ping, t, WALL)
        (pong,) = a.frames_to_send()
        d.receive(pong, t + delay, WALL)
        (ev,) = d.events()
        assert isinstance(ev, Pong) and ev.rtt_ms == delay
    f = d.figures(t + 20)
    # 40 -> (40, 20); 80 -> RTTVAR 3/4*20 + 1/4*40 = 25, SRTT 35 + 10 = 45;
    # 20 -> RTTVAR 3/4*25 + 1/4*25 = 25, SRTT 39.375 + 2.5 = 41.875
    assert (f.rtt_ms, f.srtt_ms, f.rttvar_ms, f.rtt_samples) == (20, 41.875, 25.0, 3)
    assert f.timeouts == 0


# --- ping timeouts ------------------------------------------------------------------------


def test_each_ping_without_a_pong_within_5_s_counts_one_timeout(
    alice: Identity, bob: Identity
) -> None:
    d, _ = opened(alice, bob)
    seen = []
    for k in range(1, 4):
        d.handle_timer(T0 + k * INTERVAL, WALL)
        d.frames_to_send()  # the peer hears nothing
        seen.append(d.figures(T0 + k * INTERVAL).timeouts)
        assert [type(e) for e in d.events() if isinstance(e, Timeout)] == [Timeout] * (k > 1)
    # Ping 1 left at 5 s and timed out at 10 s (ping_timeout_ms = 5 s), ping 2 at 15 s.
    assert seen == [0, 1, 2]
    d.handle_timer(T0 + 4 * INTERVAL, WALL)  # third miss in a row: the session closes
    assert not d.is_open
    f = d.figures(T0 + 4 * INTERVAL)
    assert f.timeouts == 3 and f.rtt_ms is None  # still readable after the close


def test_a_request_that_times_out_is_not_a_ping_timeout(alice: Identity, bob: Identity) -> None:
    d, _ = opened(alice, bob)
    d.request("bench_echo", {"pad": ""}, T0, WALL, timeout_ms=100)
    d.handle_timer(T0 + 100, WALL)
    (ev,) = d.events()
    assert isinstance(ev, Timeout) and ev.type == "bench_echo"
    assert d.figures(T0 + 100).timeouts == 0
    assert d.stats.timeouts == 1


def test_a_late_pong_does_not_undo_the_timeout(alice: Identity, bob: Identity) -> None:
    d, a = opened(alice, bob)
    t = T0 + INTERVAL
    d.handle_timer(t, WALL)
    (ping,) = d.frames_to_send()
    a.receive(ping, t, WALL)
    (pong,) = a.frames_to_send()
    d.handle_timer(t + DEFAULT_LIMITS.ping_timeout_ms, WALL)  # timed out (and ping 2 left)
    d.receive(pong, t + DEFAULT_LIMITS.ping_timeout_ms + 1, WALL)  # too late: dropped
    f = d.figures(t + DEFAULT_LIMITS.ping_timeout_ms + 1)
    assert (f.timeouts, f.rtt_ms, f.rtt_samples) == (1, None, 0)


# --- traffic and rates ---------------------------------------------------------------------


def test_bytes_and_messages_in_and_out_are_the_sessions_envelopes(
    alice: Identity, bob: Identity
) -> None:
    d, a = opened(alice, bob)
    sizes = []
    for k in range(5):
        d.send("peer_chat", CHAT, T0 + 1000 * k, WALL)
        (frame,) = d.frames_to_send()
        sizes.append(wire_size(frame))
        a.receive(frame, T0 + 1000 * k + 3, WALL)
    now = T0 + 4003
    out, inn = d.figures(now), a.figures(now)
    assert (out.msgs_out, out.bytes_out, out.msgs_in, out.bytes_in) == (5, sum(sizes), 0, 0)
    assert (inn.msgs_in, inn.bytes_in, inn.msgs_out, inn.bytes_out) == (5, sum(sizes), 0, 0)
    # Everything happened within the last 10 s: rate = total / 10 s.
    assert out.rate_out_bps == sum(sizes) / 10 and out.rate_msgs_out == 0.5
    assert inn.rate_in_bps == sum(sizes) / 10 and inn.rate_msgs_in == 0.5
    assert out.rate_in_bps == out.rate_msgs_in == inn.rate_out_bps == inn.rate_msgs_out == 0
    assert out.window_s == 10.0


def test_rates_cover_only_the_last_10_s_and_totals_keep_everything(
    alice: Identity, bob: Identity
) -> None:
    d, a = opened(alice, bob)
    size = 0
    for k in range(5):  # one envelope a second from T0 + 0 s to T0 + 4 s
        d.send("peer_chat", CHAT, T0 + 1000 * k, WALL)
        (frame,) = d.frames_to_send()
        size = wire_size(frame)
        a.receive(frame, T0 + 1000 * k, WALL)
    # At T0 + 12 s the arrivals at 0, 1 and 2 s are more than 10 s old.
    f = a.figures(T0 + 12_000)
    assert (f.msgs_in, f.bytes_in) == (5, 5 * size)
    assert (f.rate_msgs_in, f.rate_in_bps) == (0.2, 2 * size / 10)
    f = a.figures(T0 + 60_000)
    assert (f.msgs_in, f.rate_msgs_in, f.rate_in_bps) == (5, 0.0, 0.0)


def test_pings_and_pongs_are_traffic_too(alice: Identity, bob: Identity) -> None:
    d, a = opened(alice, bob)
    t = T0 + INTERVAL
    d.handle_timer(t, WALL)
    (ping,) = d.frames_to_send()
    a.receive(ping, t, WALL)  # a answers with a pong, sealed during receive()
    (pong,) = a.frames_to_send()
    f = a.figures(t)
    assert (f.msgs_in, f.msgs_out) == (1, 1)
    assert (f.bytes_in, f.bytes_out) == (wire_size(ping), wire_size(pong))
    assert f.rate_msgs_out == 0.1


@st.composite
def _timeline(draw: st.DrawFn) -> list[tuple[int, int | None]]:
    """(time, amount) arrivals and (time, None) queries, time never going back."""
    t = draw(st.integers(0, 50_000))
    out: list[tuple[int, int | None]] = []
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.one_of(st.just(0), st.integers(0, 50), st.integers(0, 3_000),
                            st.integers(0, 25_000)))
        amount = draw(st.one_of(st.none(), st.integers(0, 1 << 20)))
        out.append((t, amount))
    return out


@settings(max_examples=300, deadline=None)
@given(timeline=_timeline())
def test_the_rate_is_what_arrived_in_the_last_10_s_over_10_whatever_the_pattern(
    timeline: list[tuple[int, int | None]],
) -> None:
    c = SlidingCounter(10_000, resolution_ms=1)
    seen: list[tuple[int, int]] = []
    for now, amount in timeline:
        if amount is not None:
            c.add(now, amount)
            seen.append((now, amount))
        in_window = sum(n for t, n in seen if now - 10_000 < t <= now)
        assert c.total(now) == in_window
        assert c.rate(now) == in_window / 10


@pytest.mark.parametrize("resolution", [100, 1_000])
@settings(max_examples=150, deadline=None)
@given(timeline=_timeline())
def test_a_coarser_window_moves_in_whole_slots(
    resolution: int, timeline: list[tuple[int, int | None]],
) -> None:
    c = SlidingCounter(10_000, resolution_ms=resolution)
    slots = 10_000 // resolution
    seen: list[tuple[int, int]] = []
    for now, amount in timeline:
        if amount is not None:
            c.add(now, amount)
            seen.append((now, amount))
        in_window = sum(n for t, n in seen if now // resolution - slots < t // resolution)
        assert c.rate(now) == in_window / 10
        assert len(c._entries) <= slots  # memory bounded whatever the traffic


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 4_000), st.integers(0, 5),
                                st.integers(0, 10_000)), max_size=40))
def test_the_monitor_counts_every_growth_of_the_session_totals_once(
    steps: list[tuple[int, int, int]],
) -> None:
    m = LinkMonitor(resolution_ms=1)
    stats = Stats()
    t, log = 0, []
    for gap, msgs, nbytes in steps:
        t += gap
        stats.msgs_in += msgs
        stats.bytes_in += nbytes
        m.sync(t, stats)
        m.sync(t, stats)  # a second sync with nothing new adds nothing
        log.append((t, msgs, nbytes))
    f = m.figures(t, stats)
    recent = [(n, b) for at, n, b in log if t - 10_000 < at]
    assert f.rate_msgs_in == sum(n for n, _ in recent) / 10
    assert f.rate_in_bps == sum(b for _, b in recent) / 10
    assert (f.msgs_in, f.bytes_in) == (stats.msgs_in, stats.bytes_in)


def test_an_arrival_stamped_before_a_later_one_still_counts() -> None:
    c = SlidingCounter(10_000, resolution_ms=1)
    c.add(5_000, 10)
    c.add(4_000, 7)  # a clock that went back: counted with the newest arrival
    assert c.total(5_000) == 17
    assert c.total(14_999) == 17 and c.total(15_000) == 0


def test_a_window_must_be_whole_slots() -> None:
    with pytest.raises(LocalProtocolError):
        SlidingCounter(10_000, resolution_ms=300)
    with pytest.raises(LocalProtocolError):
        SlidingCounter(0, resolution_ms=1)


# --- bench percentiles ---------------------------------------------------------------------


def test_bench_percentiles_are_nearest_rank() -> None:
    p = percentiles([float(x) for x in range(100, 0, -1)])
    assert p == {"samples": 100, "min": 1.0, "p50": 50.0, "p90": 90.0, "p95": 95.0,
                 "p99": 99.0, "max": 100.0}
    assert percentiles([2.5]) == {"samples": 1, "min": 2.5, "p50": 2.5, "p90": 2.5,
                                  "p95": 2.5, "p99": 2.5, "max": 2.5}
    assert percentiles([])["p50"] is None
