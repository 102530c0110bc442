"""Session rules (SPEC 5) that only an authentic, well-sealed envelope can reach: the
typing of what a peer puts in ``bye`` and ``error``, a configured size limit, the
counters a shell exports, and the simultaneous-dial window.

Frames come from the peer's real ``Session`` (sealed and signed with the handshake's
keys), so each is refused or reshaped by the rule under test and nothing else.
"""

from __future__ import annotations

from typing import Any

import pytest

from hd_protocol import (
    Connection,
    Decision,
    Identity,
    Limits,
    LocalProtocolError,
    Session,
    decode_envelope,
    keep_new_session,
    reconnect_delay_ms,
)
from hd_protocol.envelope import wire_size
from hd_protocol.peer.connection import HandshakeFailed, NeedAdmission
from hd_protocol.peer.session import Closed, Dropped, Message, PeerError, Pong, Reply, Send, Stats

T0 = 1_764_000_000_000


def pair(handshake: Any, rng_factory: Any, alice: Identity, bob: Identity,
         limits: Limits | None = None) -> tuple[Session, Session]:
    """(alice's session, bob's); bob's is built with ``limits``."""
    res_a, res_b = handshake(alice, bob, now=T0)
    a = Session(alice, res_a, rng=rng_factory("A"), now=T0)
    b = Session(bob, res_b, rng=rng_factory("B"), now=T0, limits=limits or Limits())
    return a, b


def wire(outputs: list[Any]) -> str:
    (send,) = [o for o in outputs if isinstance(o, Send)]
    return send.wire


@pytest.fixture
def sessions(handshake: Any, rng_factory: Any, alice: Identity,
             bob: Identity) -> tuple[Session, Session]:
    return pair(handshake, rng_factory, alice, bob)


# --- what a peer puts in bye and error -------------------------------------------------


def test_bye_closes_with_the_reason_the_peer_gave(sessions: tuple[Session, Session]) -> None:
    a, b = sessions
    assert b.receive(wire(a.send("bye", {"reason": "shutdown"}, T0)[1]), T0) == [
        Closed("shutdown", remote=True)]


@pytest.mark.parametrize("data", [{"reason": 5}, {"reason": None}, {"reason": ["x"]}, {}],
                         ids=["int", "null", "list", "missing"])
def test_bye_whose_reason_is_not_a_string_closes_with_bye(
    sessions: tuple[Session, Session], data: dict[str, Any]
) -> None:
    a, b = sessions
    out = b.receive(wire(a.send("bye", data, T0)[1]), T0)
    assert out == [Closed("bye", remote=True)] and b.closed == Closed("bye", remote=True)


def test_error_carries_the_code_and_message_the_peer_gave(
    sessions: tuple[Session, Session],
) -> None:
    a, b = sessions
    out = b.receive(wire(a.send("error", {"code": "busy", "message": "later"}, T0)[1]), T0)
    assert out == [PeerError("busy", "later", None)]


@pytest.mark.parametrize("data", [{"code": 5, "message": ["m"]}, {"code": None},
                                  {"message": {"x": 1}}, {}],
                         ids=["int_and_list", "null_code", "object_message", "missing"])
def test_error_whose_code_or_message_is_not_a_string_is_unknown_and_empty(
    sessions: tuple[Session, Session], data: dict[str, Any]
) -> None:
    a, b = sessions
    out = b.receive(wire(a.send("error", data, T0)[1]), T0)
    assert out == [PeerError("unknown", "", None)]


def test_an_error_answering_a_request_completes_it_with_the_typed_error(
    sessions: tuple[Session, Session],
) -> None:
    a, b = sessions
    req, out = b.request("agent_request", {}, T0)
    a.receive(wire(out), T0)
    frame = wire(a.send("error", {"code": 7, "message": "no"}, T0, re=req)[1])
    reply, err = b.receive(frame, T0 + 1)
    assert isinstance(reply, Reply) and reply.request_id == req
    assert err == PeerError("unknown", "no", req) and b.pending_requests == 0


# --- a configured size limit --------------------------------------------------------------


def test_a_session_takes_frames_of_exactly_its_configured_size_and_not_one_byte_more(
    handshake: Any, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    a, _ = pair(handshake, rng_factory, alice, bob)
    frame = wire(a.send("peer_chat", {"text": "x" * 3000, "from_name": "a"}, T0)[1])
    size = wire_size(frame)
    _, fits = pair(handshake, rng_factory, alice, bob, Limits(max_envelope_bytes=size))
    (msg,) = fits.receive(frame, T0)
    assert isinstance(msg, Message) and msg.data["text"] == "x" * 3000
    _, small = pair(handshake, rng_factory, alice, bob, Limits(max_envelope_bytes=size - 1))
    assert small.receive(frame, T0) == [Dropped("too_large", f"envelope over {size - 1} bytes")]


def test_a_session_sends_frames_of_exactly_its_configured_size_and_not_one_byte_more(
    handshake: Any, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    _, probe = pair(handshake, rng_factory, alice, bob)
    size = wire_size(wire(probe.send("presence", {"n": "y" * 500}, T0)[1]))
    _, fits = pair(handshake, rng_factory, alice, bob, Limits(max_envelope_bytes=size))
    assert wire_size(wire(fits.send("presence", {"n": "y" * 500}, T0)[1])) == size
    _, small = pair(handshake, rng_factory, alice, bob, Limits(max_envelope_bytes=size - 1))
    with pytest.raises(LocalProtocolError) as info:
        small.send("presence", {"n": "y" * 500}, T0)
    assert info.value.code == "too_large" and small.tx_seq == 1  # nothing was used up


def _connections(rng_factory: Any, alice: Identity, bob: Identity,
                 limits: Limits) -> tuple[Connection, Connection]:
    d = Connection.dial(alice, rng=rng_factory("cd"), now=0, wall=T0,
                        expected_node_id=bob.node_id)
    a = Connection.accept(bob, rng=rng_factory("ca"), now=0, wall=T0, limits=limits)
    return d, a


def test_a_connection_applies_its_configured_size_limit_to_the_handshake(
    rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    d, a = _connections(rng_factory, alice, bob, Limits())
    (hello,) = d.frames_to_send()
    size = wire_size(hello)
    _, fits = _connections(rng_factory, alice, bob, Limits(max_envelope_bytes=size))
    fits.receive(hello, 1, T0)
    assert len(fits.frames_to_send()) == 1 and fits.events() == []
    _, small = _connections(rng_factory, alice, bob, Limits(max_envelope_bytes=size - 1))
    small.receive(hello, 1, T0)
    (ev,) = small.events()
    assert isinstance(ev, HandshakeFailed) and ev.reason == "bad_handshake"
    assert f"over {size - 1} bytes" in ev.message and small.frames_to_send() == []


def test_a_connection_applies_its_configured_size_limit_to_the_session(
    rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    limits = Limits(max_envelope_bytes=2000)
    d, a = _connections(rng_factory, alice, bob, limits)
    for _ in range(3):
        for src, dst in ((d, a), (a, d)):
            for f in src.frames_to_send():
                dst.receive(f, 1, T0)
            for ev in dst.events():
                if isinstance(ev, NeedAdmission):
                    dst.admit(Decision("trusted"), 1, T0)
    assert d.is_open and a.is_open
    d.send("peer_chat", {"text": "z" * 1800, "from_name": ""}, 2, T0)
    (big,) = d.frames_to_send()
    assert wire_size(big) > 2000
    a.receive(big, 3, T0)
    (ev,) = a.events()
    assert isinstance(ev, Dropped) and ev.code == "too_large"


# --- counters ---------------------------------------------------------------------------


def test_stats_count_messages_bytes_drops_failures_and_timeouts(
    sessions: tuple[Session, Session],
) -> None:
    a, b = sessions
    f1 = wire(a.send("peer_chat", {"text": "one", "from_name": "a"}, T0)[1])
    f2 = wire(a.send("presence", {"node_name": "alice"}, T0)[1])
    assert a.stats == Stats(msgs_out=2, bytes_out=wire_size(f1) + wire_size(f2))
    b.receive(f1, T0)
    b.receive(f2, T0)
    b.receive(f1, T0)  # a replay: a failure
    pong = wire(a.send("pong", {}, T0, re="c" * 32)[1])
    b.receive(pong, T0)  # a pong for no ping: dropped, not a failure
    sent_by_b = b.stats.bytes_out
    _, out = b.request("agent_request", {}, T0)
    b.on_timer(T0 + 30_000)
    assert b.stats == Stats(
        msgs_in=3, msgs_out=1, bytes_in=wire_size(f1) + wire_size(f2) + wire_size(pong),
        bytes_out=sent_by_b + wire_size(wire(out)), dropped=2, failures=1, timeouts=1,
        by_code={"seq": 1},
    )


def test_failures_are_counted_per_code(sessions: tuple[Session, Session]) -> None:
    a, b = sessions
    f1 = wire(a.send("peer_chat", {"text": "one", "from_name": "a"}, T0)[1])
    b.receive(f1, T0)
    b.receive(f1, T0)
    b.receive(f1, T0)
    b.receive("{", T0)
    assert b.stats.by_code == {"seq": 2, "bad_json": 1}
    assert (b.stats.failures, b.stats.dropped) == (3, 3)


# --- the simultaneous-dial window -----------------------------------------------------------


def _keep(existing_at: int, new_at: int, *, new_dialer: str = "zzzz",
          existing_dialer: str = "aaaa") -> bool:
    return keep_new_session("self", existing_dialer=existing_dialer,
                            existing_opened_at=existing_at, new_dialer=new_dialer,
                            new_opened_at=new_at, handshake_timeout_ms=10_000)


def test_sessions_within_one_handshake_timeout_either_way_keep_the_smaller_dialer() -> None:
    # "zzzz" dialled the new session, "aaaa" the existing one: the existing one stays,
    # whichever finished first, up to exactly one handshake timeout apart.
    for new_at in (T0, T0 + 10_000, T0 - 10_000):
        assert _keep(T0, new_at) is False
        assert _keep(T0, new_at, new_dialer="aaaa", existing_dialer="zzzz") is True


def test_sessions_further_apart_than_one_handshake_timeout_either_way_keep_the_new_one() -> (
    None
):
    for new_at in (T0 + 10_001, T0 - 10_001, T0 - 60_000):
        assert _keep(T0, new_at) is True


def test_the_same_dialer_always_replaces_its_old_session() -> None:
    assert _keep(T0, T0, new_dialer="aaaa") is True



# --- the reconnect backoff ------------------------------------------------------------------


def fixed(b: bytes) -> Any:
    return lambda n: b[:n]


def test_the_backoff_is_half_fixed_half_jitter_of_a_step_capped_at_60_s() -> None:
    lowest, highest = fixed(b"\x00\x00\x00\x00"), fixed(b"\xff\xff\xff\xff")
    assert [reconnect_delay_ms(a, lowest) for a in range(8)] == [
        500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
    assert reconnect_delay_ms(40, highest) == 59_999  # just under the 60 s cap
    assert reconnect_delay_ms(40, fixed(b"\xff\xff\xff\x00")) == 59_999
    assert reconnect_delay_ms(40, fixed(b"\xff\xff\xfe\x00")) == 59_999
    # the jitter is big-endian: the first byte weighs most
    assert reconnect_delay_ms(1, fixed(b"\x80\x00\x00\x00")) == 1_500
    assert reconnect_delay_ms(1, fixed(b"\x00\x00\x00\x80")) == 1_000


def test_the_backoff_floors_half_of_an_odd_step() -> None:
    # step 3: 1 fixed (not 1.5) plus half of the remaining 2
    assert reconnect_delay_ms(0, fixed(b"\x80\x00\x00\x00"), base_ms=3) == 2


def test_the_backoff_exponent_stops_growing_at_2_pow_30() -> None:
    huge = 10**15
    lowest = fixed(b"\x00\x00\x00\x00")
    assert reconnect_delay_ms(31, lowest, cap_ms=huge) == 2**30 * 1_000 // 2
    assert reconnect_delay_ms(10**9, lowest, cap_ms=huge) == 2**30 * 1_000 // 2


# --- what a session remembers and stamps -------------------------------------------------


def test_a_session_records_its_peer_its_link_and_when_it_opened(
    handshake: Any, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    res_a, _ = handshake(alice, bob, now=T0)
    s = Session(alice, res_a, rng=rng_factory("A"), now=T0 + 5)
    assert (s.peer_id, s.peer_key) == (bob.node_id, bob.public_key)
    assert (s.peer_name, s.peer_capabilities) == (res_a.peer.node_name, res_a.peer.capabilities)
    assert (s.link, s.opened_at, s.last_seen) == ("direct", T0 + 5, T0 + 5)


def test_a_session_takes_an_envelope_already_decoded_and_counts_its_sealed_size(
    sessions: tuple[Session, Session],
) -> None:
    a, b = sessions
    env = decode_envelope(wire(a.send("peer_chat", {"text": "x", "from_name": ""}, T0)[1]))
    (msg,) = b.receive(env, T0)
    assert isinstance(msg, Message) and msg.data["text"] == "x"
    assert b.stats.bytes_in == len(env.box or "") + 360


def test_answers_and_closes_a_session_sends_by_itself_carry_the_wall_clock(
    handshake: Any, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    a, b = pair(handshake, rng_factory, alice, bob,
                Limits(session_failures_before_close=2))
    ping = wire(a.send("ping", {}, T0)[1])
    assert decode_envelope(wire(b.receive(ping, 7, wall=T0 + 1))).ts == T0 + 1  # the pong
    unknown = wire(a.send("zz_unknown", {}, T0)[1])
    (err,) = b.receive(unknown, 8, wall=T0 + 2)
    error = decode_envelope(err.wire)  # type: ignore[union-attr]
    assert error.ts == T0 + 2 and error.type == "error"
    assert a.receive(err.wire, 9) == [  # type: ignore[union-attr]
        PeerError("unknown_type", "unknown type zz_unknown", error.re)]
    b.receive(ping, 10, wall=T0 + 3)  # a replay: failure 1
    out = b.receive(ping, 11, wall=T0 + 4)  # failure 2: closes with bye
    (bye,) = [o for o in out if isinstance(o, Send)]
    assert decode_envelope(bye.wire).ts == T0 + 4 and b.closed == Closed("too_many_errors")


def test_pings_requests_and_closes_stamp_the_wall_clock_they_are_given(
    sessions: tuple[Session, Session],
) -> None:
    a, _ = sessions
    assert decode_envelope(wire(a.ping(1, wall=T0 + 1)[1])).ts == T0 + 1
    assert decode_envelope(wire(a.request("agent_request", {}, 2, wall=T0 + 2)[1])).ts == (
        T0 + 2)
    assert decode_envelope(wire(a.reply_error("busy", "m", "c" * 32, 3, wall=T0 + 3))).ts == (
        T0 + 3)
    a.on_timer(10**9, wall=T0 + 4)  # three requests time out: not pings, no close
    assert a.closed is None
    assert decode_envelope(wire(a.close("disconnect", 4, wall=T0 + 5))).ts == T0 + 5


def test_three_missed_pings_close_with_a_bye_stamped_with_the_wall_clock(
    sessions: tuple[Session, Session],
) -> None:
    a, _ = sessions
    for i in range(3):
        a.ping(i, wall=T0)
    out = a.on_timer(10**9, wall=T0 + 9)
    (bye,) = [o for o in out if isinstance(o, Send)]
    assert decode_envelope(bye.wire).ts == T0 + 9 and a.closed == Closed("timeout")


def test_a_pong_in_the_same_millisecond_measures_zero(sessions: tuple[Session, Session]) -> None:
    a, b = sessions
    req, out = a.ping(T0)
    (pong,) = a.receive(wire(b.receive(wire(out), T0)), T0)
    assert isinstance(pong, Pong) and (pong.rtt_ms, pong.request_id) == (0, req)


def test_an_error_reply_is_delivered_with_the_message_it_came_in(
    sessions: tuple[Session, Session],
) -> None:
    a, b = sessions
    req, out = b.request("agent_request", {}, T0)
    a.receive(wire(out), T0)
    reply, _ = b.receive(wire(a.reply_error("busy", "later", req, T0)), T0)
    assert isinstance(reply, Reply) and reply.message.data == {"code": "busy",
                                                                "message": "later"}


def test_the_last_256_expired_requests_are_remembered_and_older_ones_forgotten(
    sessions: tuple[Session, Session],
) -> None:
    a, b = sessions
    ids = [b.request("agent_request", {}, T0, timeout_ms=1)[0] for _ in range(257)]
    b.on_timer(T0 + 1)
    oldest, second = ids[0], ids[1]
    (forgotten,) = b.receive(wire(a.send("agent_result", {}, T0, re=oldest)[1]), T0 + 2)
    assert isinstance(forgotten, Message)  # no longer known as ours: a plain message
    (late,) = b.receive(wire(a.send("agent_result", {}, T0, re=second)[1]), T0 + 2)
    assert late == Dropped("late", "reply after its request timed out")
    assert b.stats.dropped == 1


def test_a_session_that_cannot_send_its_bye_still_closes(
    handshake: Any, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    _, b = pair(handshake, rng_factory, alice, bob, Limits(max_envelope_bytes=100))
    assert b.close("shutdown", T0) == [Closed("shutdown")]


def test_sending_on_a_closed_session_or_a_handshake_type_are_local_errors(
    sessions: tuple[Session, Session],
) -> None:
    a, _ = sessions
    with pytest.raises(LocalProtocolError) as info:
        a.send("auth", {}, T0)
    assert info.value.code == "bad_type"
    a.close("disconnect", T0)
    with pytest.raises(LocalProtocolError) as info:
        a.send("presence", {}, T0)
    assert info.value.code == "closed"


def test_every_late_reply_is_counted_as_dropped(sessions: tuple[Session, Session]) -> None:
    a, b = sessions
    ids = [b.request("agent_request", {}, T0, timeout_ms=1)[0] for _ in range(2)]
    b.on_timer(T0 + 1)
    for req in ids:
        b.receive(wire(a.send("agent_result", {}, T0, re=req)[1]), T0 + 2)
    assert b.stats.dropped == 2 and b.stats.failures == 0


def test_cancelling_a_request_that_is_not_pending_does_nothing(
    sessions: tuple[Session, Session],
) -> None:
    a, _ = sessions
    a.cancel_request("c" * 32)
    assert a.pending_requests == 0
