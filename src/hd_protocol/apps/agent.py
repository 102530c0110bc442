"""Agent to agent (SPEC 6.3): both sides of ``agent_request`` / ``agent_stream`` /
``agent_result`` / ``agent_cancel`` as one sans-IO machine per node.

**Caller.** ``ask_peer`` sends ``agent_request {request_id, prompt, origin_chain}``
(the chain it was given plus this node) and keeps the call until its result, its
deadline (120 s by default) or a ``cancel_call``; on a deadline or a cancel the peer
gets ``agent_cancel {request_id}``. Stream deltas are passed on in ``seq`` order, each
once; a result is taken only from the peer that was asked, with ``re`` = the request's
``msg_id``; anything late, duplicated or from someone else is dropped. The shell hears
``CallDelta`` and exactly one ``CallDone`` per call.

**Callee.** An ``agent_request`` is admitted in the order of SPEC 6.3, each failure
answered ``agent_result {ok: false, error}``: remote turns allowed
(``allowRemoteAgent``) → the peer is trusted → this node is not in ``origin_chain``
(``loop``) → the chain has at most 3 nodes (``too_many_hops``) → fewer than 2 turns of
that peer running (``busy``). An admitted request becomes ``StartAgentTurn``; the shell
runs it behind a connection with no person behind it, under the tool mode of
``effective_mode`` (``plan`` unless configured otherwise; unknown values are ``plan``),
and reports back with ``turn_delta`` / ``turn_finished``. A turn has a deadline too:
past it, or on ``agent_cancel`` from its caller, the shell gets ``StopAgentTurn``.

``error`` in an ``agent_result`` starts with a code (``not_allowed``, ``forbidden``,
``loop``, ``too_many_hops``, ``busy``, ``timeout``, ``cancelled``, ``peer_gone``,
``backend``), optionally followed by ``": "`` and a line for a person.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..effects import PeerErrorReply, SendToPeer
from ..envelope import new_msg_id
from ..errors import LocalProtocolError, RemoteProtocolError
from ..identity import Rng, is_node_id
from ..limits import DEFAULT_LIMITS, Limits
from ..peer.session import Message
from ..seal import sealed_size

AGENT_TYPES: Final = frozenset({"agent_request", "agent_stream", "agent_result",
                                "agent_cancel"})
MODES: Final = ("plan", "acceptEdits", "autonomous")
MAX_CHAIN: Final = 3  # nodes in origin_chain a callee accepts (a fourth hop is refused)
MAX_TURNS_PER_PEER: Final = 2
TIMEOUT_MS: Final = 120_000
MAX_PROMPT_CHARS: Final = 64 * 1024
MAX_DELTA_CHARS: Final = 16 * 1024
MAX_TEXT_CHARS: Final = 256 * 1024
MAX_ERROR_CHARS: Final = 1024
MAX_CHAIN_ENTRIES: Final = 64  # a longer origin_chain is not even read (bad_request)
MAX_CALLS: Final = 64  # calls of ours in flight at once, all peers
MAX_EARLY: Final = 64  # stream deltas held while an earlier seq is missing
REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
ERROR_CODES: Final = frozenset({"not_allowed", "forbidden", "loop", "too_many_hops", "busy",
                                "timeout", "cancelled", "peer_gone", "backend"})


def effective_mode(mode: object) -> str:
    """``network.remoteAgentMode`` as it applies: unknown values mean ``plan``."""
    return mode if type(mode) is str and mode in MODES else "plan"


def error_code(error: str) -> str:
    """The code an ``agent_result`` error starts with (``backend`` if none is known)."""
    code = error.split(":", 1)[0].strip()
    return code if code in ERROR_CODES else "backend"


# --- effects ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartAgentTurn:
    """Run a turn of our agent for ``peer_id`` (no person behind it; tools under
    ``mode``); report with ``turn_delta`` / ``turn_finished``. Nested ``ask_peer`` calls
    of that turn pass ``origin_chain`` on."""

    request_id: str
    peer_id: str
    prompt: str
    origin_chain: tuple[str, ...]
    mode: str


@dataclass(frozen=True, slots=True)
class StopAgentTurn:
    """Stop that turn now (its caller cancelled, went away, or its deadline passed)."""

    request_id: str
    peer_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CallDelta:
    """Text streamed by the peer for our call ``call_id``, in order, each once."""

    call_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class CallDone:
    """Our call ``call_id`` ended (exactly once): the peer's answer, or why not."""

    call_id: str
    ok: bool
    text: str
    error: str


AgentEffect = SendToPeer | PeerErrorReply | StartAgentTurn | StopAgentTurn | CallDelta | CallDone


@dataclass(slots=True)
class _Call:
    call_id: str
    peer_id: str
    request_id: str
    msg_id: str
    deadline: int
    next_seq: int = 0
    early: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Turn:
    request_id: str
    peer_id: str
    msg_id: str  # of the request: the result's ``re``
    deadline: int
    next_seq: int = 0


class Agents:
    """Every agent call this node makes and every remote turn it runs."""

    def __init__(self, self_id: str, *, rng: Rng, allow_remote: bool = False,
                 mode: object = "plan", timeout_ms: int = TIMEOUT_MS,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.self_id = self_id
        self.limits = limits
        self.rng = rng
        self.allow_remote = allow_remote
        self.mode = effective_mode(mode)
        self.timeout_ms = timeout_ms
        self._calls: dict[str, _Call] = {}  # request id -> call
        self._by_call: dict[str, str] = {}  # call id -> request id
        self._turns: dict[tuple[str, str], _Turn] = {}  # (peer, request id) -> turn
        self.dropped = 0  # late, duplicate or stray agent envelopes

    # --- queries ----------------------------------------------------------------------------

    def calls(self) -> int:
        return len(self._calls)

    def turns(self, peer_id: str | None = None) -> int:
        return sum(1 for p, _ in self._turns if peer_id is None or p == peer_id)

    def next_deadline(self) -> int | None:
        deadlines = [c.deadline for c in self._calls.values()]
        deadlines += [t.deadline for t in self._turns.values()]
        return min(deadlines) if deadlines else None

    # --- caller -------------------------------------------------------------------------------

    def ask_peer(self, call_id: str, peer_id: str, prompt: object,
                 origin_chain: Sequence[str], now: int, *,
                 timeout_ms: int | None = None) -> list[AgentEffect]:
        """Ask ``peer_id``'s agent. ``origin_chain``: the chain of the turn asking
        (empty for a person's own question)."""
        if not is_node_id(peer_id) or peer_id == self.self_id:
            raise LocalProtocolError("bad_request", "ask another node, by its node id")
        if type(prompt) is not str or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
            raise LocalProtocolError("bad_request",
                                     f"a prompt is 1..{MAX_PROMPT_CHARS} characters")
        if call_id in self._by_call:
            raise LocalProtocolError("bad_request", "that call is already running")
        if (len(origin_chain) >= MAX_CHAIN_ENTRIES
                or not all(is_node_id(x) for x in origin_chain)):
            raise LocalProtocolError("bad_request", "origin_chain is a list of node ids")
        if len(self._calls) >= MAX_CALLS:
            raise LocalProtocolError("busy", f"at most {MAX_CALLS} agent calls at once")
        request_id, msg_id = self.rng(12).hex(), new_msg_id(self.rng)
        while request_id in self._calls:  # an rng that repeats must not merge two calls
            request_id = self.rng(12).hex()
        wait = self.timeout_ms if timeout_ms is None else timeout_ms
        self._calls[request_id] = _Call(call_id, peer_id, request_id, msg_id, now + wait)
        self._by_call[call_id] = request_id
        chain = [*origin_chain, self.self_id]
        return [SendToPeer(peer_id, "agent_request", {
            "request_id": request_id, "prompt": prompt, "origin_chain": chain},
            msg_id=msg_id)]

    def cancel_call(self, call_id: str) -> list[AgentEffect]:
        """Our side gave up on the call (a tab's cancel, or the turn that asked ended)."""
        rid = self._by_call.get(call_id)
        if rid is None:
            return []
        return self._end_call(self._calls[rid], False, "", "cancelled", tell_peer=True)

    def _end_call(self, c: _Call, ok: bool, text: str, error: str, *,
                  tell_peer: bool) -> list[AgentEffect]:
        del self._calls[c.request_id]
        del self._by_call[c.call_id]
        out: list[AgentEffect] = []
        if tell_peer:
            out.append(SendToPeer(c.peer_id, "agent_cancel", {"request_id": c.request_id}))
        out.append(CallDone(c.call_id, ok, text, error))
        return out

    # --- callee: what the shell's turn reports ---------------------------------------------------

    def turn_delta(self, peer_id: str, request_id: str, delta: str) -> list[AgentEffect]:
        t = self._turns.get((peer_id, request_id))
        if t is None or not delta:
            return []
        out: list[AgentEffect] = []
        for i in range(0, len(delta), MAX_DELTA_CHARS):  # a long delta goes in pieces
            out.append(SendToPeer(peer_id, "agent_stream", {
                "request_id": request_id, "seq": t.next_seq,
                "delta": delta[i:i + MAX_DELTA_CHARS]}))
            t.next_seq += 1
        return out

    def turn_finished(self, peer_id: str, request_id: str, ok: bool, text: str = "",
                      error: str = "") -> list[AgentEffect]:
        """The turn ended: its result goes back (once; a stopped turn's is not sent)."""
        t = self._turns.pop((peer_id, request_id), None)
        if t is None:
            return []
        result = self._result(peer_id, request_id, t.msg_id, ok,
                              text[:MAX_TEXT_CHARS] if ok else "",
                              "" if ok else (error or "backend")[:MAX_ERROR_CHARS])
        if sealed_size(result.data) > self.limits.max_envelope_bytes:
            # 256 Ki characters can still be more than one envelope (escapes, wide
            # UTF-8): an answer that cannot leave is an error the caller hears now.
            result = self._result(peer_id, request_id, t.msg_id, False, "",
                                  "backend: the answer is too large for one envelope")
        return [result]

    @staticmethod
    def _result(peer_id: str, request_id: str, re_: str, ok: bool, text: str,
                error: str) -> SendToPeer:
        return SendToPeer(peer_id, "agent_result", {"request_id": request_id, "ok": ok,
                                                    "text": text, "error": error}, re=re_)

    # --- time and sessions ----------------------------------------------------------------------

    def on_timer(self, now: int) -> list[AgentEffect]:
        out: list[AgentEffect] = []
        for c in [c for c in self._calls.values() if c.deadline <= now]:
            out += self._end_call(c, False, "", "timeout: the peer's agent did not answer "
                                  "in time", tell_peer=True)
        for t in [t for t in self._turns.values() if t.deadline <= now]:
            del self._turns[(t.peer_id, t.request_id)]
            out += [StopAgentTurn(t.request_id, t.peer_id, "timeout"),
                    self._result(t.peer_id, t.request_id, t.msg_id, False, "",
                                 "timeout: the turn ran out of time")]
        return out

    def session_closed(self, peer_id: str) -> list[AgentEffect]:
        """Calls to that peer fail; its turns here stop (no one can get their results)."""
        out: list[AgentEffect] = []
        for c in [c for c in self._calls.values() if c.peer_id == peer_id]:
            out += self._end_call(c, False, "", "peer_gone: the session with the peer ended",
                                  tell_peer=False)
        for t in [t for t in self._turns.values() if t.peer_id == peer_id]:
            del self._turns[(peer_id, t.request_id)]
            out.append(StopAgentTurn(t.request_id, peer_id, "peer_gone"))
        return out

    def peer_error(self, peer_id: str, re_: str | None, code: str) -> list[AgentEffect]:
        """The peer answered our request's envelope with ``error`` (e.g. ``forbidden``:
        we are only a guest there; ``unknown_type``: it has no agent)."""
        for c in self._calls.values():
            if c.peer_id == peer_id and c.msg_id == re_:
                err = "forbidden" if code == "forbidden" else f"backend: the peer said {code}"
                return self._end_call(c, False, "", err, tell_peer=False)
        return []

    # --- inbound --------------------------------------------------------------------------------

    def receive(self, peer_id: str, level: str, msg: Message, now: int) -> list[AgentEffect]:
        try:
            if msg.type == "agent_request":
                return self._on_request(peer_id, level, msg, now)
            if msg.type == "agent_stream":
                return self._on_stream(peer_id, msg.data)
            if msg.type == "agent_result":
                return self._on_result(peer_id, msg)
            if msg.type == "agent_cancel":
                return self._on_cancel(peer_id, msg.data)
        except RemoteProtocolError as exc:
            return [PeerErrorReply(peer_id, msg.msg_id, exc.code, exc.message)]
        return []

    def _on_request(self, peer: str, level: str, msg: Message, now: int) -> list[AgentEffect]:
        d = msg.data
        _fields(d, ("request_id", "prompt", "origin_chain"))
        rid = _request_id(d["request_id"])
        prompt = d["prompt"]
        if type(prompt) is not str or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
            raise RemoteProtocolError("bad_request",
                                      f"prompt is 1..{MAX_PROMPT_CHARS} characters")
        chain = d["origin_chain"]
        if (type(chain) is not list or not 0 < len(chain) <= MAX_CHAIN_ENTRIES
                or not all(is_node_id(x) for x in chain)):
            raise RemoteProtocolError("bad_request",
                                      f"origin_chain is 1..{MAX_CHAIN_ENTRIES} node ids")
        if chain[-1] != peer:
            raise RemoteProtocolError("bad_request", "origin_chain must end with the sender")
        if (peer, rid) in self._turns:
            self.dropped += 1  # the same request twice: the first one is running
            return []

        def refuse(error: str) -> list[AgentEffect]:
            return [self._result(peer, rid, msg.msg_id, False, "", error)]

        if not self.allow_remote:
            return refuse("not_allowed: this node does not take agent requests from peers")
        if level != "trusted":
            return refuse("forbidden: only trusted peers may ask this node's agent")
        if self.self_id in chain:
            return refuse("loop: this node already asked along this chain")
        if len(chain) > MAX_CHAIN:
            return refuse(f"too_many_hops: at most {MAX_CHAIN} nodes in a chain")
        if self.turns(peer) >= MAX_TURNS_PER_PEER:
            return refuse(f"busy: at most {MAX_TURNS_PER_PEER} turns per peer at once")
        self._turns[(peer, rid)] = _Turn(rid, peer, msg.msg_id, now + self.timeout_ms)
        return [StartAgentTurn(rid, peer, prompt, tuple(chain), self.mode)]

    def _on_stream(self, peer: str, d: Mapping[str, Any]) -> list[AgentEffect]:
        _fields(d, ("request_id", "seq", "delta"))
        c = self._calls.get(_request_id(d["request_id"]))
        seq, delta = d["seq"], d["delta"]
        if type(seq) is not int or seq < 0 or type(delta) is not str or (
                len(delta) > MAX_DELTA_CHARS):
            raise RemoteProtocolError("bad_request", "seq is an integer >= 0, delta a string")
        if c is None or c.peer_id != peer or seq < c.next_seq or seq in c.early:
            self.dropped += 1  # late, duplicated, or not ours
            return []
        if seq > c.next_seq:
            if len(c.early) >= MAX_EARLY:
                self.dropped += 1
                return []
            c.early[seq] = delta
            return []
        out: list[AgentEffect] = [CallDelta(c.call_id, delta)]
        c.next_seq += 1
        while c.next_seq in c.early:
            out.append(CallDelta(c.call_id, c.early.pop(c.next_seq)))
            c.next_seq += 1
        return out

    def _on_result(self, peer: str, msg: Message) -> list[AgentEffect]:
        d = msg.data
        _fields(d, ("request_id", "ok", "text", "error"))
        ok, text, error = d["ok"], d["text"], d["error"]
        if (type(ok) is not bool or type(text) is not str or len(text) > MAX_TEXT_CHARS
                or type(error) is not str or len(error) > MAX_ERROR_CHARS):
            raise RemoteProtocolError("bad_request", "ok is a bool, text and error strings")
        c = self._calls.get(_request_id(d["request_id"]))
        if c is None or c.peer_id != peer or msg.re != c.msg_id:
            self.dropped += 1  # late (we gave up), a second result, or not ours
            return []
        if not ok and not error:
            error = "backend: the peer's agent failed"
        elif not ok and error_code(error) == "backend" and not error.startswith("backend"):
            error = f"backend: {error}"  # every error we hand on starts with a code
        return self._end_call(c, ok, text if ok else "", "" if ok else error, tell_peer=False)

    def _on_cancel(self, peer: str, d: Mapping[str, Any]) -> list[AgentEffect]:
        _fields(d, ("request_id",))
        t = self._turns.pop((peer, _request_id(d["request_id"])), None)
        if t is None:
            self.dropped += 1
            return []
        return [StopAgentTurn(t.request_id, peer, "cancelled")]


def _fields(d: Mapping[str, Any], names: tuple[str, ...]) -> None:
    if set(d) != set(names):
        raise RemoteProtocolError("bad_request", f"the fields are exactly {', '.join(names)}")


def _request_id(value: object) -> str:
    if type(value) is not str or REQUEST_ID_RE.fullmatch(value) is None:
        raise RemoteProtocolError("bad_request", "request_id is 1..64 of [A-Za-z0-9_-]")
    return value
