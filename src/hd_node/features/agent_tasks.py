"""A person's agent turns as tasks of the node (SPEC 6.3, 9 ``agent``): they outlive the
tab that started them.

``hd_protocol.apps.agent_tasks.TaskBook`` decides (states, streams, who follows what,
how long a task is kept); this runs what it says:

- ``ask`` / ``ask_peer`` from a tab create a task and run its turn in the node's task
  nursery, not in the tab's: a reload or a closed tab leaves it running. The asking tab
  is told ``started {turnId, taskId}`` at once and still gets the turn's events keyed
  by its ``turnId``, and the command's ``done`` when it ends (the SPEC 9 table), while
  that tab is open;
- any tab lists the tasks (``tasks``), follows one from any sequence number
  (``follow {taskId, fromSeq}``: the events from there, then each new one as
  ``task_event``), and cancels it (``cancel_task``; the asking tab's ``cancel {turnId}``
  is the same). Every tab hears ``task`` at each change of a task's state;
- every event is written to ``node.db`` as it happens (``agent_tasks``,
  ``agent_task_events``); the book is read back when the node starts, and tasks that
  were running then are ``failed`` (``interrupted``). Finished tasks are kept for
  ``--agent-task-retention`` (24 h) and pruned once a minute.

A peer's turn is ``submitted`` until its first event arrives (SPEC 6.3 has no
acceptance message), then ``working``. A turn that ends with one of the admission
refusals of SPEC 6.3 (or without a backend) is ``rejected``; a cancel is ``canceled``;
a deadline, a lost peer or a failing backend is ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from hd_protocol import LocalProtocolError
from hd_protocol.apps.agent_tasks import (
    Asker,
    DropTasks,
    StopTask,
    StoreTask,
    TaskBook,
    TaskEffect,
    task_from_row,
    task_row,
)
from hd_protocol.effects import TabEvent
from hd_shell.clock import wall_ms

from ..errors import HubError
from ..hub.tabbus import Tab, TabBus
from ..hub.tasks import Tasks
from ..store import NodeStore
from .agents import AgentRuntime, Show

log = logging.getLogger("hd_node.agent_tasks")

TURNS_PER_TAB = 4  # turns one tab may have running at once
PRUNE_EVERY_S = 60.0
REJECTED = frozenset({"not_allowed", "forbidden", "loop", "too_many_hops", "busy",
                      "unsupported", "bad_request"})
STREAMED = frozenset({"token", "tool_call", "tool_result"})


class AgentTasks:
    def __init__(self, runtime: AgentRuntime, bus: TabBus, store: NodeStore, tasks: Tasks,
                 *, rng: Callable[[int], bytes], retention_ms: int, timeout_ms: int) -> None:
        self.runtime = runtime
        self.bus = bus
        self.store = store
        self.tasks = tasks
        self.timeout_ms = timeout_ms
        self.book = TaskBook(rng, retention_ms=retention_ms)
        self._scopes: dict[str, trio.CancelScope] = {}  # task id -> its running turn
        self._turns: dict[tuple[str, str], str] = {}  # (tab name, turnId) -> task id
        bus.on_tab_gone(lambda tab: self.book.tab_gone(tab.name))
        rows = store.load_tasks()
        self.apply(self.book.restore([task_from_row(*r) for r in rows], wall_ms()))

    def apply(self, effects: Sequence[TaskEffect]) -> None:
        with self.store.batch():
            for e in effects:
                if isinstance(e, StoreTask):
                    self.store.save_task(e.task.id, e.task.created, task_row(e.task),
                                         [(ev.seq, ev.event, ev.data) for ev in e.events])
                elif isinstance(e, DropTasks):
                    self.store.drop_tasks(e.task_ids)
                elif isinstance(e, StopTask):
                    scope = self._scopes.get(e.task_id)
                    if scope is not None:
                        scope.cancel()
                elif isinstance(e, TabEvent):
                    self.bus.publish(e.channel, e.event, e.data, only=e.only, skip=e.skip)

    async def run(self) -> None:
        """Prune finished tasks past their retention, once a minute."""
        while True:
            await trio.sleep(PRUNE_EVERY_S)
            self.apply(self.book.prune(wall_ms()))

    # --- tab commands -----------------------------------------------------------------

    async def ask(self, tab: Tab | None, turn_id: str, prompt: str,
                  peer_id: str | None = None, *, client: str | None = None) -> bool:
        """A turn of this node's agent (``peer_id`` None) or of a peer's, as a task;
        waits for its end. Returns whether it answered (an ``error`` event says why
        not). ``client``: the MCP client that asks through this tab."""
        def legacy(event: str, data: dict[str, Any]) -> None:
            if tab is not None:
                tab.push("agent", event, {"turnId": turn_id, **data})

        name = tab.name if tab is not None else "api"
        try:
            if (name, turn_id) in self._turns:
                raise HubError("bad_request", "that turn is already running")
            if sum(1 for k in self._turns if k[0] == name) >= TURNS_PER_TAB:
                raise HubError("busy", f"at most {TURNS_PER_TAB} turns per tab at once")
            if not prompt.strip():
                raise HubError("bad_request", "the prompt is empty")
            try:
                asker = Asker("tab", name) if client is None else Asker("mcp", client)
                task, out = self.book.create(peer_id, asker, prompt, wall_ms())
            except LocalProtocolError as exc:
                raise HubError(exc.code, exc.message) from None
        except HubError as exc:
            legacy("error", {"code": exc.code, "message": exc.message})
            return False
        self.apply(out)
        legacy("started", {"taskId": task.id})
        ended = trio.Event()
        result: list[bool] = []

        async def body(show: Show) -> str:
            if peer_id is None:
                return await self.runtime.own_turn(task.id, prompt, show)
            return await self.runtime.peer_turn(peer_id, prompt, show)

        async def run() -> None:
            try:
                result.append(await self._run(
                    task.id, body, legacy,
                    start_now=peer_id is None and self.runtime.backend is not None))
            finally:
                ended.set()

        self._turns[(name, turn_id)] = task.id
        try:
            if not self.tasks.start_soon(run):
                self.apply(self.book.finish(task.id, "failed", wall_ms(),
                                            error="backend: the node is stopping"))
                legacy("error", {"code": "backend", "message": "the node is stopping"})
                return False
            await ended.wait()
            return result == [True]
        finally:
            self._turns.pop((name, turn_id), None)

    async def _run(self, task_id: str, body: Callable[[Show], Awaitable[str]],
                   legacy: Show, *, start_now: bool) -> bool:
        """The turn of a task. It is ``working`` from the start when our own backend
        runs it (``start_now``); a peer's turn is ``working`` from its first event (the
        peer took it), and a refusal before that is ``rejected``."""
        def show(event: str, data: dict[str, Any]) -> None:
            if event in STREAMED:
                self.apply(self.book.start(task_id, wall_ms()))  # once: the first one
                self.apply(self.book.add(task_id, event, data, wall_ms()))
            legacy(event, data)

        scope = self._scopes[task_id] = trio.CancelScope(
            deadline=trio.current_time() + self.timeout_ms / 1000)
        if start_now:
            self.apply(self.book.start(task_id, wall_ms()))
        try:
            with scope:
                try:
                    text = await body(show)
                except HubError as exc:
                    self._failed(task_id, exc.code, exc.message, legacy)
                    return False
                except Exception:
                    log.exception("agent task crashed task=%s", task_id)
                    self._failed(task_id, "internal", "the turn failed (see the node's "
                                 "log)", legacy)
                    return False
                self.apply(self.book.start(task_id, wall_ms()))  # an answer with no token
                self.apply(self.book.finish(task_id, "completed", wall_ms(), text=text))
                legacy("answer", {"text": text})
                return True
        finally:
            del self._scopes[task_id]
        task = self.book.get(task_id)
        if trio.current_time() >= scope.deadline and task is not None and not task.final:
            self.apply(self.book.finish(task_id, "failed", wall_ms(),
                                        error="timeout: the turn ran out of time"))
            legacy("error", {"code": "timeout", "message": "the turn timed out"})
        else:  # cancelled: the book already says so (cancel_task), or the node stops
            self.apply(self.book.finish(task_id, "canceled", wall_ms(), error="cancelled"))
            legacy("error", {"code": "cancelled", "message": "the turn was cancelled"})
        return False

    def _failed(self, task_id: str, code: str, message: str, legacy: Show) -> None:
        state = "rejected" if code in REJECTED else (
            "canceled" if code == "cancelled" else "failed")
        error = message if message.startswith(code) else f"{code}: {message}"
        self.apply(self.book.finish(task_id, state, wall_ms(), error=error))
        legacy("error", {"code": code, "message": message})

    def cancel_turn(self, tab: Tab | None, turn_id: str) -> bool:
        """The asking tab's ``cancel {turnId}``."""
        task_id = self._turns.get((tab.name if tab is not None else "api", turn_id))
        if task_id is None:
            return False
        self.cancel(task_id)
        return True

    def cancel(self, task_id: str) -> dict[str, Any]:
        try:
            self.apply(self.book.cancel(task_id, wall_ms()))
        except LocalProtocolError as exc:
            raise HubError(exc.code, exc.message) from None
        task = self.book.get(task_id)
        assert task is not None
        log.info("agent task cancelled task=%s", task_id)
        return task.summary()

    def follow(self, tab: Tab | None, task_id: str, from_seq: int) -> dict[str, Any]:
        """The task's summary; its events from ``from_seq`` are pushed first, then each
        new one (``task_event``), to this tab."""
        if tab is None:
            raise HubError("bad_request", "only a tab can follow a task")
        try:
            events = self.book.follow(tab.name, task_id, from_seq)
        except LocalProtocolError as exc:
            raise HubError(exc.code, exc.message) from None
        for ev in events:
            tab.push("agent", "task_event", ev.wire())
        task = self.book.get(task_id)
        assert task is not None
        return task.summary()

    def unfollow(self, tab: Tab | None, task_id: str) -> None:
        if tab is not None:
            self.book.unfollow(tab.name, task_id)


__all__ = ["AgentTasks"]
