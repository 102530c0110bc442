"""The post-handshake session (SPEC 5): inbound checks in order, replies, close.

``A`` is alice's session (she dialled), ``B`` is bob's. Hostile frames are forged
with the handshake's real keys so that each one fails exactly the check under test.
"""

from __future__ import annotations

import dataclasses
from itertools import permutations
from typing import Any

import pytest

from hd_protocol import (
    HandshakeResult,
    Identity,
    Limits,
    LocalProtocolError,
    Session,
    decode_envelope,
    encode_envelope,
    keep_new_session,
    make_envelope,
    open_envelope,
    reconnect_delay_ms,
    seal_envelope,
    signing_bytes,
)
from hd_protocol.peer.session import (
    Closed,
    Dropped,
    Message,
    PeerError,
    Pong,
    Reply,
    Send,
    Timeout,
    should_redial,
)

T0 = 1_764_000_000_000


@dataclasses.dataclass
class Link:
    A: Session
    B: Session
    res_a: HandshakeResult
    res_b: HandshakeResult
    alice: Identity
    bob: Identity

    def forge(
        self, type: str = "peer_chat", data: dict[str, Any] | None = None, *, seq: int | None,
        signer: Identity | None = None, src: str | None = None, dst: Any = "bob",
        key: bytes | None = None, sealed: bool = True, re: str | None = None,
        msg_id: str = "ab" * 16, v: int = 1,
    ) -> str:
        """An envelope "from alice to bob", built by hand with the given faults."""
        signer = signer or self.alice
        env = make_envelope(
            type, msg_id=msg_id, re=re, src=src or signer.node_id,
            dst=self.bob.node_id if dst == "bob" else dst, ts=T0, seq=seq,
            data=None if sealed else (data or {"text": "plain"}),
        )
        if sealed:
            env = seal_envelope(env, key or self.res_a.key_tx, data or {"text": "hi"})
        env = dataclasses.replace(env, v=v)
        # Sign with the signer's key whatever src says (sign_envelope would refuse).
        return encode_envelope(dataclasses.replace(env, sig=signer.sign(signing_bytes(env))))


def wire_of(outputs: list[Any]) -> str:
    (send,) = [o for o in outputs if isinstance(o, Send)]
    return send.wire


def only(outputs: list[Any], kind: type) -> Any:
    assert len(outputs) == 1 and isinstance(outputs[0], kind), outputs
    return outputs[0]


def make_link(handshake: Any, rng_factory: Any, alice: Identity, bob: Identity,
              limits: Limits | None = None, **kw: Any) -> Link:
    res_a, res_b = handshake(alice, bob, now=T0, **kw)
    extra = {} if limits is None else {"limits": limits}
    return Link(
        Session(alice, res_a, rng=rng_factory("A"), now=T0, **extra),
        Session(bob, res_b, rng=rng_factory("B"), now=T0, **extra),
        res_a, res_b, alice, bob,
    )


@pytest.fixture
def link(handshake: Any, rng_factory: Any, alice: Identity, bob: Identity) -> Link:
    return make_link(handshake, rng_factory, alice, bob)


# --- the good path ----------------------------------------------------------------------


def test_sent_envelope_is_sealed_signed_addressed_and_accepted(link: Link) -> None:
    msg_id, out = link.A.send("peer_chat", {"text": "hello"}, T0 + 5)
    env = decode_envelope(wire_of(out))
    assert env.msg_id == msg_id and env.type == "peer_chat" and env.sealed
    assert env.src == link.alice.node_id and env.dst == link.bob.node_id and env.seq == 1
    assert env.data == {} and open_envelope(env, link.res_a.key_tx) == {"text": "hello"}
    got = link.B.receive(wire_of(out), T0 + 6)
    assert got == [Message("peer_chat", msg_id, None, {"text": "hello"}, T0 + 5)]
    assert link.B.rx_seq == 1 and link.B.stats.msgs_in == 1 and link.B.last_seen == T0 + 6


def test_outbound_seq_strictly_increases_from_1(link: Link) -> None:
    seqs = [decode_envelope(wire_of(link.A.send("presence", {}, T0)[1])).seq for _ in range(4)]
    assert seqs == [1, 2, 3, 4]


def test_gaps_in_seq_are_allowed(link: Link) -> None:
    assert only(link.B.receive(link.forge(seq=7), T0), Message)
    assert only(link.B.receive(link.forge(seq=100), T0), Message)
    assert link.B.rx_seq == 100


def test_forged_frame_without_faults_is_accepted(link: Link) -> None:
    """Control for the hostile frames below: the forge helper itself is faithful."""
    assert only(link.B.receive(link.forge(seq=1), T0), Message).data == {"text": "hi"}


# --- every inbound check, in SPEC 5 order -----------------------------------------------


def hostile_frames(link: Link, carol: Identity) -> dict[str, tuple[str, str]]:
    """name -> (frame, the code it must be dropped with). Several frames break two
    rules at once: the code shows which check ran first."""
    f = link.forge
    return {
        "not json": ("{nope", "bad_json"),
        "bad field": (f(seq=5)[:-1] + ',"x":1}', "bad_envelope"),
        "version 2": (f(seq=5, v=2), "version"),
        "src is not the peer": (f(seq=5, signer=carol), "src"),
        "src and dst wrong": (f(seq=5, signer=carol, dst=carol.node_id), "src"),
        "dst is another node": (f(seq=5, dst=carol.node_id), "dst"),
        "dst is null": (f(seq=5, dst=None), "dst"),
        "dst wrong and bad sig": (f(seq=5, dst=carol.node_id, signer=carol,
                                    src=link.alice.node_id), "dst"),
        "signed by another key": (f(seq=5, signer=carol, src=link.alice.node_id), "sig"),
        "bad sig and replayed seq": (f(seq=0, signer=carol, src=link.alice.node_id), "sig"),
        "seq 0 (used by auth)": (f(seq=0), "seq"),
        "seq null, unsealed": (f(seq=None, sealed=False), "seq"),
        "replayed seq and unsealed": (f(seq=0, sealed=False), "seq"),
        "not sealed": (f(seq=5, sealed=False), "not_sealed"),
        "box does not open": (f(seq=5, key=bytes(32)), "box"),
        "box for the other direction": (f(seq=5, key=link.res_a.key_rx), "box"),
    }


CASES = [
    "not json", "bad field", "version 2", "src is not the peer", "src and dst wrong",
    "dst is another node", "dst is null", "dst wrong and bad sig", "signed by another key",
    "bad sig and replayed seq", "seq 0 (used by auth)", "seq null, unsealed",
    "replayed seq and unsealed", "not sealed", "box does not open",
    "box for the other direction",
]


@pytest.mark.parametrize("case", CASES)
def test_failed_check_drops_the_envelope_with_its_code_and_nothing_else(
    link: Link, carol: Identity, case: str
) -> None:
    frame, code = hostile_frames(link, carol)[case]
    before = (link.B.rx_seq, link.B.stats.msgs_in, link.B.last_seen)
    out = link.B.receive(frame, T0 + 50)
    assert only(out, Dropped).code == code
    assert (link.B.rx_seq, link.B.stats.msgs_in, link.B.last_seen) == before
    assert link.B.stats.failures == 1 and link.B.stats.by_code == {code: 1}
    assert link.B.closed is None
    # Nothing was consumed: the genuine envelope with that seq is still accepted.
    assert only(link.B.receive(link.forge(seq=5), T0 + 51), Message)


def test_replayed_envelope_is_dropped(link: Link) -> None:
    _, out = link.A.send("peer_chat", {"text": "once"}, T0)
    assert only(link.B.receive(wire_of(out), T0), Message)
    assert only(link.B.receive(wire_of(out), T0), Dropped).code == "seq"


def test_reordered_envelope_is_dropped(link: Link) -> None:
    first = wire_of(link.A.send("peer_chat", {"n": 1}, T0)[1])
    second = wire_of(link.A.send("peer_chat", {"n": 2}, T0)[1])
    assert only(link.B.receive(second, T0), Message).data == {"n": 2}
    assert only(link.B.receive(first, T0), Dropped).code == "seq"


def test_readdressed_envelope_is_dropped(link: Link, carol: Identity) -> None:
    env = decode_envelope(wire_of(link.A.send("peer_chat", {"n": 1}, T0)[1]))
    moved = encode_envelope(dataclasses.replace(env, dst=carol.node_id))
    assert only(link.B.receive(moved, T0), Dropped).code == "dst"
    # A relay lowering ttl is fine: ttl is not signed.
    assert only(link.B.receive(encode_envelope(dataclasses.replace(env, ttl=0)), T0), Message)


def test_sixteen_failures_close_the_session_with_bye(link: Link) -> None:
    for i in range(15):
        assert only(link.B.receive("garbage", T0 + i), Dropped)
    assert link.B.closed is None
    out = link.B.receive("garbage", T0 + 15)
    assert isinstance(out[0], Dropped) and out[-1] == Closed("too_many_errors", remote=False)
    bye = decode_envelope(wire_of(out))
    assert bye.type == "bye"
    assert link.A.receive(wire_of(out), T0 + 16) == [Closed("too_many_errors", remote=True)]
    # A closed session acts on nothing and sends nothing.
    assert link.B.receive(link.forge(seq=50), T0 + 17) == []
    with pytest.raises(LocalProtocolError):
        link.B.send("peer_chat", {}, T0 + 17)


def test_failure_threshold_is_configurable(
    handshake: Any, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    link = make_link(handshake, rng_factory, alice, bob,
                     limits=Limits(session_failures_before_close=3))
    link.B.receive("x", T0)
    link.B.receive("x", T0)
    assert link.B.closed is None
    assert link.B.receive("x", T0)[-1] == Closed("too_many_errors")


def test_failures_accumulate_across_good_envelopes(link: Link) -> None:
    for i in range(15):
        link.B.receive("x", T0)
        assert only(link.B.receive(link.forge(seq=i + 1, msg_id=f"{i:032x}"), T0), Message)
    assert isinstance(link.B.receive("x", T0)[-1], Closed)


# --- levels and unknown types -----------------------------------------------------------


def test_unknown_type_gets_an_unknown_type_error_at_most_once_per_second(link: Link) -> None:
    mid, out = link.A.send("frobnicate", {"x": 1}, T0)
    reply = link.B.receive(wire_of(out), T0 + 100)
    err = decode_envelope(wire_of(reply))
    assert len(reply) == 1 and err.type == "error" and err.re == mid
    assert open_envelope(err, link.res_b.key_tx)["code"] == "unknown_type"
    err_out = only(link.A.receive(wire_of(reply), T0 + 101), PeerError)
    assert (err_out.code, err_out.re) == ("unknown_type", mid)
    # A second unknown within the second: dropped silently; after it, answered again.
    assert link.B.receive(wire_of(link.A.send("frobnicate", {}, T0)[1]), T0 + 1099) == []
    later = link.B.receive(wire_of(link.A.send("frobnicate", {}, T0)[1]), T0 + 1100)
    assert decode_envelope(wire_of(later)).type == "error"
    assert link.B.stats.failures == 0  # an unknown type is not a protocol failure


def test_guest_sending_agent_request_is_forbidden(
    handshake: Any, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    link = make_link(handshake, rng_factory, alice, bob, acceptor_level="guest")
    assert link.B.level == "guest"
    mid, out = link.A.request("agent_request", {"prompt": "rm -rf"}, T0)
    got = link.B.receive(wire_of(out), T0 + 1)
    assert not any(isinstance(o, Message) for o in got)
    assert isinstance(got[0], Dropped) and got[0].code == "forbidden"
    err = decode_envelope(wire_of(got))
    assert err.type == "error" and err.re == mid
    back = link.A.receive(wire_of(got), T0 + 2)
    assert isinstance(back[-1], PeerError)
    assert (back[-1].code, back[-1].re) == ("forbidden", mid)
    assert link.B.stats.by_code == {"forbidden": 1}


@pytest.mark.parametrize("type_", ["peer_chat", "presence", "collab_op", "peer_chat_ack"])
def test_guest_may_chat_collab_and_send_presence(
    handshake: Any, rng_factory: Any, alice: Identity, bob: Identity, type_: str
) -> None:
    link = make_link(handshake, rng_factory, alice, bob, acceptor_level="guest")
    out = link.B.receive(wire_of(link.A.send(type_, {"k": 1}, T0)[1]), T0)
    assert only(out, Message).type == type_


@pytest.mark.parametrize("type_", ["agent_request", "agent_cancel", "bench_echo"])
def test_trusted_peer_may_send_what_a_guest_may_not(link: Link, type_: str) -> None:
    assert link.B.level == "trusted"
    assert only(link.B.receive(wire_of(link.A.send(type_, {}, T0)[1]), T0), Message)


# --- request / reply --------------------------------------------------------------------


def test_reply_is_matched_to_its_request(link: Link) -> None:
    mid, out = link.A.request("agent_request", {"prompt": "hi"}, T0)
    assert link.A.pending_requests == 1
    req = only(link.B.receive(wire_of(out), T0 + 1), Message)
    _, rep = link.B.send("agent_result", {"text": "done"}, T0 + 2, re=req.msg_id)
    got = only(link.A.receive(wire_of(rep), T0 + 3), Reply)
    assert got.request_id == mid and got.message.data == {"text": "done"}
    assert got.message.re == mid and link.A.pending_requests == 0


def test_message_answering_no_request_is_delivered_as_a_plain_message(link: Link) -> None:
    _, out = link.B.send("agent_stream", {"d": 1}, T0, re="cd" * 16)
    assert only(link.A.receive(wire_of(out), T0), Message).re == "cd" * 16


def test_error_reply_completes_the_request_and_reports_the_error(link: Link) -> None:
    mid, out = link.A.request("agent_request", {}, T0)
    link.B.receive(wire_of(out), T0)
    err = link.B.reply_error("busy", "try later", mid, T0)
    got = link.A.receive(wire_of(err), T0)
    assert isinstance(got[0], Reply) and got[0].request_id == mid
    assert got[1] == PeerError("busy", "try later", mid)
    assert link.A.pending_requests == 0


def test_request_times_out_after_30_seconds_and_a_late_reply_is_dropped(link: Link) -> None:
    mid, out = link.A.request("agent_request", {}, T0)
    assert link.A.next_deadline() == T0 + 30_000
    assert link.A.on_timer(T0 + 29_999) == []
    assert link.A.on_timer(T0 + 30_000) == [Timeout(mid, "agent_request")]
    assert link.A.next_deadline() is None and link.A.on_timer(T0 + 60_000) == []
    link.B.receive(wire_of(out), T0)
    late = link.A.receive(wire_of(link.B.send("agent_result", {}, T0, re=mid)[1]), T0 + 30_001)
    assert only(late, Dropped).code == "late"
    assert link.A.stats.failures == 0  # a late reply is not the peer's fault


def test_request_timeout_is_per_request(link: Link) -> None:
    slow, _ = link.A.request("agent_request", {}, T0, timeout_ms=50_000)
    fast, _ = link.A.request("agent_request", {}, T0, timeout_ms=1_000)
    assert link.A.next_deadline() == T0 + 1_000
    assert link.A.on_timer(T0 + 1_000) == [Timeout(fast, "agent_request")]
    assert link.A.next_deadline() == T0 + 50_000
    assert link.A.on_timer(T0 + 50_000) == [Timeout(slow, "agent_request")]


def test_reply_to_a_cancelled_request_is_dropped(link: Link) -> None:
    mid, out = link.A.request("agent_request", {}, T0)
    link.A.cancel_request(mid)
    assert link.A.pending_requests == 0
    link.B.receive(wire_of(out), T0)
    late = link.A.receive(wire_of(link.B.send("agent_result", {}, T0, re=mid)[1]), T0)
    assert only(late, Dropped).code == "late"


# --- ping / pong ------------------------------------------------------------------------


def test_ping_is_answered_with_pong_and_the_rtt_is_measured(link: Link) -> None:
    mid, out = link.A.ping(T0 + 1_000)
    answer = link.B.receive(wire_of(out), T0 + 1_100)
    pong = decode_envelope(wire_of(answer))
    assert len(answer) == 1 and pong.type == "pong" and pong.re == mid
    assert link.A.receive(wire_of(answer), T0 + 1_250) == [Pong(mid, 250)]


def test_ping_times_out_after_5_seconds(link: Link) -> None:
    mid, _ = link.A.ping(T0)
    assert link.A.on_timer(T0 + 5_000) == [Timeout(mid, "ping")]


def test_three_unanswered_pings_in_a_row_close_the_session_with_bye(link: Link) -> None:
    for i in range(2):
        mid, _ = link.A.ping(T0 + i * 10_000)
        assert link.A.on_timer(T0 + i * 10_000 + 5_000) == [Timeout(mid, "ping")]
    assert link.A.closed is None
    mid, _ = link.A.ping(T0 + 20_000)
    out = link.A.on_timer(T0 + 25_000)
    assert out[0] == Timeout(mid, "ping")
    assert decode_envelope(wire_of(out)).type == "bye"
    assert out[-1] == Closed("timeout", remote=False) and link.A.closed is not None


def test_an_answered_ping_resets_the_count_of_missed_pings(link: Link) -> None:
    for i in range(2):
        link.A.ping(T0 + i * 10_000)
        link.A.on_timer(T0 + i * 10_000 + 5_000)
    mid, out = link.A.ping(T0 + 20_000)
    link.A.receive(wire_of(link.B.receive(wire_of(out), T0 + 20_001)), T0 + 20_002)
    for i in range(2):
        link.A.ping(T0 + 30_000 + i * 10_000)
        link.A.on_timer(T0 + 35_000 + i * 10_000)
    assert link.A.closed is None


def test_unsolicited_pong_is_dropped(link: Link) -> None:
    _, out = link.B.send("pong", {}, T0, re="ef" * 16)
    assert only(link.A.receive(wire_of(out), T0), Dropped).code == "late"


# --- bye / close ------------------------------------------------------------------------


def test_bye_closes_both_ends(link: Link) -> None:
    link.A.request("agent_request", {}, T0)
    out = link.A.close("user", T0)
    assert out[-1] == Closed("user", remote=False) and link.A.closed is not None
    bye = decode_envelope(wire_of(out))
    assert bye.type == "bye" and open_envelope(bye, link.res_a.key_tx) == {"reason": "user"}
    assert link.B.receive(wire_of(out), T0 + 1) == [Closed("user", remote=True)]
    assert link.A.next_deadline() is None and link.A.pending_requests == 0
    assert link.A.close("again", T0) == []
    assert link.B.receive(link.forge(seq=99), T0) == []
    with pytest.raises(LocalProtocolError):
        link.A.send("ping", {}, T0)


# --- outbound rules ---------------------------------------------------------------------


@pytest.mark.parametrize("type_", ["hello", "hello_ack", "auth", "auth_result"])
def test_session_refuses_to_send_handshake_types(link: Link, type_: str) -> None:
    with pytest.raises(LocalProtocolError):
        link.A.send(type_, {}, T0)


def test_session_refuses_to_send_an_envelope_over_the_limit(link: Link) -> None:
    with pytest.raises(LocalProtocolError) as info:
        link.A.send("peer_chat", {"text": "x" * (1024 * 1024)}, T0)
    assert info.value.code == "too_large"
    assert decode_envelope(wire_of(link.A.send("peer_chat", {}, T0)[1])).seq == 1


def test_dialer_id_is_the_node_that_dialled(link: Link) -> None:
    assert link.A.dialer_id == link.alice.node_id == link.B.dialer_id


# --- simultaneous dial (SPEC 4) ---------------------------------------------------------


def test_simultaneous_dial_keeps_the_same_session_on_both_nodes_in_any_order(
    alice: Identity, bob: Identity
) -> None:
    small, big = sorted([alice.node_id, bob.node_id])
    # Two sessions 400 ms apart: one dialled by each node. Either node may learn of
    # them in either order; all four views must keep the one small dialled.
    for (first, t1), (second, t2) in permutations([(small, 0), (big, 400)]):
        for self_id in (small, big):
            keep_new = keep_new_session(self_id, existing_dialer=first, existing_opened_at=t1,
                                        new_dialer=second, new_opened_at=t2)
            assert (second if keep_new else first) == small


def test_sessions_further_apart_than_the_handshake_timeout_keep_the_newest(
    alice: Identity, bob: Identity
) -> None:
    for old_dialer, new_dialer in permutations([alice.node_id, bob.node_id]):
        assert keep_new_session(alice.node_id, existing_dialer=old_dialer, existing_opened_at=0,
                                new_dialer=new_dialer, new_opened_at=10_001)
    # Exactly one timeout apart still counts as simultaneous.
    small, big = sorted([alice.node_id, bob.node_id])
    assert not keep_new_session(small, existing_dialer=small, existing_opened_at=0,
                                new_dialer=big, new_opened_at=10_000)
    assert not keep_new_session(small, existing_dialer=small, existing_opened_at=0,
                                new_dialer=big, new_opened_at=20_000,
                                handshake_timeout_ms=30_000)


def test_a_new_session_from_the_same_dialer_replaces_the_old_one(alice: Identity) -> None:
    assert keep_new_session(alice.node_id, existing_dialer=alice.node_id, existing_opened_at=0,
                            new_dialer=alice.node_id, new_opened_at=5)


# --- reconnect backoff (SPEC 5) ---------------------------------------------------------


def const_rng(byte: int) -> Any:
    return lambda n: bytes([byte]) * n


def test_reconnect_delay_starts_at_1_s_and_doubles_to_60_s() -> None:
    # With the largest jitter draw the delay sits just under the step.
    highs = [reconnect_delay_ms(k, const_rng(0xFF)) for k in range(9)]
    steps = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
    assert all(s - 1 <= h <= s for h, s in zip(highs, steps, strict=True))
    # With the smallest draw it is half the step: jitter never collapses to zero.
    lows = [reconnect_delay_ms(k, const_rng(0)) for k in range(9)]
    assert lows == [s // 2 for s in steps]


def test_reconnect_delay_is_jittered_within_its_step(rng_factory: Any) -> None:
    for attempt in (0, 3, 10, 1_000, 10**9):
        step = min(60_000, 1_000 * 2**min(attempt, 30))
        seen = {reconnect_delay_ms(attempt, rng_factory(f"j{attempt}/{i}")) for i in range(40)}
        assert all(step // 2 <= d <= step for d in seen)
        assert len(seen) > 10  # jitter: retries from many nodes do not bunch up


def test_reconnect_delay_treats_a_negative_attempt_as_the_first() -> None:
    assert reconnect_delay_ms(-3, const_rng(0)) == reconnect_delay_ms(0, const_rng(0)) == 500


@pytest.mark.parametrize("reason", ["timeout", "link closed", "too_many_errors", "shutdown",
                                    "write_timeout", "send_queue_full"])
def test_a_trusted_peer_is_redialled_after_a_close_nobody_chose(reason: str) -> None:
    assert should_redial(reason, trusted=True)


@pytest.mark.parametrize("reason", ["disconnect", "untrusted", "duplicate"])
def test_a_close_on_purpose_is_never_redialled(reason: str) -> None:
    assert not should_redial(reason, trusted=True)


def test_only_trusted_unblocked_reachable_peers_the_user_kept_are_redialled() -> None:
    assert not should_redial("timeout", trusted=False)
    assert not should_redial("timeout", trusted=True, blocked=True)
    assert not should_redial("timeout", trusted=True, has_address=False)
    assert not should_redial("timeout", trusted=True, user_disconnected=True)
