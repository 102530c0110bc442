"""Agent to agent (SPEC 6.3), pinned where mutation testing found it loose: the exact
``CallDone`` / ``agent_result`` a caller and a callee hand on, the drop counter, the
defaults, and the boundaries of an answer's size."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from hd_protocol.apps.agent import (
    MAX_EARLY,
    MAX_ERROR_CHARS,
    Agents,
    CallDone,
    StartAgentTurn,
    error_code,
)
from hd_protocol.effects import PeerErrorReply, SendToPeer
from hd_protocol.limits import DEFAULT_LIMITS
from hd_protocol.peer.session import Message
from hd_protocol.seal import sealed_size

ME = "m" * 16
P = "p" * 16
T0 = 1_000_000
IN_ID = "ee" * 16
RID = "req-1"


def counter_rng() -> Any:
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def caller() -> Agents:
    return Agents(ME, rng=counter_rng())


def callee(**kw: Any) -> Agents:
    return Agents(ME, rng=counter_rng(), allow_remote=True, **kw)


def ask(a: Agents, call_id: str = "c1") -> tuple[str, str]:
    [send] = a.ask_peer(call_id, P, "hello", (), T0)
    assert isinstance(send, SendToPeer) and send.msg_id is not None
    return send.data["request_id"], send.msg_id


def result(rid: str, re: str | None, ok: bool = True, text: str = "answer",
           error: str = "") -> Message:
    return Message("agent_result", "f" * 32, re,
                   {"request_id": rid, "ok": ok, "text": text, "error": error}, 0)


def stream(rid: str, seq: int, delta: str) -> Message:
    return Message("agent_stream", "f" * 32, None,
                   {"request_id": rid, "seq": seq, "delta": delta}, 0)


def request(rid: str = RID, msg_id: str = IN_ID) -> Message:
    return Message("agent_request", msg_id, None,
                   {"request_id": rid, "prompt": "do it", "origin_chain": [P]}, 0)


def started(a: Agents, rid: str = RID) -> None:
    [start] = a.receive(P, "trusted", request(rid), T0)
    assert isinstance(start, StartAgentTurn)


# --- defaults -------------------------------------------------------------------------------


def test_a_node_takes_no_agent_requests_from_peers_unless_configured_to() -> None:
    [refusal] = Agents(ME, rng=counter_rng()).receive(P, "trusted", request(), T0)
    assert isinstance(refusal, SendToPeer) and refusal.type == "agent_result"
    assert error_code(refusal.data["error"]) == "not_allowed"


def test_error_code_reads_only_what_comes_before_the_first_colon() -> None:
    assert error_code("busy: at most 2: per peer") == "busy"
    assert error_code("loop:a:b") == "loop"


# --- the caller ---------------------------------------------------------------------------


def test_a_repeated_request_id_is_drawn_again_as_a_fresh_12_byte_id() -> None:
    draws = itertools.chain([b"\x01" * 16] * 3, (bytes([i]) * 16 for i in range(2, 99)))
    a = Agents(ME, rng=lambda n: next(draws)[:n])
    assert ask(a, "c1")[0] == "01" * 12
    # c2 draws "01" * 12 again, then its msg_id ("02" * 16), then a fresh request id
    assert ask(a, "c2")[0] == "03" * 12


def test_a_failed_result_without_an_error_is_the_default_backend_error() -> None:
    a = caller()
    rid, mid = ask(a)
    out = a.receive(P, "trusted", result(rid, mid, ok=False, text="", error=""), T0)
    assert out == [CallDone("c1", False, "", "backend: the peer's agent failed")]


def test_a_failed_result_whose_error_is_backend_already_is_handed_on_unchanged() -> None:
    for error in ("backend", "backend: out of tokens"):
        a = caller()
        rid, mid = ask(a)
        out = a.receive(P, "trusted", result(rid, mid, ok=False, text="", error=error), T0)
        assert out == [CallDone("c1", False, "", error)]


def test_a_result_error_of_exactly_max_error_chars_is_taken() -> None:
    a = caller()
    rid, mid = ask(a)
    error = "busy: " + "x" * (MAX_ERROR_CHARS - 6)
    out = a.receive(P, "trusted", result(rid, mid, ok=False, text="", error=error), T0)
    assert out == [CallDone("c1", False, "", error)]


def test_a_timed_out_call_is_told_to_the_peer_and_ends_with_the_timeout_error() -> None:
    a = caller()
    rid, _ = ask(a)
    out = a.on_timer(T0 + a.timeout_ms)
    assert out == [SendToPeer(P, "agent_cancel", {"request_id": rid}),
                   CallDone("c1", False, "", "timeout: the peer's agent did not answer in time")]


def test_a_closed_session_ends_its_calls_with_no_text_and_the_peer_gone_error() -> None:
    a = caller()
    ask(a)
    assert a.session_closed(P) == [
        CallDone("c1", False, "", "peer_gone: the session with the peer ended")]


def test_every_dropped_agent_envelope_is_counted() -> None:
    a = callee()
    rid, mid = ask(a)
    a.receive(P, "trusted", result(rid, mid), T0)
    a.receive(P, "trusted", result(rid, mid), T0)  # a second result
    a.receive(P, "trusted", result(rid, mid), T0)
    assert a.dropped == 2
    b = callee()
    started(b)
    b.receive(P, "trusted", request(), T0)  # the same request while it runs
    b.receive(P, "trusted", request(), T0)
    assert b.dropped == 2
    c = callee()
    c.receive(P, "trusted", Message("agent_cancel", "f" * 32, None, {"request_id": "x"}, 0),
              T0)
    c.receive(P, "trusted", Message("agent_cancel", "f" * 32, None, {"request_id": "y"}, 0),
              T0)
    assert c.dropped == 2


def test_deltas_held_beyond_max_early_are_each_counted_as_dropped() -> None:
    a = caller()
    rid, _ = ask(a)
    for seq in range(1, MAX_EARLY + 3):
        a.receive(P, "trusted", stream(rid, seq, "d"), T0)
    assert a.dropped == 2


def test_a_malformed_agent_message_is_answered_with_the_fields_it_must_have() -> None:
    [err] = callee().receive(P, "trusted", Message("agent_cancel", IN_ID, None, {}, 0), T0)
    assert isinstance(err, PeerErrorReply)
    assert (err.code, err.message) == ("bad_request", "the fields are exactly request_id")
    [err] = caller().receive(P, "trusted", Message("agent_stream", IN_ID, None, {}, 0), T0)
    assert isinstance(err, PeerErrorReply)
    assert err.message == "the fields are exactly request_id, seq, delta"


# --- the callee -----------------------------------------------------------------------------


def test_turn_finished_without_text_or_error_sends_an_empty_text_or_backend() -> None:
    a = callee()
    started(a)
    assert a.turn_finished(P, RID, True) == [SendToPeer(P, "agent_result", {
        "request_id": RID, "ok": True, "text": "", "error": ""}, re=IN_ID)]
    started(a)
    assert a.turn_finished(P, RID, False) == [SendToPeer(P, "agent_result", {
        "request_id": RID, "ok": False, "text": "", "error": "backend"}, re=IN_ID)]


def _answer_of_sealed_size(size: int) -> str:
    """A text whose ``agent_result`` payload seals to exactly ``size`` bytes."""
    for n in range(1, 4096):
        text = "a" * n
        data = {"request_id": RID, "ok": True, "text": text, "error": ""}
        if sealed_size(data) == size:
            return text
    raise AssertionError(f"no text seals to {size} bytes")


def test_an_answer_that_seals_to_exactly_the_envelope_limit_is_sent() -> None:
    limit = sealed_size({"request_id": RID, "ok": True, "text": "a" * 1000, "error": ""})
    text = _answer_of_sealed_size(limit)
    a = callee(limits=replace(DEFAULT_LIMITS, max_envelope_bytes=limit))
    started(a)
    [send] = a.turn_finished(P, RID, True, text)
    assert send.data == {"request_id": RID, "ok": True, "text": text, "error": ""}


def test_an_answer_too_large_is_a_backend_error_answering_the_request() -> None:
    a = callee(limits=replace(DEFAULT_LIMITS, max_envelope_bytes=1_000))
    started(a)
    assert a.turn_finished(P, RID, True, "a" * 2_000) == [SendToPeer(P, "agent_result", {
        "request_id": RID, "ok": False, "text": "",
        "error": "backend: the answer is too large for one envelope"}, re=IN_ID)]
