"""Agents on the node (SPEC 6.3): a person's turns, turns run for peers, and the calls
between them.

``hd_protocol.apps.agent.Agents`` decides (admission, chains, streams, deadlines); this runs
what it says:

- a **local turn** (``/ws`` ``agent ask``): the configured backend answers a person's
  prompt, with the tools ``list_peers`` and ``agent.ask_peer``; the asking tab sees
  every token, tool call and tool result. The person is watching, so the tools are not
  gated (``autonomous``);
- a **remote turn** (``StartAgentTurn``) runs behind ``RemoteAgentConn``: no person,
  never a prompt; tools under ``remoteAgentMode`` (``plan``: read-only tools only;
  ``acceptEdits``: read-only and edits; ``autonomous``: all). What would need approval
  is denied and the backend is told so. Tokens go back as ``agent_stream``;
- a **call** (``agent.ask_peer`` from either kind of turn, or ``ask_peer`` from a tab)
  waits for the peer's ``agent_result``; cancelling the turn that waits cancels the
  call, which sends ``agent_cancel``.

Nothing here can wedge the node: each turn is a task with a deadline (the machine's
timers), a backend that hangs is cancelled at it, one that fails ends its turn with an
error, and other peers' chats and panes never wait for an agent.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from hd_protocol import Identity, LocalProtocolError
from hd_protocol.apps.agent import (
    AGENT_TYPES,
    AgentEffect,
    Agents,
    CallDelta,
    CallDone,
    StartAgentTurn,
    StopAgentTurn,
    error_code,
)
from hd_protocol.peer.connection import Message, PeerError
from hd_shell.clock import mono_ms, trio_deadline

from ..errors import HubError
from ..hub.linkdriver import LinkDriver
from ..hub.peers import Peers
from ..hub.sessions import SessionRegistry
from ..hub.tasks import Tasks
from .agent_backends import (
    AgentBackend,
    BackendError,
    Tool,
    ToolCall,
    ToolResult,
    Turn,
)
from .collab import Features

log = logging.getLogger("hd_node.agents")

LIST_PEERS = Tool(
    "list_peers", "The peers this node knows: node id, name, level, status.",
    {"type": "object", "properties": {}, "additionalProperties": False}, read_only=True)
ASK_PEER = Tool(
    "agent.ask_peer", "Ask the agent of a connected peer (by node id) and get its answer.",
    {"type": "object", "properties": {"peerId": {"type": "string"},
                                      "prompt": {"type": "string"}},
     "required": ["peerId", "prompt"], "additionalProperties": False}, read_only=False)
TOOLS = (LIST_PEERS, ASK_PEER)
EDIT_TOOLS: frozenset[str] = frozenset()  # tools that only edit this node's own state
MAX_TOOL_CONTENT = 64 * 1024
Show = Callable[[str, dict[str, Any]], None]  # a turn's tokens, tool calls and results


def allowed(tool: Tool, mode: str) -> bool:
    """The permission gate of a turn no person watches (SPEC 6.3)."""
    if mode == "autonomous" or tool.read_only:
        return True
    return mode == "acceptEdits" and tool.name in EDIT_TOOLS


@dataclass(slots=True)
class _Waiter:
    """One call of ours: where its deltas go and how it ended."""

    on_delta: Callable[[str], None] | None
    done: trio.Event = field(default_factory=trio.Event)
    result: CallDone | None = None


class AgentRuntime:
    def __init__(self, identity: Identity, sessions: SessionRegistry, features: Features,
                 peers: Peers, *, backend: AgentBackend | None, allow_remote: bool,
                 mode: str, timeout_ms: int, rng: Callable[[int], bytes],
                 tasks: Tasks) -> None:
        self.identity = identity
        self.sessions = sessions
        self.features = features
        self.peers = peers
        self.backend = backend
        self.rng = rng
        self.machine = Agents(identity.node_id, rng=rng, allow_remote=allow_remote,
                              mode=mode, timeout_ms=timeout_ms)
        self.timeout_ms = timeout_ms
        self.tasks = tasks
        self._waiters: dict[str, _Waiter] = {}  # call id -> waiter
        self._remote: dict[tuple[str, str], trio.CancelScope] = {}  # (peer, rid) -> turn
        self._timer_changed = trio.Event()
        for t in AGENT_TYPES:
            sessions.route(t, self._on_message)
        sessions.listen(self)

    # --- effects --------------------------------------------------------------------------

    def apply(self, effects: Sequence[AgentEffect]) -> set[LinkDriver]:
        touched: set[LinkDriver] = set()
        for e in effects:
            if isinstance(e, StartAgentTurn):
                self._start_remote(e)
            elif isinstance(e, StopAgentTurn):
                scope = self._remote.pop((e.peer_id, e.request_id), None)
                log.info("remote agent turn stopped peer=%s request=%s reason=%s",
                         e.peer_id, e.request_id, e.reason)
                if scope is not None:
                    scope.cancel()
            elif isinstance(e, CallDelta):
                w = self._waiters.get(e.call_id)
                if w is not None and w.on_delta is not None:
                    w.on_delta(e.delta)
            elif isinstance(e, CallDone):
                w = self._waiters.get(e.call_id)
                if w is not None:
                    w.result = e
                    w.done.set()
            else:
                touched |= self.features.apply([e])
        self._timer_changed.set()
        return touched

    async def run_timers(self) -> None:
        """Deadlines of calls and remote turns (``Agents.on_timer``); woken early when
        an effect may have moved the next deadline."""
        while True:
            self._timer_changed = trio.Event()
            dl = self.machine.next_deadline()
            with trio.move_on_at(math.inf if dl is None else trio_deadline(dl)):
                await self._timer_changed.wait()
            now = mono_ms()
            if dl is not None and now >= dl - 1:
                self.apply(self.machine.on_timer(max(now, dl)))

    # --- sessions (SessionListener) -------------------------------------------------------

    def session_opened(self, driver: LinkDriver) -> None:
        pass

    def session_closed(self, driver: LinkDriver, reason: str, remote: bool) -> None:
        assert driver.peer_id is not None
        self.apply(self.machine.session_closed(driver.peer_id))

    def peer_error(self, driver: LinkDriver, err: PeerError) -> None:
        assert driver.peer_id is not None
        self.apply(self.machine.peer_error(driver.peer_id, err.re, err.code))

    def _on_message(self, driver: LinkDriver, msg: Message) -> None:
        assert driver.peer_id is not None and driver.conn.session is not None
        level = driver.conn.session.level
        self.apply(self.machine.receive(driver.peer_id, level, msg, mono_ms()))

    # --- calls ----------------------------------------------------------------------------

    async def call_peer(self, peer_id: str, prompt: str, chain: Sequence[str], *,
                        on_delta: Callable[[str], None] | None = None) -> CallDone:
        """Ask ``peer_id``'s agent and wait for its answer (or why not). Cancelling the
        caller cancels the call: the peer gets ``agent_cancel``."""
        if self.sessions.get(peer_id) is None:
            return CallDone("", False, "", "peer_gone: no session with that peer")
        call_id = self.rng(8).hex()
        waiter = self._waiters[call_id] = _Waiter(on_delta)
        try:
            try:
                touched = self.apply(self.machine.ask_peer(call_id, peer_id, prompt, chain,
                                                           mono_ms()))
            except LocalProtocolError as exc:
                return CallDone(call_id, False, "", f"{exc.code}: {exc.message}")
            for driver in touched:
                await driver.wait_room()
            await waiter.done.wait()
            assert waiter.result is not None
            return waiter.result
        finally:
            if not waiter.done.is_set():  # we gave up: tell the peer
                self.apply(self.machine.cancel_call(call_id))
            del self._waiters[call_id]

    # --- tools ----------------------------------------------------------------------------

    def _tools(self, mode: str, chain: Sequence[str],
               show: Callable[[str, dict[str, Any]], None] | None
               ) -> Callable[[ToolCall], Awaitable[ToolResult]]:
        async def call_tool(call: ToolCall) -> ToolResult:
            tool = next((t for t in TOOLS if t.name == call.name), None)
            if show is not None:
                show("tool_call", {"id": call.id, "name": call.name,
                                   "arguments": call.arguments})
            if tool is None:
                res = ToolResult(False, f"no tool named {call.name}")
            elif not allowed(tool, mode):
                res = ToolResult(False, f"denied: {call.name} has side effects and this "
                                        f"turn runs in {mode} mode (no one can approve it)")
            else:
                res = await self._run_tool(tool, call.arguments, chain)
            res = ToolResult(res.ok, res.content[:MAX_TOOL_CONTENT])
            if show is not None:
                show("tool_result", {"id": call.id, "name": call.name, "ok": res.ok,
                                     "content": res.content})
            return res
        return call_tool

    async def _run_tool(self, tool: Tool, args: dict[str, Any],
                        chain: Sequence[str]) -> ToolResult:
        if tool is LIST_PEERS:
            rows = [{k: p.get(k) for k in ("node_id", "node_name", "level", "status")}
                    for p in self.peers.list_peers()]
            return ToolResult(True, json.dumps(rows))
        peer, prompt = args.get("peerId"), args.get("prompt")
        if type(peer) is not str or type(prompt) is not str:
            return ToolResult(False, "agent.ask_peer takes peerId and prompt (strings)")
        done = await self.call_peer(peer, prompt, chain)
        if done.ok:
            return ToolResult(True, done.text)
        return ToolResult(False, f"the peer's agent did not answer: {done.error}")

    # --- remote turns (RemoteAgentConn) ---------------------------------------------------

    def _start_remote(self, e: StartAgentTurn) -> None:
        scope = trio.CancelScope()
        if not self.tasks.start_soon(self._remote_turn, e, scope):
            self.apply(self.machine.turn_finished(e.peer_id, e.request_id, False,
                                                  error="backend: the node is stopping"))
            return
        self._remote[(e.peer_id, e.request_id)] = scope

    async def _remote_turn(self, e: StartAgentTurn, scope: trio.CancelScope) -> None:
        """``RemoteAgentConn``: one turn for a peer, no browser behind it."""
        key = (e.peer_id, e.request_id)
        log.info("remote agent turn peer=%s request=%s mode=%s hops=%d", e.peer_id,
                 e.request_id, e.mode, len(e.origin_chain))
        ok, text, error = False, "", ""
        with scope:
            try:
                if self.backend is None:
                    raise BackendError("this node has no agent backend")

                async def emit(delta: str) -> None:
                    for driver in self.apply(self.machine.turn_delta(e.peer_id,
                                                                     e.request_id, delta)):
                        await driver.wait_room()

                turn = Turn(e.request_id, e.prompt, TOOLS, e.mode)
                text = await self.backend.run_turn(turn, emit,
                                                   self._tools(e.mode, e.origin_chain, None))
                ok = True
            except BackendError as exc:
                error = f"backend: {exc}"
                log.info("remote agent turn failed peer=%s request=%s error=%s",
                         e.peer_id, e.request_id, exc)
            except Exception:
                log.exception("remote agent turn crashed peer=%s request=%s", e.peer_id,
                              e.request_id)
                error = "backend: the agent failed (see the node's log)"
        self._remote.pop(key, None)
        if not scope.cancelled_caught:
            self.apply(self.machine.turn_finished(e.peer_id, e.request_id, ok, text, error))

    # --- a person's turns (run as tasks: hd_node.features.agent_tasks) ---------------

    async def own_turn(self, turn_id: str, prompt: str, show: Show) -> str:
        """A turn of this node's own agent for a person: tokens, tool calls and their
        results go to ``show``; the answer is returned (``HubError`` says why not)."""
        backend = self.backend
        if backend is None:
            raise HubError("unsupported", "this node has no agent backend "
                                          "(hd-node run --agent-backend ...)")

        async def emit(delta: str) -> None:
            show("token", {"delta": delta})

        turn = Turn(turn_id, prompt, TOOLS, "autonomous")  # the person is watching
        try:
            return await backend.run_turn(turn, emit, self._tools("autonomous", (), show))
        except BackendError as exc:
            raise HubError("backend", str(exc)) from None

    async def peer_turn(self, peer_id: str, prompt: str, show: Show) -> str:
        """A person asks a peer's agent directly: its tokens go to ``show``."""
        done = await self.call_peer(peer_id, prompt, (),
                                    on_delta=lambda d: show("token", {"delta": d}))
        if not done.ok:
            raise HubError(error_code(done.error), done.error)
        return done.text


__all__ = ["ASK_PEER", "LIST_PEERS", "TOOLS", "AgentRuntime", "Show", "allowed"]
