"""SPEC 6.3: agent to agent — the caller's calls and the callee's remote turns.

``Agents`` is one sans-IO machine per node: ``ask_peer`` / ``cancel_call`` and the
inbound ``agent_stream`` / ``agent_result`` are the caller; the inbound
``agent_request`` / ``agent_cancel`` and what the shell reports of a turn
(``turn_delta`` / ``turn_finished``) are the callee. Time is only ``now``; randomness
only the injected counter rng, so every id below is predictable.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest

from hd_protocol.apps.agent import (
    MAX_CALLS,
    MAX_CHAIN_ENTRIES,
    MAX_DELTA_CHARS,
    MAX_EARLY,
    MAX_ERROR_CHARS,
    MAX_PROMPT_CHARS,
    MAX_TEXT_CHARS,
    MAX_TURNS_PER_PEER,
    TIMEOUT_MS,
    Agents,
    CallDelta,
    CallDone,
    StartAgentTurn,
    StopAgentTurn,
    effective_mode,
    error_code,
)
from hd_protocol.effects import PeerErrorReply, SendToPeer
from hd_protocol.errors import LocalProtocolError
from hd_protocol.peer.session import Message

ME = "m" * 16
P = "p" * 16
Q = "q" * 16
R = "r" * 16
S = "s" * 16
T = "t" * 16
T0 = 1_000_000
IN_ID = "ee" * 16  # msg_id of the inbound request in callee tests
RID = "req-1"


def counter_rng() -> Any:
    """Deterministic rng: each draw is the next integer, big-endian, n bytes wide."""
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


_inbound_ids = itertools.count(1)


def fresh_id() -> str:
    return f"f{next(_inbound_ids):031x}"


def caller(**kw: Any) -> Agents:
    return Agents(ME, rng=counter_rng(), **kw)


def callee(**kw: Any) -> Agents:
    kw.setdefault("allow_remote", True)
    return Agents(ME, rng=counter_rng(), **kw)


def ask(a: Agents, call_id: str = "c1", peer: str = P, prompt: str = "hello",
        chain: tuple[str, ...] = (), now: int = T0, **kw: Any) -> tuple[str, str]:
    """Start a call; the request's (request_id, msg_id)."""
    [send] = a.ask_peer(call_id, peer, prompt, chain, now, **kw)
    assert isinstance(send, SendToPeer) and send.msg_id is not None
    return send.data["request_id"], send.msg_id


def stream(rid: str, seq: Any, delta: Any) -> Message:
    return Message("agent_stream", fresh_id(), None,
                   {"request_id": rid, "seq": seq, "delta": delta}, 0)


def result(rid: str, re: str | None, ok: Any = True, text: Any = "answer",
           error: Any = "") -> Message:
    return Message("agent_result", fresh_id(), re,
                   {"request_id": rid, "ok": ok, "text": text, "error": error}, 0)


def request(rid: str = RID, prompt: Any = "do it", chain: Any = (P,),
            msg_id: str = IN_ID) -> Message:
    data = {"request_id": rid, "prompt": prompt,
            "origin_chain": list(chain) if isinstance(chain, tuple) else chain}
    return Message("agent_request", msg_id, None, data, 0)


def cancel(rid: str = RID) -> Message:
    return Message("agent_cancel", fresh_id(), None, {"request_id": rid}, 0)


def of_type(effects: list[Any], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def sends(effects: list[Any]) -> list[SendToPeer]:
    assert all(isinstance(e, SendToPeer) for e in effects), effects
    return effects


def deltas(effects: list[Any]) -> list[str]:
    assert all(isinstance(e, CallDelta) for e in effects), effects
    return [e.delta for e in effects]


def assert_refused(out: list[Any], code: str, rid: str = RID, re: str = IN_ID,
                   peer: str = P) -> None:
    """SPEC 6.3: a refusal is one agent_result {ok:false, text:"", error} answering the
    request (``re`` = its msg_id), its error starting with the code."""
    [send] = out
    assert isinstance(send, SendToPeer)
    assert (send.peer_id, send.type, send.re) == (peer, "agent_result", re)
    assert set(send.data) == {"request_id", "ok", "text", "error"}
    assert send.data["request_id"] == rid
    assert send.data["ok"] is False and send.data["text"] == ""
    error = send.data["error"]
    assert error == code or error.startswith(code + ": "), error
    assert error_code(error) == code


def start_turns(a: Agents, peer: str, n: int, now: int = T0) -> list[str]:
    rids = []
    for i in range(n):
        rid = f"{peer[0]}-turn-{i}"
        [start] = a.receive(peer, "trusted", request(rid, chain=(peer,), msg_id=fresh_id()),
                            now)
        assert isinstance(start, StartAgentTurn)
        rids.append(rid)
    return rids


# --- helpers of the module ------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "effective"), [
    ("plan", "plan"), ("acceptEdits", "acceptEdits"), ("autonomous", "autonomous"),
    ("yolo", "plan"), ("", "plan"), ("Plan", "plan"), (None, "plan"), (1, "plan"),
])
def test_effective_mode_keeps_a_known_mode_and_reads_anything_else_as_plan(
        mode: object, effective: str) -> None:
    assert effective_mode(mode) == effective


@pytest.mark.parametrize(("error", "code"), [
    ("busy: at most 2", "busy"), ("loop", "loop"), ("timeout: late", "timeout"),
    ("forbidden", "forbidden"), ("nonsense: x", "backend"), ("", "backend"),
    ("peer_gone :x", "peer_gone"),
])
def test_error_code_is_the_known_code_before_the_colon_else_backend(error: str,
                                                                   code: str) -> None:
    assert error_code(error) == code


# --- caller: asking -------------------------------------------------------------------------


def test_ask_peer_sends_agent_request_with_exactly_request_id_prompt_and_chain_plus_self() -> None:
    a = caller()
    out = a.ask_peer("c1", P, "what is up?", [R, S], T0)
    # counter rng: request_id is draw 1 (12 bytes), msg_id draw 2 (16 bytes)
    assert out == [SendToPeer(P, "agent_request", {
        "request_id": f"{1:024x}", "prompt": "what is up?", "origin_chain": [R, S, ME]},
        re=None, msg_id=f"{2:032x}")]
    assert set(sends(out)[0].data) == {"request_id", "prompt", "origin_chain"}


def test_ask_peer_from_a_persons_question_sends_a_chain_of_just_this_node() -> None:
    a = caller()
    [send] = sends(a.ask_peer("c1", P, "q", (), T0))
    assert send.data["origin_chain"] == [ME]


def test_ask_peer_draws_fresh_request_and_msg_ids_for_every_call() -> None:
    a = caller()
    rid1, mid1 = ask(a, "c1")
    rid2, mid2 = ask(a, "c2")
    assert len({rid1, rid2}) == 2 and len({mid1, mid2}) == 2
    assert a.calls() == 2


def test_ask_peer_sets_the_call_deadline_from_the_default_constructor_or_call_timeout() -> None:
    assert caller().next_deadline() is None
    a = caller()
    ask(a, now=T0)
    assert a.next_deadline() == T0 + TIMEOUT_MS
    b = caller(timeout_ms=5_000)
    ask(b, now=T0)
    assert b.next_deadline() == T0 + 5_000
    ask(b, "c2", now=T0, timeout_ms=700)
    assert b.next_deadline() == T0 + 700


@pytest.mark.parametrize("peer", [ME, "nobody", "P" * 16, "p" * 15, "p" * 17, "", "1" * 16])
def test_ask_peer_refuses_a_bad_peer_id_or_this_node_as_bad_request(peer: str) -> None:
    a = caller()
    with pytest.raises(LocalProtocolError) as exc:
        a.ask_peer("c1", peer, "hello", (), T0)
    assert exc.value.code == "bad_request"
    assert a.calls() == 0


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t", None, 5, ["hi"],
                                    "x" * (MAX_PROMPT_CHARS + 1)])
def test_ask_peer_refuses_an_empty_blank_non_text_or_too_long_prompt(prompt: object) -> None:
    a = caller()
    with pytest.raises(LocalProtocolError) as exc:
        a.ask_peer("c1", P, prompt, (), T0)
    assert exc.value.code == "bad_request"
    assert a.calls() == 0


def test_ask_peer_accepts_a_prompt_of_exactly_max_prompt_chars() -> None:
    a = caller()
    [send] = sends(a.ask_peer("c1", P, "x" * MAX_PROMPT_CHARS, (), T0))
    assert len(send.data["prompt"]) == MAX_PROMPT_CHARS


def test_ask_peer_refuses_a_call_id_already_running_and_takes_it_again_once_ended() -> None:
    a = caller()
    ask(a, "c1")
    with pytest.raises(LocalProtocolError) as exc:
        a.ask_peer("c1", Q, "again", (), T0)
    assert exc.value.code == "bad_request"
    assert a.calls() == 1
    a.cancel_call("c1")
    ask(a, "c1")
    assert a.calls() == 1


def test_ask_peer_refuses_more_than_max_calls_as_busy_and_an_ended_call_frees_a_slot() -> None:
    a = caller()
    for i in range(MAX_CALLS):
        ask(a, f"c{i}")
    assert a.calls() == MAX_CALLS
    with pytest.raises(LocalProtocolError) as exc:
        a.ask_peer("one-more", P, "hello", (), T0)
    assert exc.value.code == "busy"
    a.cancel_call("c0")
    ask(a, "one-more")
    assert a.calls() == MAX_CALLS


# --- caller: the stream ---------------------------------------------------------------------


def test_deltas_in_seq_order_are_passed_on_at_once() -> None:
    a = caller()
    rid, _ = ask(a)
    for seq, text in enumerate(["a", "b", "c"]):
        assert a.receive(P, "trusted", stream(rid, seq, text), T0) == [CallDelta("c1", text)]
    assert a.dropped == 0


def test_an_out_of_order_delta_is_held_until_the_gap_fills_then_all_released_in_order() -> None:
    a = caller()
    rid, _ = ask(a)
    assert a.receive(P, "trusted", stream(rid, 2, "c"), T0) == []
    assert a.receive(P, "trusted", stream(rid, 3, "d"), T0) == []
    assert a.receive(P, "trusted", stream(rid, 1, "b"), T0) == []
    out = a.receive(P, "trusted", stream(rid, 0, "a"), T0)
    assert out == [CallDelta("c1", "a"), CallDelta("c1", "b"), CallDelta("c1", "c"),
                   CallDelta("c1", "d")]
    assert a.receive(P, "trusted", stream(rid, 4, "e"), T0) == [CallDelta("c1", "e")]
    assert a.dropped == 0


def test_a_delta_below_the_next_seq_is_dropped_and_counted() -> None:
    a = caller()
    rid, _ = ask(a)
    a.receive(P, "trusted", stream(rid, 0, "a"), T0)
    a.receive(P, "trusted", stream(rid, 1, "b"), T0)
    assert a.receive(P, "trusted", stream(rid, 1, "b"), T0) == []
    assert a.receive(P, "trusted", stream(rid, 0, "x"), T0) == []
    assert a.dropped == 2
    assert deltas(a.receive(P, "trusted", stream(rid, 2, "c"), T0)) == ["c"]


def test_a_second_copy_of_a_held_delta_is_dropped_and_the_first_copy_kept() -> None:
    a = caller()
    rid, _ = ask(a)
    a.receive(P, "trusted", stream(rid, 1, "first"), T0)
    assert a.receive(P, "trusted", stream(rid, 1, "second"), T0) == []
    assert a.dropped == 1
    assert deltas(a.receive(P, "trusted", stream(rid, 0, "zero"), T0)) == ["zero", "first"]


def test_a_delta_from_a_peer_that_was_not_asked_is_dropped() -> None:
    a = caller()
    rid, _ = ask(a, peer=P)
    assert a.receive(Q, "trusted", stream(rid, 0, "evil"), T0) == []
    assert a.receive(Q, "trusted", stream(rid, 1, "evil"), T0) == []
    assert a.dropped == 2
    # nothing of Q's was held or counted as delivered: P's stream starts at 0, alone
    assert deltas(a.receive(P, "trusted", stream(rid, 0, "a"), T0)) == ["a"]
    assert deltas(a.receive(P, "trusted", stream(rid, 1, "b"), T0)) == ["b"]


def test_a_delta_for_a_request_we_never_made_is_dropped() -> None:
    a = caller()
    ask(a)
    assert a.receive(P, "trusted", stream("unknown", 0, "a"), T0) == []
    assert a.dropped == 1


def test_at_most_max_early_deltas_are_held_and_any_more_are_dropped() -> None:
    a = caller()
    rid, _ = ask(a)
    for seq in range(1, MAX_EARLY + 1):
        assert a.receive(P, "trusted", stream(rid, seq, f"d{seq}"), T0) == []
    assert a.dropped == 0
    assert a.receive(P, "trusted", stream(rid, MAX_EARLY + 1, "over"), T0) == []
    assert a.dropped == 1
    out = deltas(a.receive(P, "trusted", stream(rid, 0, "d0"), T0))
    assert out == [f"d{i}" for i in range(MAX_EARLY + 1)]  # the dropped one is not among them


def test_a_delta_of_exactly_max_delta_chars_is_accepted() -> None:
    a = caller()
    rid, _ = ask(a)
    assert deltas(a.receive(P, "trusted", stream(rid, 0, "x" * MAX_DELTA_CHARS), T0)) == [
        "x" * MAX_DELTA_CHARS]


@pytest.mark.parametrize("data", [
    {"request_id": "r", "seq": 0},
    {"request_id": "r", "seq": 0, "delta": "a", "extra": 1},
    {"request_id": "r", "seq": -1, "delta": "a"},
    {"request_id": "r", "seq": "0", "delta": "a"},
    {"request_id": "r", "seq": True, "delta": "a"},
    {"request_id": "r", "seq": 0.0, "delta": "a"},
    {"request_id": "r", "seq": 0, "delta": 5},
    {"request_id": "r", "seq": 0, "delta": "x" * (MAX_DELTA_CHARS + 1)},
    {"request_id": "bad id", "seq": 0, "delta": "a"},
    {"request_id": 7, "seq": 0, "delta": "a"},
])
def test_a_malformed_agent_stream_is_answered_bad_request(data: dict[str, Any]) -> None:
    a = caller()
    rid, _ = ask(a)
    data = {k: (rid if v == "r" else v) for k, v in data.items()}
    msg = Message("agent_stream", IN_ID, None, data, 0)
    [err] = a.receive(P, "trusted", msg, T0)
    assert isinstance(err, PeerErrorReply)
    assert (err.peer_id, err.re, err.code) == (P, IN_ID, "bad_request")
    assert a.calls() == 1


# --- caller: the result ---------------------------------------------------------------------


def test_a_result_from_the_asked_peer_naming_the_request_ends_the_call_with_its_text() -> None:
    a = caller()
    rid, mid = ask(a)
    out = a.receive(P, "trusted", result(rid, mid, text="42"), T0)
    assert out == [CallDone("c1", True, "42", "")]
    assert a.calls() == 0 and a.next_deadline() is None


@pytest.mark.parametrize("re", [None, "00" * 16, "wrong"])
def test_a_result_whose_re_is_not_the_request_msg_id_is_dropped(re: str | None) -> None:
    a = caller()
    rid, mid = ask(a)
    assert a.receive(P, "trusted", result(rid, re), T0) == []
    assert a.dropped == 1 and a.calls() == 1
    assert a.receive(P, "trusted", result(rid, mid), T0) == [CallDone("c1", True, "answer", "")]


def test_a_result_from_a_peer_that_was_not_asked_is_dropped() -> None:
    a = caller()
    rid, mid = ask(a, peer=P)
    assert a.receive(Q, "trusted", result(rid, mid), T0) == []
    assert a.dropped == 1 and a.calls() == 1


def test_a_second_result_is_dropped() -> None:
    a = caller()
    rid, mid = ask(a)
    a.receive(P, "trusted", result(rid, mid), T0)
    assert a.receive(P, "trusted", result(rid, mid, text="again"), T0) == []
    assert a.dropped == 1


def test_a_result_after_the_timeout_is_dropped() -> None:
    a = caller()
    rid, mid = ask(a)
    done = of_type(a.on_timer(T0 + TIMEOUT_MS), CallDone)
    assert [d.call_id for d in done] == ["c1"]
    assert a.receive(P, "trusted", result(rid, mid), T0 + TIMEOUT_MS) == []
    assert a.dropped == 1


def test_a_delta_after_the_result_is_dropped() -> None:
    a = caller()
    rid, mid = ask(a)
    a.receive(P, "trusted", result(rid, mid), T0)
    assert a.receive(P, "trusted", stream(rid, 0, "late"), T0) == []
    assert a.dropped == 1


def test_a_failed_result_without_an_error_gets_a_default_backend_error() -> None:
    a = caller()
    rid, mid = ask(a)
    [done] = a.receive(P, "trusted", result(rid, mid, ok=False, text="", error=""), T0)
    assert isinstance(done, CallDone) and not done.ok and done.text == ""
    assert done.error and error_code(done.error) == "backend"


def test_a_failed_result_keeps_the_peers_error_and_drops_any_text() -> None:
    a = caller()
    rid, mid = ask(a)
    out = a.receive(P, "trusted", result(rid, mid, ok=False, text="junk", error="busy: full"),
                    T0)
    assert out == [CallDone("c1", False, "", "busy: full")]


def test_a_successful_result_carries_no_error_even_if_the_peer_sent_one() -> None:
    a = caller()
    rid, mid = ask(a)
    out = a.receive(P, "trusted", result(rid, mid, ok=True, text="t", error="oops"), T0)
    assert out == [CallDone("c1", True, "t", "")]


def test_a_result_of_exactly_max_text_chars_is_accepted() -> None:
    a = caller()
    rid, mid = ask(a)
    [done] = a.receive(P, "trusted", result(rid, mid, text="x" * MAX_TEXT_CHARS), T0)
    assert isinstance(done, CallDone)
    assert done.ok and len(done.text) == MAX_TEXT_CHARS


@pytest.mark.parametrize("change", [
    {"ok": 1}, {"ok": None}, {"text": None}, {"text": "x" * (MAX_TEXT_CHARS + 1)},
    {"error": None}, {"ok": False, "error": "x" * (MAX_ERROR_CHARS + 1)},
    {"extra": 1}, {"request_id": "no spaces"}, {"request_id": "x" * 65},
])
def test_a_malformed_agent_result_is_answered_bad_request_and_the_call_keeps_running(
        change: dict[str, Any]) -> None:
    a = caller()
    rid, mid = ask(a)
    data = {"request_id": rid, "ok": True, "text": "t", "error": ""} | change
    [err] = a.receive(P, "trusted", Message("agent_result", IN_ID, mid, data, 0), T0)
    assert isinstance(err, PeerErrorReply)
    assert (err.peer_id, err.re, err.code) == (P, IN_ID, "bad_request")
    assert a.calls() == 1


def test_a_result_missing_a_field_is_answered_bad_request() -> None:
    a = caller()
    rid, mid = ask(a)
    msg = Message("agent_result", IN_ID, mid, {"request_id": rid, "ok": True, "text": "t"}, 0)
    [err] = a.receive(P, "trusted", msg, T0)
    assert isinstance(err, PeerErrorReply) and err.code == "bad_request"


# --- caller: cancel, timeout, errors, sessions ----------------------------------------------


def test_cancel_call_sends_agent_cancel_and_ends_the_call_cancelled() -> None:
    a = caller()
    rid, _ = ask(a)
    out = a.cancel_call("c1")
    assert out == [SendToPeer(P, "agent_cancel", {"request_id": rid}),
                   CallDone("c1", False, "", "cancelled")]
    assert a.calls() == 0


def test_cancel_call_of_an_unknown_or_ended_call_does_nothing() -> None:
    a = caller()
    assert a.cancel_call("nope") == []
    ask(a)
    a.cancel_call("c1")
    assert a.cancel_call("c1") == []


@pytest.mark.parametrize("ending", ["cancel", "timeout", "session_closed", "peer_error",
                                    "result"])
def test_a_call_gets_exactly_one_call_done_whatever_comes_after_its_end(ending: str) -> None:
    a = caller()
    rid, mid = ask(a)
    first = {
        "cancel": lambda: a.cancel_call("c1"),
        "timeout": lambda: a.on_timer(T0 + TIMEOUT_MS),
        "session_closed": lambda: a.session_closed(P),
        "peer_error": lambda: a.peer_error(P, mid, "forbidden"),
        "result": lambda: a.receive(P, "trusted", result(rid, mid), T0),
    }[ending]()
    assert len(of_type(first, CallDone)) == 1
    later = (a.receive(P, "trusted", result(rid, mid), T0 + 1)
             + a.receive(P, "trusted", result(rid, mid, ok=False, error="x"), T0 + 2)
             + a.cancel_call("c1") + a.on_timer(T0 + 10 * TIMEOUT_MS)
             + a.session_closed(P) + a.peer_error(P, mid, "forbidden"))
    assert later == []
    assert a.calls() == 0


def test_a_call_times_out_at_its_deadline_and_not_one_ms_before() -> None:
    a = caller()
    rid, _ = ask(a, now=T0)
    assert a.on_timer(T0 + TIMEOUT_MS - 1) == []
    assert a.calls() == 1
    out = a.on_timer(T0 + TIMEOUT_MS)
    assert out[0] == SendToPeer(P, "agent_cancel", {"request_id": rid})
    [done] = out[1:]
    assert isinstance(done, CallDone) and done.call_id == "c1" and not done.ok
    assert done.text == "" and error_code(done.error) == "timeout"
    assert a.calls() == 0


def test_on_timer_ends_only_the_calls_whose_deadline_has_come() -> None:
    a = caller()
    ask(a, "early", now=T0, timeout_ms=100)
    ask(a, "late", now=T0, timeout_ms=200)
    out = a.on_timer(T0 + 150)
    assert [d.call_id for d in of_type(out, CallDone)] == ["early"]
    assert a.calls() == 1 and a.next_deadline() == T0 + 200


def test_next_deadline_is_the_earliest_of_call_and_turn_deadlines() -> None:
    a = Agents(ME, rng=counter_rng(), allow_remote=True, timeout_ms=1_000)
    assert a.next_deadline() is None
    ask(a, "c1", now=T0 + 500)  # 1 500 past T0
    assert a.next_deadline() == T0 + 1_500
    a.receive(P, "trusted", request(), T0 + 100)  # a turn due at T0 + 1 100
    assert a.next_deadline() == T0 + 1_100
    ask(a, "c2", now=T0, timeout_ms=50)
    assert a.next_deadline() == T0 + 50
    a.cancel_call("c2")
    a.turn_finished(P, RID, True, "done")
    assert a.next_deadline() == T0 + 1_500


def test_peer_error_naming_the_request_ends_the_call_and_forbidden_stays_forbidden() -> None:
    a = caller()
    _, mid = ask(a)
    out = a.peer_error(P, mid, "forbidden")
    assert out == [CallDone("c1", False, "", "forbidden")]  # no agent_cancel: it never ran
    assert a.calls() == 0


def test_peer_error_with_another_code_ends_the_call_as_backend_naming_that_code() -> None:
    a = caller()
    _, mid = ask(a)
    [done] = a.peer_error(P, mid, "unknown_type")
    assert isinstance(done, CallDone) and not done.ok
    assert error_code(done.error) == "backend" and "unknown_type" in done.error


def test_peer_error_about_another_envelope_or_from_another_peer_is_ignored() -> None:
    a = caller()
    _, mid = ask(a, peer=P)
    assert a.peer_error(P, "00" * 16, "forbidden") == []
    assert a.peer_error(P, None, "forbidden") == []
    assert a.peer_error(Q, mid, "forbidden") == []
    assert a.calls() == 1


def test_session_closed_fails_that_peers_calls_with_peer_gone_and_sends_no_cancel() -> None:
    a = caller()
    ask(a, "c1", peer=P)
    ask(a, "c2", peer=P)
    out = a.session_closed(P)
    assert of_type(out, SendToPeer) == []
    done = of_type(out, CallDone)
    assert sorted(d.call_id for d in done) == ["c1", "c2"]
    assert all(not d.ok and error_code(d.error) == "peer_gone" for d in done)
    assert a.calls() == 0


def test_session_closed_leaves_other_peers_calls_and_turns_alone() -> None:
    a = callee()
    rid_q, mid_q = ask(a, "cq", peer=Q)
    a.receive(Q, "trusted", request("turn-q", chain=(Q,)), T0)
    ask(a, "cp", peer=P)
    out = a.session_closed(P)
    assert [d.call_id for d in of_type(out, CallDone)] == ["cp"]
    assert of_type(out, StopAgentTurn) == []
    assert a.calls() == 1 and a.turns(Q) == 1
    assert a.receive(Q, "trusted", result(rid_q, mid_q), T0) == [
        CallDone("cq", True, "answer", "")]


# --- callee: admission ----------------------------------------------------------------------


def test_an_admitted_request_starts_a_turn_with_its_prompt_chain_and_the_mode() -> None:
    a = callee(mode="acceptEdits")
    out = a.receive(P, "trusted", request(prompt="fix it", chain=(R, P)), T0)
    assert out == [StartAgentTurn(RID, P, "fix it", (R, P), "acceptEdits")]
    assert a.turns() == 1 and a.turns(P) == 1 and a.turns(Q) == 0


@pytest.mark.parametrize("mode", ["yolo", None, 3, "PLAN"])
def test_a_turn_runs_in_plan_mode_when_the_configured_mode_is_unknown(mode: object) -> None:
    a = callee(mode=mode)
    [start] = a.receive(P, "trusted", request(), T0)
    assert isinstance(start, StartAgentTurn) and start.mode == "plan"


def test_a_turn_runs_in_plan_mode_by_default() -> None:
    [start] = callee().receive(P, "trusted", request(), T0)
    assert isinstance(start, StartAgentTurn) and start.mode == "plan"


@pytest.mark.parametrize(("allow", "level", "chain", "full", "code"), [
    # one rule broken at a time
    (False, "trusted", (P,), False, "not_allowed"),
    (True, "guest", (P,), False, "forbidden"),
    (True, "trusted", (ME, P), False, "loop"),
    (True, "trusted", (R, S, T, P), False, "too_many_hops"),
    (True, "trusted", (P,), True, "busy"),
    # SPEC 6.3 order: the first broken rule is the answer
    (False, "guest", (P,), False, "not_allowed"),
    (False, "guest", (ME, R, S, P), True, "not_allowed"),
    (True, "guest", (ME, P), False, "forbidden"),
    (True, "guest", (ME, R, S, P), True, "forbidden"),
    (True, "trusted", (ME, R, S, P), True, "loop"),
    (True, "trusted", (ME, P), True, "loop"),
    (True, "trusted", (R, S, T, P), True, "too_many_hops"),
])
def test_admission_answers_the_first_broken_rule_in_spec_order(
        allow: bool, level: str, chain: tuple[str, ...], full: bool, code: str) -> None:
    a = callee()
    if full:
        start_turns(a, P, MAX_TURNS_PER_PEER)
    a.allow_remote = allow
    before = a.turns()
    out = a.receive(P, level, request(chain=chain), T0)
    assert_refused(out, code)
    assert a.turns() == before


def test_a_chain_of_three_is_admitted_and_a_chain_of_four_is_too_many_hops() -> None:
    a = callee()
    [start] = a.receive(P, "trusted", request("three", chain=(R, S, P)), T0)
    assert isinstance(start, StartAgentTurn) and start.origin_chain == (R, S, P)
    out = a.receive(P, "trusted", request("four", chain=(R, S, T, P), msg_id="4" * 32), T0)
    assert_refused(out, "too_many_hops", rid="four", re="4" * 32)


def test_a_long_chain_is_too_many_hops_and_only_an_absurd_one_is_malformed() -> None:
    a = callee()
    ids = ["n" + chr(97 + i // 26) + chr(97 + i % 26) + "c" * 13 for i in range(MAX_CHAIN_ENTRIES)]
    longest = (*ids[:MAX_CHAIN_ENTRIES - 1], P)  # neither ME nor P twice
    assert len(set(longest)) == MAX_CHAIN_ENTRIES and ME not in longest
    assert_refused(a.receive(P, "trusted", request(chain=longest), T0), "too_many_hops")
    [err] = a.receive(P, "trusted", request(chain=(ids[-1], *longest)), T0)
    assert isinstance(err, PeerErrorReply) and err.code == "bad_request"


def test_a_third_concurrent_turn_of_one_peer_is_busy_while_another_peer_still_gets_in() -> None:
    a = callee()
    start_turns(a, P, 2)
    assert_refused(a.receive(P, "trusted", request("third", msg_id="3" * 32), T0), "busy",
                   rid="third", re="3" * 32)
    [start] = a.receive(Q, "trusted", request("other", chain=(Q,)), T0)
    assert isinstance(start, StartAgentTurn) and start.peer_id == Q
    assert a.turns(P) == 2 and a.turns(Q) == 1 and a.turns() == 3


@pytest.mark.parametrize("end", ["finished", "cancelled", "timeout"])
def test_a_turn_that_ends_frees_its_peers_slot(end: str) -> None:
    a = callee(timeout_ms=1_000)
    [first] = start_turns(a, P, 1, now=T0)
    a.receive(P, "trusted", request("second", msg_id="2" * 32), T0 + 500)
    assert_refused(a.receive(P, "trusted", request("third", msg_id="3" * 32), T0 + 600),
                   "busy", rid="third", re="3" * 32)
    if end == "finished":
        a.turn_finished(P, first, True, "ok")
    elif end == "cancelled":
        a.receive(P, "trusted", cancel(first), T0 + 700)
    else:
        a.on_timer(T0 + 1_000)  # only the first turn is due
    assert a.turns(P) == 1
    [start] = a.receive(P, "trusted", request("third", msg_id="4" * 32), T0 + 1_000)
    assert isinstance(start, StartAgentTurn)


def test_the_same_request_twice_while_it_runs_is_dropped() -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    assert a.receive(P, "trusted", request(msg_id="77" * 16), T0) == []
    assert a.dropped == 1 and a.turns() == 1


def test_the_same_request_id_from_two_peers_is_two_turns() -> None:
    a = callee()
    [sp] = a.receive(P, "trusted", request(chain=(P,)), T0)
    [sq] = a.receive(Q, "trusted", request(chain=(Q,)), T0)
    assert isinstance(sp, StartAgentTurn) and isinstance(sq, StartAgentTurn)
    assert a.turns() == 2 and a.dropped == 0


def test_a_request_id_of_64_allowed_characters_is_accepted() -> None:
    rid = "aZ09_-" * 10 + "abcd"
    [start] = callee().receive(P, "trusted", request(rid), T0)
    assert isinstance(start, StartAgentTurn) and start.request_id == rid


def test_a_prompt_of_exactly_max_prompt_chars_is_accepted_by_the_callee() -> None:
    [start] = callee().receive(P, "trusted", request(prompt="y" * MAX_PROMPT_CHARS), T0)
    assert isinstance(start, StartAgentTurn)


@pytest.mark.parametrize("data", [
    {"request_id": RID, "prompt": "p", "origin_chain": [P], "extra": 1},
    {"prompt": "p", "origin_chain": [P]},
    {"request_id": RID, "origin_chain": [P]},
    {"request_id": RID, "prompt": "p"},
    {},
    {"request_id": "", "prompt": "p", "origin_chain": [P]},
    {"request_id": "x" * 65, "prompt": "p", "origin_chain": [P]},
    {"request_id": "a/b", "prompt": "p", "origin_chain": [P]},
    {"request_id": "ab\n", "prompt": "p", "origin_chain": [P]},
    {"request_id": 5, "prompt": "p", "origin_chain": [P]},
    {"request_id": RID, "prompt": "p", "origin_chain": P},
    {"request_id": RID, "prompt": "p", "origin_chain": {P: 1}},
    {"request_id": RID, "prompt": "p", "origin_chain": None},
    {"request_id": RID, "prompt": "p", "origin_chain": []},
    {"request_id": RID, "prompt": "p", "origin_chain": ["nobody", P]},
    {"request_id": RID, "prompt": "p", "origin_chain": [5, P]},
    {"request_id": RID, "prompt": "p", "origin_chain": [P + "\n"]},
    {"request_id": RID, "prompt": "p", "origin_chain": [P, R]},
    {"request_id": RID, "prompt": "p", "origin_chain": [Q]},
    {"request_id": RID, "prompt": "", "origin_chain": [P]},
    {"request_id": RID, "prompt": " \n ", "origin_chain": [P]},
    {"request_id": RID, "prompt": 5, "origin_chain": [P]},
    {"request_id": RID, "prompt": "p" * (MAX_PROMPT_CHARS + 1), "origin_chain": [P]},
])
def test_a_malformed_request_is_answered_bad_request_about_that_envelope(
        data: dict[str, Any]) -> None:
    a = callee()
    [err] = a.receive(P, "trusted", Message("agent_request", IN_ID, None, data, 0), T0)
    assert isinstance(err, PeerErrorReply)
    assert (err.peer_id, err.re, err.code) == (P, IN_ID, "bad_request")
    assert a.turns() == 0


def test_a_message_of_another_type_is_not_this_machines_business() -> None:
    a = callee()
    assert a.receive(P, "trusted", Message("peer_chat", IN_ID, None, {"text": "x"}, 0), T0) == []
    assert a.dropped == 0


# --- callee: the turn reports -----------------------------------------------------------------


def test_turn_delta_numbers_the_stream_from_zero_without_re() -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    out = [e for d in ("a", "b", "c") for e in a.turn_delta(P, RID, d)]
    assert out == [SendToPeer(P, "agent_stream", {"request_id": RID, "seq": i, "delta": d})
                   for i, d in enumerate("abc")]


def test_turn_delta_splits_a_delta_longer_than_max_delta_chars_and_keeps_counting() -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    a.turn_delta(P, RID, "first")
    text = "x" * MAX_DELTA_CHARS + "y" * MAX_DELTA_CHARS + "zzz"
    out = sends(a.turn_delta(P, RID, text))
    assert [e.data["seq"] for e in out] == [1, 2, 3]
    assert [len(e.data["delta"]) for e in out] == [MAX_DELTA_CHARS, MAX_DELTA_CHARS, 3]
    assert "".join(e.data["delta"] for e in out) == text
    assert sends(a.turn_delta(P, RID, "next"))[0].data["seq"] == 4


def test_turn_delta_of_exactly_max_delta_chars_is_one_envelope() -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    assert len(a.turn_delta(P, RID, "x" * MAX_DELTA_CHARS)) == 1


def test_turn_delta_sends_nothing_for_an_empty_delta_or_an_unknown_turn() -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    assert a.turn_delta(P, RID, "") == []
    assert a.turn_delta(P, "other", "x") == []
    assert a.turn_delta(Q, RID, "x") == []
    assert sends(a.turn_delta(P, RID, "x"))[0].data["seq"] == 0  # the empty one took no seq


def test_turn_finished_sends_one_agent_result_answering_the_request() -> None:
    a = callee()
    a.receive(P, "trusted", request(msg_id=IN_ID), T0)
    out = a.turn_finished(P, RID, True, "the answer", "ignored")
    assert out == [SendToPeer(P, "agent_result", {"request_id": RID, "ok": True,
                                                  "text": "the answer", "error": ""},
                              re=IN_ID)]
    assert a.turns() == 0
    assert a.turn_finished(P, RID, True, "again") == []
    assert a.turn_delta(P, RID, "late") == []


def test_turn_finished_truncates_the_text_to_max_text_chars() -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    [send] = sends(a.turn_finished(P, RID, True, "x" * (MAX_TEXT_CHARS + 10)))
    assert send.data["text"] == "x" * MAX_TEXT_CHARS


def test_turn_finished_failing_sends_no_text_and_its_error_truncated() -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    [send] = sends(a.turn_finished(P, RID, False, "partial",
                                   "backend: " + "e" * MAX_ERROR_CHARS))
    assert send.data["ok"] is False and send.data["text"] == ""
    assert len(send.data["error"]) == MAX_ERROR_CHARS
    assert send.data["error"].startswith("backend: ")


def test_turn_finished_failing_without_an_error_says_backend() -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    [send] = sends(a.turn_finished(P, RID, False))
    assert send.data["error"] and error_code(send.data["error"]) == "backend"


@pytest.mark.parametrize("stop", ["cancel", "timeout", "session_closed", "never"])
def test_turn_finished_sends_nothing_for_a_stopped_or_unknown_turn(stop: str) -> None:
    a = callee(timeout_ms=1_000)
    if stop != "never":
        a.receive(P, "trusted", request(), T0)
    if stop == "cancel":
        a.receive(P, "trusted", cancel(), T0)
    elif stop == "timeout":
        a.on_timer(T0 + 1_000)
    elif stop == "session_closed":
        a.session_closed(P)
    assert a.turn_finished(P, RID, True, "too late") == []
    assert a.turn_finished(P, RID, False, "", "x") == []


def test_agent_cancel_from_the_caller_stops_the_turn_without_a_result() -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    assert a.receive(P, "trusted", cancel(), T0) == [StopAgentTurn(RID, P, "cancelled")]
    assert a.turns() == 0
    assert a.receive(P, "trusted", cancel(), T0) == []  # already stopped
    assert a.dropped == 1


def test_agent_cancel_from_another_peer_for_that_request_id_does_nothing() -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    assert a.receive(Q, "trusted", cancel(RID), T0) == []
    assert a.dropped == 1 and a.turns(P) == 1
    assert sends(a.turn_finished(P, RID, True, "fine"))[0].data["ok"] is True


@pytest.mark.parametrize("data", [{}, {"request_id": RID, "x": 1}, {"request_id": "a b"},
                                  {"request_id": None}])
def test_a_malformed_agent_cancel_is_answered_bad_request(data: dict[str, Any]) -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    [err] = a.receive(P, "trusted", Message("agent_cancel", IN_ID, None, data, 0), T0)
    assert isinstance(err, PeerErrorReply)
    assert (err.re, err.code) == (IN_ID, "bad_request")
    assert a.turns() == 1


def test_a_turn_past_its_deadline_stops_and_answers_timeout_not_one_ms_before() -> None:
    a = callee(timeout_ms=10_000)
    a.receive(P, "trusted", request(msg_id=IN_ID), T0)
    assert a.on_timer(T0 + 9_999) == []
    out = a.on_timer(T0 + 10_000)
    assert out[0] == StopAgentTurn(RID, P, "timeout")
    [send] = out[1:]
    assert_refused([send], "timeout")
    assert a.turns() == 0 and a.next_deadline() is None


def test_a_turn_uses_the_default_timeout() -> None:
    a = callee()
    a.receive(P, "trusted", request(), T0)
    assert a.next_deadline() == T0 + TIMEOUT_MS


def test_session_closed_stops_that_peers_turns_and_sends_nothing() -> None:
    a = callee()
    start_turns(a, P, 2)
    start_turns(a, Q, 1)
    out = of_type(a.session_closed(P), StopAgentTurn)
    assert sorted(out, key=lambda e: e.request_id) == [
        StopAgentTurn("p-turn-0", P, "peer_gone"), StopAgentTurn("p-turn-1", P, "peer_gone")]
    assert a.turns(P) == 0 and a.turns(Q) == 1


# --- end to end, no sockets -----------------------------------------------------------------


@dataclass
class Net:
    """Agents machines wired by a queue: a SendToPeer becomes the other side's Message
    (msg_id from the effect or a fresh one, re from the effect), a PeerErrorReply its
    ``peer_error``. Turns are run by the test."""

    nodes: dict[str, Agents]
    levels: dict[tuple[str, str], str] = field(default_factory=dict)  # (at, of) -> level
    queue: deque[tuple[str, str, Any]] = field(default_factory=deque)
    started: list[tuple[str, StartAgentTurn]] = field(default_factory=list)
    stopped: list[tuple[str, StopAgentTurn]] = field(default_factory=list)
    deltas: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    done: dict[tuple[str, str], list[CallDone]] = field(default_factory=dict)
    now: int = T0
    ids: Any = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def of(cls, *ids: str, allow_remote: bool = True) -> Net:
        def rng_for(i: int) -> Any:
            counter = itertools.count(1)
            return lambda n: bytes([i]) + next(counter).to_bytes(n - 1, "big")

        return cls({nid: Agents(nid, rng=rng_for(i), allow_remote=allow_remote)
                    for i, nid in enumerate(ids)})

    def run(self, at: str, effects: list[Any]) -> None:
        for e in effects:
            if isinstance(e, SendToPeer):
                mid = e.msg_id or f"{next(self.ids):032x}"
                self.queue.append((at, e.peer_id, Message(e.type, mid, e.re, e.data, self.now)))
            elif isinstance(e, PeerErrorReply):
                self.queue.append((at, e.peer_id, e))
            elif isinstance(e, StartAgentTurn):
                self.started.append((at, e))
            elif isinstance(e, StopAgentTurn):
                self.stopped.append((at, e))
            elif isinstance(e, CallDelta):
                self.deltas.setdefault((at, e.call_id), []).append(e.delta)
            elif isinstance(e, CallDone):
                self.done.setdefault((at, e.call_id), []).append(e)
            else:
                raise AssertionError(e)

    def pump(self) -> None:
        while self.queue:
            src, dst, item = self.queue.popleft()
            node = self.nodes[dst]
            if isinstance(item, PeerErrorReply):
                self.run(dst, node.peer_error(src, item.re, item.code))
            else:
                level = self.levels.get((dst, src), "trusted")
                self.run(dst, node.receive(src, level, item, self.now))

    def ask(self, at: str, call_id: str, peer: str, prompt: str,
            chain: tuple[str, ...] = ()) -> None:
        self.run(at, self.nodes[at].ask_peer(call_id, peer, prompt, chain, self.now))
        self.pump()

    def turn_of(self, node: str) -> StartAgentTurn:
        [turn] = [t for at, t in self.started if at == node]
        return turn


A, B, C, D, E = ("a" * 16, "b" * 16, "c" * 16, "d" * 16, "e" * 16)


def test_end_to_end_a_asks_b_and_sees_b_deltas_in_order_and_one_answer() -> None:
    net = Net.of(A, B)
    net.ask(A, "q1", B, "what time is it?")
    turn = net.turn_of(B)
    assert (turn.peer_id, turn.prompt, turn.origin_chain, turn.mode) == (
        A, "what time is it?", (A,), "plan")
    for piece in ("It ", "is ", "noon."):
        net.run(B, net.nodes[B].turn_delta(A, turn.request_id, piece))
    net.run(B, net.nodes[B].turn_finished(A, turn.request_id, True, "It is noon."))
    net.pump()
    assert net.deltas[(A, "q1")] == ["It ", "is ", "noon."]
    assert net.done[(A, "q1")] == [CallDone("q1", True, "It is noon.", "")]
    assert net.nodes[A].calls() == 0 and net.nodes[B].turns() == 0
    assert net.nodes[A].dropped == 0 and net.nodes[B].dropped == 0


def test_end_to_end_a_cancel_stops_bs_turn_and_its_late_answer_never_arrives() -> None:
    net = Net.of(A, B)
    net.ask(A, "q1", B, "long job")
    turn = net.turn_of(B)
    net.run(A, net.nodes[A].cancel_call("q1"))
    net.pump()
    assert net.stopped == [(B, StopAgentTurn(turn.request_id, A, "cancelled"))]
    net.run(B, net.nodes[B].turn_finished(A, turn.request_id, True, "too late"))
    net.pump()
    assert net.done[(A, "q1")] == [CallDone("q1", False, "", "cancelled")]


def test_end_to_end_a_timeout_cancels_bs_turn() -> None:
    net = Net.of(A, B)
    net.ask(A, "q1", B, "long job")
    turn = net.turn_of(B)
    net.now = T0 + TIMEOUT_MS - 1
    net.run(A, net.nodes[A].on_timer(net.now))
    assert net.done == {}
    net.now = T0 + TIMEOUT_MS
    net.run(A, net.nodes[A].on_timer(net.now))  # A's deadline comes first: its cancel wins
    net.pump()
    assert net.stopped == [(B, StopAgentTurn(turn.request_id, A, "cancelled"))]
    assert net.nodes[B].on_timer(net.now) == []  # the turn was already stopped
    [done] = net.done[(A, "q1")]
    assert error_code(done.error) == "timeout"


def test_end_to_end_a_guest_on_a_node_without_remote_agents_hears_not_allowed() -> None:
    net = Net.of(A, B, allow_remote=False)
    net.levels[(B, A)] = "guest"
    net.ask(A, "q1", B, "hi")
    [done] = net.done[(A, "q1")]
    assert not done.ok and error_code(done.error) == "not_allowed"
    assert net.started == []


def test_end_to_end_a_asks_b_which_asks_a_back_and_hears_loop() -> None:
    net = Net.of(A, B)
    net.ask(A, "q1", B, "ask me back")
    turn = net.turn_of(B)
    net.ask(B, "nested", A, "back to you", chain=turn.origin_chain)
    [done] = net.done[(B, "nested")]
    assert not done.ok and error_code(done.error) == "loop"
    assert [at for at, _ in net.started] == [B]  # A never ran a turn
    net.run(B, net.nodes[B].turn_finished(A, turn.request_id, False, "", done.error))
    net.pump()
    [answer] = net.done[(A, "q1")]
    assert error_code(answer.error) == "loop"


def test_end_to_end_a_chain_a_b_c_d_e_is_refused_at_e_with_too_many_hops() -> None:
    net = Net.of(A, B, C, D, E)
    net.ask(A, "q", B, "pass it on")
    hops = [B, C, D, E]
    for here, nxt in itertools.pairwise(hops):
        turn = net.turn_of(here)
        net.ask(here, "q", nxt, "pass it on", chain=turn.origin_chain)
    assert net.turn_of(D).origin_chain == (A, B, C)  # three nodes: admitted
    assert [at for at, _ in net.started] == [B, C, D]  # E ran nothing
    [done] = net.done[(D, "q")]
    assert not done.ok and error_code(done.error) == "too_many_hops"
    # the failure travels back along the chain as each turn ends with it
    for here, back in ((D, C), (C, B), (B, A)):
        turn = net.turn_of(here)
        [err] = net.done[(here, "q")]
        net.run(here, net.nodes[here].turn_finished(back, turn.request_id, False, "",
                                                    err.error))
        net.pump()
    [final] = net.done[(A, "q")]
    assert error_code(final.error) == "too_many_hops"
    assert all(m.calls() == 0 and m.turns() == 0 for m in net.nodes.values())


# --- found in review: size, repeated ids, error codes, the caller's own chain ------------


def test_an_answer_too_large_for_one_envelope_is_an_error_the_caller_hears_now() -> None:
    a = callee()
    [_] = start_turns(a, P, 1)
    wide = "中" * MAX_TEXT_CHARS  # under the character cap, over 1 MiB once sealed
    [send] = a.turn_finished(P, "p-turn-0", True, wide)
    assert send.data["ok"] is False and send.data["text"] == ""
    assert error_code(send.data["error"]) == "backend" and "too large" in send.data["error"]
    [_] = start_turns(a, P, 1)
    [send] = a.turn_finished(P, "p-turn-0", True, "中" * 1000)  # a normal one goes out
    assert send.data["ok"] is True and send.data["text"] == "中" * 1000


def test_a_repeating_rng_never_merges_two_calls() -> None:
    draws = itertools.chain([b"\x01" * 16] * 3, (bytes([i]) * 16 for i in range(2, 99)))
    a = Agents(ME, rng=lambda n: next(draws)[:n])
    rid1, _ = ask(a, "c1")
    rid2, _ = ask(a, "c2")  # its first request id drawn was rid1 again
    assert rid1 != rid2 and a.calls() == 2
    [_, done] = a.cancel_call("c1")
    assert isinstance(done, CallDone) and done.call_id == "c1" and a.calls() == 1


def test_an_error_without_a_known_code_is_handed_on_as_backend() -> None:
    a = caller()
    rid, msg_id = ask(a)
    [done] = a.receive(P, "trusted", result(rid, msg_id, ok=False, text="", error="oops"), T0)
    assert isinstance(done, CallDone) and done.error == "backend: oops"


@pytest.mark.parametrize("chain", [("not a node id",), tuple(P for _ in range(64))])
def test_the_caller_checks_the_chain_it_passes_on(chain: tuple[str, ...]) -> None:
    with pytest.raises(LocalProtocolError) as exc:
        caller().ask_peer("c", P, "hi", chain, T0)
    assert exc.value.code == "bad_request"
