"""Pluggable agent backends (SPEC 6.3): what answers one agent turn.

A backend gets a ``Turn``, ``emit`` for text as it arrives and ``call_tool`` for each
tool call (the runtime, ``hd_node.features.agents``, is the permission gate). It returns the
answer or raises ``BackendError``; a cancelled turn leaves nothing behind. Nothing waits
forever: OpenAI gets ``connect_timeout`` (10 s) to connect and ``read_timeout`` (60 s)
between two reads; a command has no clock of its own: the runtime's turn deadline
cancels it, which kills and reaps the process at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
import trio

from hd_protocol.identity import is_node_id

from ..config import parse_backend_spec

log = logging.getLogger("hd_node.agent_backends")

MAX_LINE = 1024 * 1024  # one JSON line of a command, one SSE line of a stream
MAX_STREAM = 16 * 1024 * 1024  # bytes read from one response or one process
MAX_TEXT = 1024 * 1024  # text (content and tool arguments) accumulated in one turn
MAX_TOOL_CALLS = 64  # tool calls in one model response
MAX_ROUNDS = 8  # model requests in one OpenAI turn
EXIT_GRACE = 2.0  # seconds a command may take to exit once its answer is in
API_KEY_ENV = "HD_OPENAI_API_KEY"
DEMO_LABEL = " (demo backend, no model)"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Tool:
    name: str  # e.g. "list_peers", "agent.ask_peer"
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    read_only: bool


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    ok: bool
    content: str  # what goes back to the model


@dataclass(frozen=True, slots=True)
class Turn:
    turn_id: str
    prompt: str
    tools: tuple[Tool, ...]
    mode: str  # "plan" | "acceptEdits" | "autonomous": the runtime enforces it


Emit = Callable[[str], Awaitable[None]]
CallTool = Callable[[ToolCall], Awaitable[ToolResult]]


class BackendError(Exception):
    """A turn failed. ``message`` is one line for a person: never a key or a prompt."""

    def __init__(self, message: str) -> None:
        self.message = " ".join(message.split())[:300]
        super().__init__(self.message)


class AgentBackend(Protocol):
    name: str  # "demo", "openai", "command"

    async def run_turn(self, turn: Turn, emit: Emit, call_tool: CallTool) -> str: ...


class _Budget:  # what is left of a bound; spending past it fails the turn with `what`
    def __init__(self, left: int, what: str) -> None:
        self.left, self.what = left, what

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise BackendError(self.what)


class _Lines:  # lines (no ending) from `receive`, b"" at the end; MAX_LINE, MAX_STREAM
    def __init__(self, receive: Callable[[], Awaitable[bytes | bytearray]], who: str) -> None:
        self._receive, self._who = receive, who
        self._buf, self._eof = bytearray(), False
        self._total = _Budget(MAX_STREAM, f"{who}: over {MAX_STREAM} bytes")

    async def next(self) -> bytes | None:
        while (i := self._buf.find(b"\n")) < 0 and not self._eof and len(self._buf) <= MAX_LINE:
            data = await self._receive()
            self._eof = not data
            self._total.spend(len(data))
            self._buf += data
        if i < 0 and not self._buf:
            return None
        i = len(self._buf) if i < 0 else i
        if i > MAX_LINE:
            raise BackendError(f"{self._who}: a line over {MAX_LINE} bytes")
        line = bytes(self._buf[:i])
        del self._buf[:i + 1]
        return line.removesuffix(b"\r")


class DemoBackend:
    """No model, for tests and demos, and says so (SPEC 6.3). ``ask <node id>: <q>`` asks
    that peer (``agent.ask_peer``); anything else is echoed as ``demo-agent@<node id>:
    <prompt>``. Streams word by word, ``delay`` s apart, so a cancel can land mid-turn."""

    name = "demo"

    def __init__(self, node_id: str, *, delay: float = 0.01) -> None:
        self.node_id, self.delay = node_id, delay

    async def run_turn(self, turn: Turn, emit: Emit, call_tool: CallTool) -> str:
        me = f"demo-agent@{self.node_id}"
        ask = re.fullmatch(r"ask ([^\s:]+): (.*)", turn.prompt, re.DOTALL)
        if ask and is_node_id(ask.group(1)):
            peer, question = ask.groups()
            result = await call_tool(ToolCall(f"{turn.turn_id}-ask", "agent.ask_peer",
                                              {"peerId": peer, "prompt": question}))
            said = "answered" if result.ok else "could not answer"
            answer = f"{me}: peer {peer} {said}: {result.content}{DEMO_LABEL}"
        else:
            answer = f"{me}: {turn.prompt}{DEMO_LABEL}"
        for word in re.split(r"(?<=\s)(?=\S)", answer):  # before each word, spaces kept
            await emit(word)
            await trio.sleep(self.delay)
        return answer


def tool_names(tools: Sequence[Tool]) -> dict[str, str]:
    """OpenAI name -> our name, for the tools of one turn. OpenAI names match
    ``^[a-zA-Z0-9_-]{1,64}$``, so "agent.ask_peer" goes as "agent__ask_peer"; a name
    that would clash gets a suffix, so the way back through this table is exact."""
    names: dict[str, str] = {}
    for tool in tools:
        wire = base = re.sub(r"[^a-zA-Z0-9_-]", "_", tool.name.replace(".", "__"))[:64] or "t"
        n = 2
        while wire in names:
            wire, n = f"{base[:56]}_{n}", n + 1
        names[wire] = tool.name
    return names


@dataclass(slots=True)
class _Call:  # one tool call, gathered from its fragments
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": "".join(self.arguments)}}


def _parse_chunk(data: bytes) -> tuple[str, list[tuple[int, str, str, str]], str | None]:
    """One ``data:`` payload -> (content delta, tool call fragments, finish_reason)."""
    try:
        chunk = json.loads(data)  # not an object: AttributeError below
        if chunk.get("error") is not None:
            raise BackendError("openai backend: the server reported an error mid-stream")
        choices = chunk.get("choices") or [{}]  # a usage-only chunk has no choices
        delta = choices[0].get("delta") or {}
        content, finish = delta.get("content") or "", choices[0].get("finish_reason")
        frags = [(tc.get("index", 0), tc.get("id") or "", fn.get("name") or "",
                  fn.get("arguments") or "")
                 for tc in delta.get("tool_calls") or [] for fn in [tc.get("function") or {}]]
        if not all(isinstance(x, str) for x in (content, *(x for f in frags for x in f[1:]))) \
                or any(type(f[0]) is not int for f in frags) or not isinstance(finish, str | None):
            raise TypeError("a field of the wrong type")
    except (ValueError, TypeError, AttributeError, KeyError, IndexError):
        raise BackendError("openai backend: malformed JSON in the stream") from None
    return content, frags, finish


class OpenAIBackend:
    """``POST {base_url}/chat/completions``, ``stream: true``: content goes to ``emit``;
    tool calls, gathered from their fragments, go through ``call_tool`` and back in the
    next request (at most ``MAX_ROUNDS``); the answer is the last response's text. The
    key (``HD_OPENAI_API_KEY``) is never logged nor put in an error."""

    name = "openai"

    def __init__(self, base_url: str, model: str = "", *, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, max_text: int = MAX_TEXT) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/chat/completions")
        self.model, self.max_text = model, max_text
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._where = urlsplit(self.base_url).netloc.rpartition("@")[2]  # no userinfo

    async def run_turn(self, turn: Turn, emit: Emit, call_tool: CallTool) -> str:
        names = tool_names(turn.tools)
        body: dict[str, Any] = {"stream": True, "messages": [
            {"role": "system", "content": f"You are the agent of an hd fabric node. Tool mode: "
             f"{turn.mode}; the node enforces it (a refused call returns an error)."},
            {"role": "user", "content": turn.prompt}]}
        if self.model:
            body["model"] = self.model
        if names:
            body["tools"] = [{"type": "function", "function": {
                "name": wire, "description": tool.description, "parameters": tool.parameters}}
                for wire, tool in zip(names, turn.tools, strict=True)]
        headers = {"accept": "text/event-stream"}
        if key := os.environ.get(API_KEY_ENV):
            headers["authorization"] = f"Bearer {key}"
        budget = _Budget(self.max_text, f"openai backend: over {self.max_text} characters")
        try:
            timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout)
            async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
                for n in range(1, MAX_ROUNDS + 1):
                    text, calls = await self._round(client, body, emit, budget)
                    log.info("agent round backend=openai turn=%s round=%d tool_calls=%d",
                             turn.turn_id, n, len(calls))
                    if not calls:
                        return text
                    body["messages"].append({"role": "assistant", "content": text or None,
                                             "tool_calls": [c.wire() for c in calls]})
                    for c in calls:
                        content = await _run_call(c, names, call_tool)
                        body["messages"].append(
                            {"role": "tool", "tool_call_id": c.id, "content": content})
        except httpx.HTTPError as e:  # a timeout, a refused connection, a stream cut short
            t = self.connect_timeout if isinstance(e, httpx.ConnectTimeout) else self.read_timeout
            why = f"nothing within {t} s" if isinstance(e, httpx.TimeoutException) else e
            raise BackendError(f"openai backend: {self._where}: {type(e).__name__}: {why}") \
                from None
        raise BackendError(f"openai backend: still calling tools after {MAX_ROUNDS} rounds")

    async def _round(self, client: httpx.AsyncClient, body: dict[str, Any], emit: Emit,
                     budget: _Budget) -> tuple[str, list[_Call]]:
        """One request: (its text, its tool calls in index order)."""
        text: list[str] = []
        calls: dict[int, _Call] = {}
        ended = False
        async with client.stream("POST", f"{self.base_url}/chat/completions", json=body) as resp:
            if resp.status_code >= 400:
                raise BackendError(f"openai backend: HTTP {resp.status_code} "
                                   f"{resp.reason_phrase} from {self._where}")
            chunks = resp.aiter_bytes()
            try:
                lines = _Lines(lambda: anext(chunks, b""), "openai backend")
                while (line := await lines.next()) is not None:
                    if not line.startswith(b"data:"):
                        continue  # blank separators, ": keep-alive" comments, event:/id: fields
                    if (data := line[5:].strip()) == b"[DONE]":
                        ended = True
                        break
                    content, frags, finish = _parse_chunk(data)
                    ended = ended or finish is not None
                    for index, call_id, name, arguments in frags:
                        if not 0 <= index < MAX_TOOL_CALLS:
                            raise BackendError(f"openai backend: over {MAX_TOOL_CALLS} tool calls")
                        call = calls.setdefault(index, _Call(f"call_{index}"))
                        call.id, call.name = call_id or call.id, call.name or name
                        budget.spend(len(arguments))
                        call.arguments.append(arguments)
                    if content:
                        budget.spend(len(content))
                        text.append(content)
                        await emit(content)
            finally:
                await _finish(chunks)
        if not ended:
            raise BackendError("openai backend: the stream ended before the answer was complete")
        return "".join(text), [calls[i] for i in sorted(calls)]


async def _finish(chunks: AsyncIterator[bytes]) -> None:
    """Close httpx's nested async generators now (trio warns if GC does it, httpx#3686):
    a read in a cancelled scope raises at the innermost await, closing them all."""
    with trio.CancelScope() as scope, contextlib.suppress(Exception):
        scope.cancel()
        async for _ in chunks:
            pass


async def _run_call(call: _Call, names: dict[str, str], call_tool: CallTool) -> str:
    """What goes back to the model; a name we did not offer goes to the runtime as is."""
    try:
        arguments = json.loads("".join(call.arguments).strip() or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        return "error: the arguments are not a JSON object"
    result = await call_tool(ToolCall(call.id, names.get(call.name, call.name), arguments))
    return result.content if result.ok else f"error: {result.content}"


class CommandBackend:
    """One process per turn (stderr discarded), JSON lines: we send ``turn {turn_id,prompt,
    mode,tools}`` and ``tool_result {id,ok,content}``; it sends ``token {delta}``,
    ``tool_call {id,name,arguments}``, then ``answer {text}`` (and exits 0 within
    ``exit_grace`` s of its stdin closing) or ``error {message}``. Killed if still there."""

    name = "command"

    def __init__(self, argv: Sequence[str], *, exit_grace: float = EXIT_GRACE) -> None:
        if not argv:
            raise ValueError("agent backend command needs a command: command:python3 agent.py")
        self.argv, self.exit_grace = list(argv), exit_grace

    async def run_turn(self, turn: Turn, emit: Emit, call_tool: CallTool) -> str:
        try:
            proc = await trio.lowlevel.open_process(self.argv, stdin=subprocess.PIPE,
                                                    stdout=subprocess.PIPE,
                                                    stderr=subprocess.DEVNULL)
        except OSError as e:
            raise BackendError(f"command backend: cannot start {self.argv[0]}: {e.strerror}") \
                from None
        log.info("agent command started turn=%s pid=%d", turn.turn_id, proc.pid)
        try:
            return await self._converse(proc, turn, emit, call_tool)
        finally:
            with trio.CancelScope(shield=True):  # even when cancelled: no zombie left
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        await pipe.aclose()

    async def _converse(self, proc: trio.Process, turn: Turn, emit: Emit,
                        call_tool: CallTool) -> str:
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None
        await _send_line(stdin, {"type": "turn", "turn_id": turn.turn_id, "prompt": turn.prompt,
                                 "mode": turn.mode, "tools": [asdict(t) for t in turn.tools]})
        lines = _Lines(lambda: stdout.receive_some(65536), "command backend")
        budget = _Budget(MAX_TEXT, f"command backend: over {MAX_TEXT} characters")
        while (raw := await lines.next()) is not None:
            if not raw.strip():
                continue
            try:
                msg = json.loads(raw)
                kind = msg["type"]
            except (ValueError, TypeError, KeyError, IndexError):
                raise BackendError("command backend: the command wrote bad JSON") from None
            if kind == "token":
                budget.spend(len(delta := _field(msg, "delta", str)))
                await emit(delta)
            elif kind == "tool_call":
                call = ToolCall(_field(msg, "id", str), _field(msg, "name", str),
                                _field(msg, "arguments", dict))
                result = await call_tool(call)
                await _send_line(stdin, {"type": "tool_result", "id": call.id,
                                         "ok": result.ok, "content": result.content})
            elif kind == "answer":
                text = _field(msg, "text", str)
                await stdin.aclose()
                if (code := await self._exit_code(proc)) not in (None, 0):
                    raise BackendError(f"command backend: the command exited with code {code}")
                return text
            elif kind == "error":
                raise BackendError(f"command backend: {_field(msg, 'message', str)}")
            else:
                raise BackendError(f"command backend: unknown line type {str(kind)[:40]!r}")
        code = await self._exit_code(proc)
        how = "closed its output" if code is None else f"exited with code {code}"
        raise BackendError(f"command backend: the command {how} before answering")

    async def _exit_code(self, proc: trio.Process) -> int | None:
        with trio.move_on_after(self.exit_grace):
            await proc.wait()
        return proc.returncode


def _field(msg: dict[str, Any], key: str, kind: type[T]) -> T:
    if not isinstance(value := msg.get(key), kind):
        raise BackendError(f"command backend: a {msg['type']} line without a valid {key}")
    return value


async def _send_line(stdin: trio.abc.SendStream, message: dict[str, Any]) -> None:
    try:
        await stdin.send_all(json.dumps(message).encode() + b"\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise BackendError("command backend: the command stopped reading its input") from None


def backend_from_spec(spec: str, *, node_id: str) -> AgentBackend:
    """The backend ``agentBackend`` names (``config.parse_backend_spec``: a bad spec
    raises ValueError with a one-line message)."""
    parsed = parse_backend_spec(spec)
    if parsed.kind == "demo":
        return DemoBackend(node_id)
    if parsed.kind == "openai":
        return OpenAIBackend(parsed.url, parsed.model)
    return CommandBackend(list(parsed.argv))
