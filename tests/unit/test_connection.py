"""The connection machine (handshake -> session -> keepalive), driven by ``now`` alone.

Two machines talk through plain lists: whatever ``frames_to_send()`` yields on one side
is fed to the other's ``receive``. Time is a monotonic ``now`` the test moves; ``wall``
is a separate clock that only shows up in the envelopes' ``ts``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol import Identity, LocalProtocolError, decode_envelope
from hd_protocol.limits import DEFAULT_LIMITS
from hd_protocol.peer.admission import Decision, reject
from hd_protocol.peer.connection import (
    FIRST_PING_MS,
    Closed,
    Connection,
    Established,
    HandshakeFailed,
    Message,
    NeedAdmission,
    Pong,
    Reply,
    RttEstimator,
    State,
    Timeout,
)


def DeterministicRng(seed: str) -> Callable[[int], bytes]:  # noqa: N802 - reads as a type
    """``rng(n)``: a SHA-256 stream, so every run draws the same bytes."""
    counter = iter(range(1 << 62))

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()
        return out[:n]

    return rng


T0 = 1_000  # monotonic ms
WALL = 1_764_000_000_000  # Unix ms: far from T0 on purpose


def pair(alice: Identity, bob: Identity, **kw: object) -> tuple[Connection, Connection]:
    d = Connection.dial(alice, rng=DeterministicRng("d"), now=T0, wall=WALL,
                        expected_node_id=bob.node_id, **kw)  # type: ignore[arg-type]
    a = Connection.accept(bob, rng=DeterministicRng("a"), now=T0, wall=WALL,
                          **kw)  # type: ignore[arg-type]
    return d, a


def pump(x: Connection, y: Connection, now: int, wall: int = WALL) -> int:
    """Move frames both ways until both are quiet; answer admissions with trusted."""
    moved = 0
    while True:
        busy = False
        for src, dst in ((x, y), (y, x)):
            for f in src.frames_to_send():
                dst.receive(f, now, wall)
                moved += 1
                busy = True
            for conn in (src, dst):
                for ev in list(conn._events):
                    if isinstance(ev, NeedAdmission):
                        conn._events.remove(ev)
                        conn.admit(Decision("trusted"), now, wall)
                        busy = True
        if not busy:
            return moved


def opened(alice: Identity, bob: Identity, **kw: object) -> tuple[Connection, Connection]:
    d, a = pair(alice, bob, **kw)
    pump(d, a, T0)
    assert isinstance(d.next_event(), Established) and isinstance(a.next_event(), Established)
    assert d.is_open and a.is_open
    return d, a


def test_a_dialer_has_its_hello_ready_and_both_sides_reach_an_open_session(
    alice: Identity, bob: Identity
) -> None:
    d, a = pair(alice, bob)
    assert d.pending_frames == 1 and d.pending_bytes > 0
    (hello,) = d.frames_to_send()
    assert decode_envelope(hello).type == "hello"
    assert d.frames_to_send() == [] and d.pending_bytes == 0  # each frame exactly once
    a.receive(hello, T0, WALL)
    pump(d, a, T0)
    assert [type(e) for e in d.events()] == [Established]
    assert [type(e) for e in a.events()] == [Established]
    assert d.peer_id == bob.node_id and a.peer_id == alice.node_id
    assert d.state is State.OPEN


def test_the_envelope_ts_is_the_wall_clock_and_timers_run_on_now(
    alice: Identity, bob: Identity
) -> None:
    d, a = opened(alice, bob)
    d.send("peer_chat", {"text": "hi", "from_name": "a"}, T0 + 7, WALL + 123)
    (frame,) = d.frames_to_send()
    assert decode_envelope(frame).ts == WALL + 123
    # The first ping is due a second after the session opened, on the monotonic clock.
    assert d.next_deadline() == T0 + FIRST_PING_MS


def test_sending_before_the_session_is_open_is_a_local_error(
    alice: Identity, bob: Identity
) -> None:
    d, _ = pair(alice, bob)
    with pytest.raises(LocalProtocolError) as err:
        d.send("peer_chat", {}, T0, WALL)
    assert err.value.code == "not_open"


def test_the_handshake_deadline_fails_the_link(alice: Identity, bob: Identity) -> None:
    d, a = pair(alice, bob)
    a.receive(d.frames_to_send()[0], T0, WALL)
    limit = DEFAULT_LIMITS.handshake_timeout_ms
    assert d.next_deadline() == T0 + limit
    d.handle_timer(T0 + limit - 1, WALL)
    assert d.events() == []
    d.handle_timer(T0 + limit, WALL)
    (failed,) = d.events()
    assert isinstance(failed, HandshakeFailed) and failed.reason == "timeout"
    assert d.next_deadline() is None and d.state is State.CLOSED


def test_a_refusal_is_sent_to_the_dialer_and_both_sides_fail(
    alice: Identity, bob: Identity
) -> None:
    d, a = pair(alice, bob)
    a.receive(d.frames_to_send()[0], T0, WALL)
    d.receive(a.frames_to_send()[0], T0, WALL)
    assert isinstance(d.next_event(), NeedAdmission)
    d.admit(Decision("trusted"), T0, WALL)
    a.receive(d.frames_to_send()[0], T0, WALL)
    need = a.next_event()
    assert isinstance(need, NeedAdmission) and need.peer.node_id == alice.node_id
    a.admit(reject("pairing_required"), T0, WALL)
    (refusal,) = a.frames_to_send()  # the auth_result goes out before the link closes
    (failed_a,) = a.events()
    assert isinstance(failed_a, HandshakeFailed) and failed_a.reason == "pairing_required"
    d.receive(refusal, T0, WALL)
    (failed_d,) = d.events()
    assert isinstance(failed_d, HandshakeFailed)
    assert failed_d.reason == "pairing_required" and failed_d.remote
    assert failed_d.peer is not None and failed_d.peer.node_id == bob.node_id


def test_pings_go_out_every_interval_and_pongs_feed_the_rtt(
    alice: Identity, bob: Identity
) -> None:
    d, a = opened(alice, bob)
    interval = DEFAULT_LIMITS.ping_interval_ms
    t = T0 + interval
    d.handle_timer(t, WALL)
    (ping,) = d.frames_to_send()
    assert decode_envelope(ping).type == "ping"
    assert d.next_deadline() == t + DEFAULT_LIMITS.ping_timeout_ms  # the ping's own deadline
    a.receive(ping, t + 30, WALL)
    (pong,) = a.frames_to_send()
    d.receive(pong, t + 42, WALL)
    (ev,) = d.events()
    assert isinstance(ev, Pong) and ev.rtt_ms == 42
    assert d.rtt.last_ms == 42 and d.rtt.srtt_ms == 42.0 and d.rtt.rttvar_ms == 21.0
    assert d.next_deadline() == t + interval


def test_three_unanswered_pings_close_the_session_with_bye_timeout(
    alice: Identity, bob: Identity
) -> None:
    limits = replace(DEFAULT_LIMITS, ping_interval_ms=500, ping_timeout_ms=500)
    d, a = opened(alice, bob, limits=limits)
    t = T0
    closed: list[object] = []
    sent: list[str] = []
    for _ in range(20):
        dl = d.next_deadline()
        if dl is None:
            break
        t = dl
        d.handle_timer(t, WALL)
        sent += d.frames_to_send()
        closed += [e for e in d.events() if isinstance(e, Closed)]
    assert closed == [Closed("timeout", remote=False)]
    assert [decode_envelope(f).type for f in sent] == ["ping", "ping", "ping", "bye"]
    assert d.stats.timeouts == 3
    assert t - T0 <= 4 * 500  # closed within a few intervals, on the monotonic clock


def test_a_request_waits_for_its_own_deadline_not_the_sessions_earliest(
    alice: Identity, bob: Identity
) -> None:
    d, a = opened(alice, bob)
    rid = d.request("bench_echo", {}, T0, WALL, timeout_ms=20_000)
    a.receive(d.frames_to_send()[0], T0, WALL)  # b never answers
    a.events()
    t = T0
    while True:
        dl = d.next_deadline()
        assert dl is not None
        t = dl
        d.handle_timer(t, WALL)
        for f in d.frames_to_send():  # keep the pings answered
            a.receive(f, t, WALL)
        for f in a.frames_to_send():
            d.receive(f, t, WALL)
        timeouts = [e for e in d.events() if isinstance(e, Timeout)]
        if timeouts:
            break
    assert timeouts == [Timeout(rid, "bench_echo")]
    assert t == T0 + 20_000


def test_a_reply_arrives_as_an_event_with_the_request_id(
    alice: Identity, bob: Identity
) -> None:
    d, a = opened(alice, bob)
    rid = d.request("bench_echo", {"pad": "x"}, T0, WALL)
    a.receive(d.frames_to_send()[0], T0 + 1, WALL)
    (msg,) = a.events()
    assert isinstance(msg, Message) and msg.data == {"pad": "x"}
    a.send("bench_echo", {}, T0 + 1, WALL, re=msg.msg_id)
    d.receive(a.frames_to_send()[0], T0 + 2, WALL)
    (reply,) = d.events()
    assert isinstance(reply, Reply) and reply.request_id == rid


def test_close_sends_bye_and_the_peer_sees_a_remote_close(
    alice: Identity, bob: Identity
) -> None:
    d, a = opened(alice, bob)
    d.close("shutdown", T0, WALL)
    (bye,) = d.frames_to_send()
    assert d.events() == [Closed("shutdown", remote=False)]
    a.receive(bye, T0, WALL)
    assert a.events() == [Closed("shutdown", remote=True)]
    assert a.next_deadline() is None
    a.receive(bye, T0, WALL)  # anything after the end is ignored
    assert a.events() == [] and a.frames_to_send() == []


def test_a_lost_link_ends_the_session_or_the_handshake_without_frames(
    alice: Identity, bob: Identity
) -> None:
    d, a = opened(alice, bob)
    d.send("ping", {}, T0, WALL)
    d.link_lost()
    assert d.frames_to_send() == []
    assert d.events() == [Closed("link closed", remote=True)]
    h, _ = pair(alice, bob)
    h.link_lost()
    (failed,) = h.events()
    assert isinstance(failed, HandshakeFailed) and failed.reason == "closed"


def test_close_during_the_handshake_fails_it_locally(alice: Identity, bob: Identity) -> None:
    d, _ = pair(alice, bob)
    d.close("ladder_lost", T0, WALL)
    (failed,) = d.events()
    assert isinstance(failed, HandshakeFailed)
    assert failed.reason == "ladder_lost" and not failed.remote


def test_rtt_estimator_follows_rfc_6298() -> None:
    est = RttEstimator()
    est.observe(100)
    assert (est.srtt_ms, est.rttvar_ms) == (100.0, 50.0)
    est.observe(200)
    # RTTVAR = 3/4 * 50 + 1/4 * |100 - 200| = 62.5 ; SRTT = 7/8 * 100 + 1/8 * 200 = 112.5
    assert (est.srtt_ms, est.rttvar_ms) == (112.5, 62.5)
    assert est.last_ms == 200 and est.samples == 2


@settings(max_examples=50, deadline=None)
@given(samples=st.lists(st.integers(0, 10_000), min_size=1, max_size=50))
def test_smoothed_rtt_stays_within_the_samples_seen(samples: list[int]) -> None:
    est = RttEstimator()
    for s in samples:
        est.observe(s)
    assert est.srtt_ms is not None and est.rttvar_ms is not None
    assert min(samples) <= est.srtt_ms <= max(samples)
    assert 0 <= est.rttvar_ms <= max(samples)


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.sampled_from(["send_d", "send_a", "tick", "deliver"]),
                      max_size=40))
def test_frames_are_delivered_in_seq_order_whoever_sends(steps: list[str]) -> None:
    alice = Identity.from_seed(b"\x01" * 32)
    bob = Identity.from_seed(b"\x02" * 32)
    d, a = opened(alice, bob)
    t = T0
    for step in steps:
        t += 100
        if step == "send_d":
            d.send("peer_chat", {"text": "x", "from_name": ""}, t, WALL)
        elif step == "send_a":
            a.send("peer_chat", {"text": "y", "from_name": ""}, t, WALL)
        elif step == "tick":
            d.handle_timer(t, WALL)
            a.handle_timer(t, WALL)
        else:
            pump(d, a, t)
    pump(d, a, t)
    for conn in (d, a):
        assert conn.stats.failures == 0  # never a seq, sig or box failure
