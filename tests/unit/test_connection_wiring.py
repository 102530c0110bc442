"""What ``Connection`` hands to the machines inside it, and what it reports back.

Every entry point takes a monotonic ``now`` and a wall clock ``wall``: each frame it
produces must carry ``wall`` as its ``ts`` (a machine given ``now`` instead, or its
default, would stamp another time), and each option (expected node, token,
attestation, name, capabilities, link kind) must reach the machine that uses it.
``now`` and ``wall`` are far apart here and different at every step, so any mix-up
shows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from hd_protocol import Identity, LocalProtocolError, decode_envelope
from hd_protocol.envelope import wire_size
from hd_protocol.limits import Limits
from hd_protocol.peer.admission import Decision
from hd_protocol.peer.connection import (
    FIRST_PING_MS,
    Closed,
    Connection,
    Dropped,
    Established,
    HandshakeFailed,
    Message,
    NeedAdmission,
    Reply,
    RttEstimator,
    State,
)


def rng(seed: str) -> Callable[[int], bytes]:
    counter = iter(range(1 << 62))

    def draw(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()
        return out[:n]

    return draw


NOW = 5_000  # monotonic ms
WALL = 1_764_000_000_000  # Unix ms


def dial(alice: Identity, bob: Identity, **kw: Any) -> Connection:
    return Connection.dial(alice, rng=rng("d"), now=NOW, wall=WALL + 1,
                           expected_node_id=bob.node_id, **kw)


def accept(bob: Identity, **kw: Any) -> Connection:
    return Connection.accept(bob, rng=rng("a"), now=NOW, wall=WALL, **kw)


def ts(frame: str) -> int:
    return decode_envelope(frame).ts


def handshake(d: Connection, a: Connection, *, accept_level: str = "trusted") -> None:
    """Drive the four frames by hand, each step at its own (now, wall)."""
    (hello,) = d.frames_to_send()
    a.receive(hello, NOW + 1, WALL + 2)
    (ack,) = a.frames_to_send()
    assert ts(ack) == WALL + 2
    d.receive(ack, NOW + 2, WALL + 3)
    assert isinstance(d.next_event(), NeedAdmission) and d.next_event() is None
    d.admit(Decision("trusted"), NOW + 3, WALL + 4)
    (auth,) = d.frames_to_send()
    assert ts(auth) == WALL + 4
    a.receive(auth, NOW + 4, WALL + 5)
    assert isinstance(a.next_event(), NeedAdmission)
    a.admit(Decision(accept_level), NOW + 5, WALL + 6)  # type: ignore[arg-type]
    (result,) = a.frames_to_send()
    assert ts(result) == WALL + 6
    d.receive(result, NOW + 6, WALL + 7)


def test_every_handshake_frame_carries_the_wall_clock_of_its_step(
    alice: Identity, bob: Identity
) -> None:
    d, a = dial(alice, bob), accept(bob)
    assert d.pending_bytes == wire_size(d._out[0])
    assert (d.session, d.failure, d.closed, d.role, a.role) == (
        None, None, None, "dialer", "acceptor")
    handshake(d, a)
    assert d.is_open and a.is_open


def test_the_dialers_hello_is_stamped_with_wall_and_addressed_to_the_expected_node(
    alice: Identity, bob: Identity
) -> None:
    (hello,) = dial(alice, bob).frames_to_send()
    assert ts(hello) == WALL + 1 and decode_envelope(hello).dst == bob.node_id


def test_token_attestation_name_and_capabilities_reach_the_acceptor(
    alice: Identity, bob: Identity
) -> None:
    attest = {"cert": {"x": 1}, "sig": "s"}
    d = dial(alice, bob, token="t" * 20, attest=attest, node_name="alice",
             capabilities=("collab", "chat"))
    a = accept(bob, node_name="bob")
    a.receive(d.frames_to_send()[0], NOW, WALL)
    d.receive(a.frames_to_send()[0], NOW, WALL)
    (need_d,) = d.events()
    assert isinstance(need_d, NeedAdmission) and need_d.peer.node_name == "bob"
    d.admit(Decision("trusted"), NOW, WALL)
    a.receive(d.frames_to_send()[0], NOW, WALL)
    (need,) = a.events()
    assert isinstance(need, NeedAdmission)
    assert (need.token, need.attest) == ("t" * 20, attest)
    assert (need.peer.node_name, need.peer.capabilities) == ("alice", ("collab", "chat"))


def test_the_session_gets_the_link_kind_the_limits_and_the_time_it_opened(
    alice: Identity, bob: Identity
) -> None:
    limits = Limits(ping_interval_ms=700)
    d, a = dial(alice, bob, link="relay", limits=limits), accept(bob, link="lan")
    handshake(d, a)
    assert d.session is not None and a.session is not None
    assert (d.session.link, a.session.link) == ("relay", "lan")
    assert d.session.limits is limits and d.session.opened_at == NOW + 6
    assert d.next_deadline() == NOW + 6 + 700


def test_a_bad_role_is_a_local_error(alice: Identity) -> None:
    with pytest.raises(LocalProtocolError) as info:
        Connection(alice, "relay", rng=rng("x"), now=NOW, wall=WALL)  # type: ignore[arg-type]
    assert info.value.code == "bad_role"


@pytest.fixture
def opened(alice: Identity, bob: Identity) -> tuple[Connection, Connection]:
    d, a = dial(alice, bob), accept(bob)
    handshake(d, a)
    assert isinstance(d.next_event(), Established) and isinstance(a.next_event(), Established)
    return d, a


def test_sessions_stamp_sends_requests_errors_and_byes_with_wall(
    opened: tuple[Connection, Connection],
) -> None:
    d, a = opened
    mid = d.send("peer_chat", {"text": "x", "from_name": ""}, NOW + 10, WALL + 10,
                 msg_id="c" * 32)
    assert mid == "c" * 32
    (chat,) = d.frames_to_send()
    assert ts(chat) == WALL + 10 and decode_envelope(chat).msg_id == "c" * 32
    d.request("agent_request", {}, NOW + 11, WALL + 11)
    (req,) = d.frames_to_send()
    assert ts(req) == WALL + 11
    d.reply_error("busy", "later", "d" * 32, NOW + 12, WALL + 12)
    (err,) = d.frames_to_send()
    assert ts(err) == WALL + 12 and decode_envelope(err).re == "d" * 32
    a.receive(err, NOW + 12, WALL + 12)
    assert [(e.code, e.message) for e in a.events()] == [("busy", "later")]  # type: ignore[union-attr]
    d.close("disconnect", NOW + 13, WALL + 13)
    (bye,) = d.frames_to_send()
    assert ts(bye) == WALL + 13 and d.closed == Closed("disconnect")


def test_an_answer_to_a_ping_is_stamped_with_the_wall_clock_of_its_receive(
    opened: tuple[Connection, Connection],
) -> None:
    d, a = opened
    d.handle_timer(NOW + 6 + 5_000, WALL + 20)
    (ping,) = d.frames_to_send()
    assert ts(ping) == WALL + 20 and decode_envelope(ping).type == "ping"
    a.receive(ping, NOW + 5_010, WALL + 21)
    (pong,) = a.frames_to_send()
    assert ts(pong) == WALL + 21


def test_a_timeout_on_the_session_is_stamped_with_wall(
    opened: tuple[Connection, Connection],
) -> None:
    d, _ = opened
    limits = d.limits
    t = NOW + 6
    for i in range(limits.ping_misses_before_close):
        t += limits.ping_interval_ms
        d.handle_timer(t, WALL + 30 + i)
        d.frames_to_send()
    t += limits.ping_timeout_ms
    d.handle_timer(t, WALL + 99)
    (bye,) = d.frames_to_send()
    assert decode_envelope(bye).type == "bye" and ts(bye) == WALL + 99
    assert d.state is State.CLOSED and d.next_deadline() is None


def test_a_cancelled_request_gets_no_reply_event(
    opened: tuple[Connection, Connection], bob: Identity
) -> None:
    d, a = opened
    req = d.request("agent_request", {}, NOW + 10, WALL)
    a.receive(d.frames_to_send()[0], NOW + 10, WALL)
    (msg,) = a.events()
    assert isinstance(msg, Message)
    d.cancel_request(req)
    a.send("agent_result", {}, NOW + 11, WALL, re=req)
    d.receive(a.frames_to_send()[0], NOW + 11, WALL)
    (ev,) = d.events()
    assert isinstance(ev, Dropped) and ev.code == "late"
    accept(bob).cancel_request(req)  # before a session: nothing to cancel, no error


def test_a_reply_is_delivered_once_and_events_come_one_at_a_time(
    opened: tuple[Connection, Connection],
) -> None:
    d, a = opened
    req = d.request("agent_request", {}, NOW + 10, WALL)
    a.receive(d.frames_to_send()[0], NOW + 10, WALL)
    a.events()
    a.send("agent_result", {"n": 1}, NOW + 11, WALL, re=req)
    a.send("presence", {}, NOW + 11, WALL)
    for f in a.frames_to_send():
        d.receive(f, NOW + 12, WALL)
    first, second = d.next_event(), d.next_event()
    assert isinstance(first, Reply) and first.request_id == req
    assert isinstance(second, Message) and second.type == "presence"
    assert d.next_event() is None


def test_the_next_deadline_is_the_earlier_of_the_next_ping_and_a_request(
    opened: tuple[Connection, Connection],
) -> None:
    d, _ = opened
    ping_at = NOW + 6 + FIRST_PING_MS
    assert d.next_deadline() == ping_at
    d.request("agent_request", {}, NOW + 7, WALL, timeout_ms=100)
    assert d.next_deadline() == NOW + 107
    d.request("agent_request", {}, NOW + 7, WALL, timeout_ms=ping_at - NOW - 7)
    assert d.next_deadline() == NOW + 107
    d.handle_timer(NOW + 107, WALL)
    assert d.next_deadline() == ping_at  # the ping and the second request are both due


def test_a_timer_before_the_next_ping_sends_nothing(
    opened: tuple[Connection, Connection],
) -> None:
    d, _ = opened
    d.handle_timer(NOW + 6 + FIRST_PING_MS - 1, WALL)
    assert d.frames_to_send() == [] and d.pending_bytes == 0


def test_closing_during_the_handshake_names_the_peer_that_answered(
    alice: Identity, bob: Identity
) -> None:
    d, a = dial(alice, bob), accept(bob)
    a.receive(d.frames_to_send()[0], NOW, WALL)
    d.receive(a.frames_to_send()[0], NOW, WALL)
    d.events()
    d.close("shutdown", NOW, WALL)
    (ev,) = d.events()
    assert ev == HandshakeFailed("shutdown", "closed locally", False, d.peer)
    assert ev.peer is not None and ev.peer.node_id == bob.node_id
    assert d.failure == ev and d.state is State.CLOSED
    d.close("again", NOW, WALL)
    d.link_lost()
    assert d.events() == [] and d.failure == ev


def test_a_link_lost_during_the_handshake_is_a_remote_close_naming_the_peer(
    alice: Identity, bob: Identity
) -> None:
    d, a = dial(alice, bob), accept(bob)
    a.receive(d.frames_to_send()[0], NOW, WALL)
    a.link_lost()
    (ev,) = a.events()
    assert ev == HandshakeFailed("closed", "the link closed during the handshake", True,
                                 a.peer)
    assert ev.peer is not None and ev.peer.node_id == alice.node_id
    assert a.frames_to_send() == [] and a.pending_bytes == 0 and a.pending_frames == 0


def test_a_link_lost_on_an_open_session_closes_it_and_drops_what_was_queued(
    opened: tuple[Connection, Connection],
) -> None:
    d, _ = opened
    d.send("presence", {}, NOW + 10, WALL)
    assert d.pending_bytes > 0
    d.link_lost("reset")
    assert d.closed == Closed("reset", remote=True) and d.state is State.CLOSED
    assert d.pending_bytes == 0 and d.pending_frames == 0 and d.next_deadline() is None
    assert d.events() == [Closed("reset", remote=True)]
    with pytest.raises(LocalProtocolError) as info:
        d.send("presence", {}, NOW + 11, WALL)
    assert info.value.code == "not_open"
    d.handle_timer(NOW + 100_000, WALL)
    assert d.frames_to_send() == []


def test_a_bye_from_the_peer_closes_once_and_later_frames_are_ignored(
    opened: tuple[Connection, Connection],
) -> None:
    d, a = opened
    a.send("presence", {}, NOW + 10, WALL)
    a.close("disconnect", NOW + 10, WALL)
    frames = a.frames_to_send()
    for f in frames:
        d.receive(f, NOW + 11, WALL)
    events = d.events()
    assert [type(e) for e in events] == [Message, Closed]
    assert d.closed == Closed("disconnect", remote=True) and d.next_deadline() is None
    d.receive(frames[0], NOW + 12, WALL)
    assert d.events() == []


def test_pending_bytes_count_every_queued_frame(opened: tuple[Connection, Connection]) -> None:
    d, _ = opened
    d.send("presence", {}, NOW + 10, WALL)
    d.send("presence", {"n": "x" * 50}, NOW + 10, WALL)
    assert d.pending_bytes == sum(wire_size(f) for f in list(d._out)) and d.pending_frames == 2


def test_admitting_without_a_pending_admission_is_a_local_state_error(
    opened: tuple[Connection, Connection],
) -> None:
    d, _ = opened
    with pytest.raises(LocalProtocolError) as info:
        d.admit(Decision("trusted"), NOW, WALL)
    assert info.value.code == "state"


def test_the_handshake_deadline_fires_through_handle_timer(alice: Identity, bob: Identity) -> None:
    d = dial(alice, bob)
    d.handle_timer(NOW + 9_999, WALL)
    assert d.events() == []
    d.handle_timer(NOW + 10_000, WALL)
    (ev,) = d.events()
    assert isinstance(ev, HandshakeFailed) and ev.reason == "timeout"


def test_the_rtt_estimator_starts_from_its_first_sample() -> None:
    rtt = RttEstimator()
    rtt.observe(100)
    assert (rtt.srtt_ms, rtt.rttvar_ms, rtt.last_ms, rtt.samples) == (100.0, 50.0, 100, 1)
    rtt.observe(-5)
    assert rtt.last_ms == 0 and rtt.samples == 2
    assert rtt.rttvar_ms == 0.75 * 50 + 0.25 * 100 and rtt.srtt_ms == 0.875 * 100


def test_defaults_a_direct_link_an_empty_name_and_the_known_types_given(
    alice: Identity, bob: Identity
) -> None:
    d = Connection.dial(alice, rng=rng("d"), now=NOW, wall=WALL)
    (hello,) = d.frames_to_send()
    assert decode_envelope(hello).data["node_name"] == ""
    d, a = dial(alice, bob), accept(bob, known_types=frozenset({"ping", "pong"}))
    handshake(d, a)
    assert a.session is not None and a.session.link == "direct"
    a.events()
    d.send("presence", {}, NOW + 10, WALL)
    a.receive(d.frames_to_send()[0], NOW + 10, WALL)
    assert a.events() == []  # an unknown type: answered with an error, no event
    (err,) = a.frames_to_send()
    assert decode_envelope(err).type == "error"
