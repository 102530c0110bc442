"""SPEC 6.3 properties of the ``Agents`` machine.

- Whatever order, duplication or stray copies B's ``agent_stream`` envelopes reach A
  in (each reordering within ``MAX_EARLY``), A passes on exactly B's deltas, in ``seq``
  order, each once; past that bound, what A passes on is still an in-order prefix
  with no repeats.
- Whatever a caller goes through (asks, cancels, timer ticks, good and bad results,
  stream envelopes, peer errors, sessions closing), every call ends with exactly one
  ``CallDone``, an ``agent_cancel`` goes out only for a cancel or a timeout, and once
  every call has ended ``calls()`` is 0.
- Whatever requests arrive, a callee never runs more than ``MAX_TURNS_PER_PEER`` turns
  of one peer, and admits, refuses ``busy`` or drops exactly as a simple model says.
- No inbound payload makes the machine raise.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol.apps.agent import (
    MAX_EARLY,
    MAX_TURNS_PER_PEER,
    Agents,
    CallDelta,
    CallDone,
    StartAgentTurn,
    StopAgentTurn,
    error_code,
)
from hd_protocol.effects import PeerErrorReply, SendToPeer
from hd_protocol.peer.session import Message

A, B, C = "a" * 16, "b" * 16, "c" * 16
PEERS = ["p" * 16, "q" * 16, "r" * 16]
TIMEOUT = 10_000


def rng_for(i: int) -> Any:
    counter = itertools.count(1)
    return lambda n: bytes([i]) + next(counter).to_bytes(n - 1, "big")


_ids = itertools.count(1)


def sends(effects: list[Any]) -> list[SendToPeer]:
    assert all(isinstance(e, SendToPeer) for e in effects), effects
    return effects


def of_type(effects: list[Any], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def msg(type_: str, data: dict[str, Any], re: str | None = None,
        msg_id: str | None = None) -> Message:
    return Message(type_, msg_id or f"{next(_ids):032x}", re, data, 0)


# --- the stream -----------------------------------------------------------------------------


def _asked_pair() -> tuple[Agents, Agents, str]:
    """A asked B; B runs the turn. Returns (A, B, request_id)."""
    a = Agents(A, rng=rng_for(1))
    b = Agents(B, rng=rng_for(2), allow_remote=True)
    [send] = sends(a.ask_peer("call", B, "tell me", (), 0))
    [start] = b.receive(A, "trusted", msg(send.type, send.data, msg_id=send.msg_id), 0)
    assert isinstance(start, StartAgentTurn)
    return a, b, start.request_id


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=2 * MAX_EARLY + 5),
       st.data())
def test_caller_passes_on_the_callees_deltas_in_seq_order_exactly_once(
        pieces: list[str], data: Any) -> None:
    a, b, rid = _asked_pair()
    envs = sends([e for p in pieces for e in b.turn_delta(A, rid, p)])
    assert [e.data["seq"] for e in envs] == list(range(len(pieces)))

    # Reorder within windows of MAX_EARLY (so at most MAX_EARLY - 1 deltas are ever
    # held); after each first delivery maybe re-deliver earlier ones or inject a copy
    # from a peer that was not asked.
    order: list[int] = []
    for start in range(0, len(envs), MAX_EARLY):
        window = list(range(start, min(start + MAX_EARLY, len(envs))))
        order += data.draw(st.permutations(window), label="window")
    emitted: list[str] = []
    seen: set[int] = set()
    dups = strays = 0
    for k in order:
        batch = [("first", k)]
        batch += [("dup", j) for j in data.draw(
            st.lists(st.sampled_from(sorted(seen | {k})), max_size=2), label="dups")]
        if data.draw(st.booleans(), label="stray"):
            batch.append(("stray", k))
        for kind, j in batch:
            peer = C if kind == "stray" else B
            out = a.receive(peer, "trusted", msg("agent_stream", envs[j].data), 1)
            assert all(isinstance(e, CallDelta) and e.call_id == "call" for e in out)
            emitted += [e.delta for e in of_type(out, CallDelta)]
            if kind == "dup":
                dups += 1
                assert out == []
            elif kind == "stray":
                strays += 1
                assert out == []
            seen.add(j)
            # what has come out is exactly the longest delivered prefix
            prefix = next(i for i in range(len(envs) + 1) if i not in seen)
            assert emitted == pieces[:prefix]
    assert emitted == pieces
    assert a.dropped == dups + strays
    assert a.calls() == 1


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3 * MAX_EARLY),
       st.lists(st.integers(0, 3 * MAX_EARLY - 1), max_size=6 * MAX_EARLY))
def test_past_the_hold_bound_the_caller_still_passes_on_an_in_order_prefix_once(
        n: int, deliveries: list[int]) -> None:
    a, b, rid = _asked_pair()
    envs = sends([e for i in range(n) for e in b.turn_delta(A, rid, f"<{i}>")])
    pieces = [f"<{i}>" for i in range(n)]
    emitted: list[str] = []
    for k in deliveries:
        out = a.receive(B, "trusted", msg("agent_stream", envs[k % n].data), 1)
        emitted += [e.delta for e in out if isinstance(e, CallDelta)]
        assert emitted == pieces[:len(emitted)]


# --- every call ends once -------------------------------------------------------------------

caller_ops = st.lists(st.one_of(
    st.tuples(st.just("ask"), st.integers(0, 2), st.integers(1, 3 * TIMEOUT)),
    st.tuples(st.just("cancel"), st.integers(0, 40)),
    st.tuples(st.just("tick"), st.integers(0, TIMEOUT)),
    st.tuples(st.just("result"), st.integers(0, 40),
              st.sampled_from(["good", "wrong_re", "no_re", "wrong_peer"]), st.booleans()),
    st.tuples(st.just("stream"), st.integers(0, 40), st.integers(0, 3)),
    st.tuples(st.just("close"), st.integers(0, 2)),
    st.tuples(st.just("peer_error"), st.integers(0, 40),
              st.sampled_from(["forbidden", "unknown_type"])),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(caller_ops)
def test_every_call_ends_with_exactly_one_call_done_and_calls_returns_to_zero(
        ops: list[tuple[Any, ...]]) -> None:
    a = Agents(A, rng=rng_for(1), timeout_ms=TIMEOUT)
    asked: list[tuple[str, str, str, str]] = []  # (call_id, peer, request_id, msg_id)
    by_rid: dict[str, str] = {}
    ended: Counter[str] = Counter()
    now = 0

    def apply(kind: str, out: list[Any]) -> None:
        dones = [e for e in out if isinstance(e, CallDone)]
        cancels = [e for e in out if isinstance(e, SendToPeer)]
        assert not [e for e in out if isinstance(e, PeerErrorReply | StartAgentTurn
                                                  | StopAgentTurn)]
        for d in dones:
            ended[d.call_id] += 1
            assert ended[d.call_id] == 1, f"{d.call_id} ended twice"
            assert d.ok == (d.error == "")
        # SPEC 6.3: our side tells the peer only when it gives up (cancel or timeout)
        if kind in ("cancel", "tick"):
            assert sorted(by_rid[c.data["request_id"]] for c in cancels) == sorted(
                d.call_id for d in dones)
            assert all(c.type == "agent_cancel" and set(c.data) == {"request_id"}
                       for c in cancels)
        else:
            assert cancels == []

    for op in ops:
        kind = op[0]
        if kind == "ask":
            call_id = f"c{len(asked)}"
            [send] = a.ask_peer(call_id, PEERS[op[1]], "q", (), now, timeout_ms=op[2])
            assert isinstance(send, SendToPeer) and send.msg_id is not None
            rid = send.data["request_id"]
            asked.append((call_id, PEERS[op[1]], rid, send.msg_id))
            by_rid[rid] = call_id
        elif not asked and kind in ("cancel", "result", "stream", "peer_error"):
            continue
        elif kind == "cancel":
            apply(kind, a.cancel_call(asked[op[1] % len(asked)][0]))
        elif kind == "tick":
            now += op[1]
            apply(kind, a.on_timer(now))
        elif kind == "result":
            call_id, peer, rid, mid = asked[op[1] % len(asked)]
            re = {"good": mid, "wrong_re": "0" * 32, "no_re": None, "wrong_peer": mid}[op[2]]
            sender = PEERS[(PEERS.index(peer) + 1) % 3] if op[2] == "wrong_peer" else peer
            data = {"request_id": rid, "ok": op[3], "text": "t" if op[3] else "",
                    "error": "" if op[3] else "busy: full"}
            was_running = ended[call_id] == 0
            out = a.receive(sender, "trusted", msg("agent_result", data, re=re), now)
            apply(kind, out)
            if op[2] == "good" and was_running:
                assert len(out) == 1 and isinstance(out[0], CallDone)
                assert out[0].call_id == call_id
            else:
                assert out == []
        elif kind == "stream":
            call_id, peer, rid, _ = asked[op[1] % len(asked)]
            out = a.receive(peer, "trusted", msg("agent_stream", {
                "request_id": rid, "seq": op[2], "delta": "d"}), now)
            assert all(isinstance(e, CallDelta) and e.call_id == call_id for e in out)
            if ended[call_id]:
                assert out == []
        elif kind == "close":
            out = a.session_closed(PEERS[op[1]])
            apply(kind, out)
            assert all(isinstance(d, CallDone) and error_code(d.error) == "peer_gone"
                       for d in out)
        elif kind == "peer_error":
            call_id, peer, _, mid = asked[op[1] % len(asked)]
            apply(kind, a.peer_error(peer, mid, op[2]))
        assert a.calls() == sum(1 for c, *_ in asked if ended[c] == 0)
        deadlines = a.next_deadline()
        assert (deadlines is None) == (a.calls() == 0)
        assert deadlines is None or deadlines > now  # nothing overdue survives a tick

    apply("tick", a.on_timer(now + 3 * TIMEOUT))
    assert all(ended[c] == 1 for c, *_ in asked)
    assert a.calls() == 0 and a.next_deadline() is None


# --- never more than two turns per peer -----------------------------------------------------

callee_ops = st.lists(st.one_of(
    st.tuples(st.just("request"), st.integers(0, 2), st.integers(0, 4)),
    st.tuples(st.just("finish"), st.integers(0, 2), st.integers(0, 4)),
    st.tuples(st.just("cancel"), st.integers(0, 2), st.integers(0, 4)),
    st.tuples(st.just("tick"), st.integers(0, TIMEOUT)),
    st.tuples(st.just("close"), st.integers(0, 2)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(callee_ops)
def test_a_callee_never_runs_more_than_max_turns_per_peer(ops: list[tuple[Any, ...]]) -> None:
    a = Agents(A, rng=rng_for(1), allow_remote=True, timeout_ms=TIMEOUT)
    running: dict[tuple[str, str], int] = {}  # (peer, request_id) -> deadline
    now = 0
    for op in ops:
        kind = op[0]
        if kind == "request":
            peer, rid = PEERS[op[1]], f"r{op[2]}"
            out = a.receive(peer, "trusted", msg("agent_request", {
                "request_id": rid, "prompt": "go", "origin_chain": [peer]}), now)
            mine = sum(1 for p, _ in running if p == peer)
            if (peer, rid) in running:
                assert out == []
            elif mine >= MAX_TURNS_PER_PEER:
                [refusal] = out
                assert isinstance(refusal, SendToPeer) and refusal.type == "agent_result"
                assert error_code(refusal.data["error"]) == "busy"
            else:
                assert out == [StartAgentTurn(rid, peer, "go", (peer,), "plan")]
                running[(peer, rid)] = now + TIMEOUT
        elif kind == "finish":
            peer, rid = PEERS[op[1]], f"r{op[2]}"
            out = a.turn_finished(peer, rid, True, "done")
            assert len(out) == (1 if running.pop((peer, rid), None) is not None else 0)
        elif kind == "cancel":
            # only the peer whose turn it is can cancel it (another peer may use the
            # same request_id for a turn of its own)
            sender, rid = PEERS[op[1]], f"r{op[2]}"
            out = a.receive(sender, "trusted", msg("agent_cancel", {"request_id": rid}), now)
            if running.pop((sender, rid), None) is not None:
                assert out == [StopAgentTurn(rid, sender, "cancelled")]
            else:
                assert out == []
        elif kind == "tick":
            now += op[1]
            out = a.on_timer(now)
            due = {k for k, d in running.items() if d <= now}
            assert {(s.peer_id, s.request_id) for s in out if isinstance(s, StopAgentTurn)} == due
            assert len(out) == 2 * len(due)
            for k in due:
                del running[k]
        elif kind == "close":
            peer = PEERS[op[1]]
            out = a.session_closed(peer)
            gone = {k for k in running if k[0] == peer}
            assert all(isinstance(s, StopAgentTurn) for s in out) and len(out) == len(gone)
            assert {(s.peer_id, s.request_id) for s in of_type(out, StopAgentTurn)} == gone
            for k in gone:
                del running[k]
        for p in PEERS:
            assert a.turns(p) <= MAX_TURNS_PER_PEER
            assert a.turns(p) == sum(1 for q, _ in running if q == p)


# --- never a crash on peer input ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=20)
    | st.sampled_from([A, B, C, "r1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(["agent_request", "agent_stream", "agent_result",
                               "agent_cancel"])),
       st.dictionaries(st.sampled_from(["request_id", "prompt", "origin_chain", "seq",
                                        "delta", "ok", "text", "error", "x"]), json_values),
       st.sampled_from(["trusted", "guest"]), st.booleans())
def test_any_inbound_payload_yields_effects_or_bad_request_never_an_exception(
        type_: str, data: dict[str, Any], level: str, allow: bool) -> None:
    a = Agents(A, rng=rng_for(1), allow_remote=allow)
    [send] = sends(a.ask_peer("call", B, "q", (), 0))
    if allow:
        a.receive(B, "trusted", msg("agent_request", {
            "request_id": "r1", "prompt": "p", "origin_chain": [B]}), 0)
    out = a.receive(B, level, msg(type_, data, re=send.msg_id), 1)
    errors = [e for e in out if isinstance(e, PeerErrorReply)]
    if errors:
        assert out == errors and errors[0].code == "bad_request"
    assert a.calls() <= 1 and a.turns(B) <= MAX_TURNS_PER_PEER
