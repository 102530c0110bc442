"""Agent tasks (SPEC 6.3, 9 ``agent``): every agent turn is a task of the node, not of
the tab that started it.

A task is one turn: of this node's own agent (``target`` None) or of a peer's
(``target`` its node id), asked by a tab, a peer or an MCP client (``Asker``). It has
a state from the A2A set — ``submitted``, ``working``, ``input-required``, then one of
``completed``, ``canceled``, ``failed``, ``rejected`` — and an ordered stream of events
numbered from 0: ``state {state, error?}`` for each change, ``token {delta}``,
``tool_call``, ``tool_result`` and, once, ``answer {text}`` just before ``completed``.

``TaskBook`` holds them and decides, with these rules (each tested in
``tests/unit/test_agent_tasks.py``, the stream ones as properties):

- a state changes only along ``NEXT``; a final state is final: events and changes that
  come after it are dropped (a cancel racing the answer loses, or wins, as a whole);
- any tab may follow a task from any sequence number: it is answered with the events
  from there, and from then on gets each new event of the task as it is added, so what
  a follower sees is the task's stream from that number, in order, none twice — across
  any number of re-follows (a reloaded page follows again from where it was);
- every tab gets ``task`` (the task's summary, no events) when a task is created and at
  each change of state, so a task started in one tab shows in the others;
- a task whose stream passes ``max_task_chars`` or ``MAX_TASK_EVENTS`` fails
  (``backend: …``) and its turn is stopped; at most ``max_running`` tasks run at once
  (``busy``);
- finished tasks are kept for ``retention_ms`` and at most ``max_tasks`` of them (the
  oldest finished go first); running ones are never dropped;
- tasks loaded from storage that were still running when the node stopped are
  ``failed`` with ``interrupted``.

Pure: ``now`` (wall-clock ms, shown to people as when and how long) comes in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..effects import TabEvent
from ..errors import LocalProtocolError
from ..identity import Rng

STATES: Final = ("submitted", "working", "input-required", "completed", "canceled",
                 "failed", "rejected")
FINAL: Final = frozenset({"completed", "canceled", "failed", "rejected"})
NEXT: Final[Mapping[str, frozenset[str]]] = {
    "submitted": frozenset({"working", "canceled", "failed", "rejected"}),
    "working": frozenset({"input-required", "completed", "canceled", "failed"}),
    "input-required": frozenset({"working", "canceled", "failed"}),
}
EVENTS: Final = frozenset({"state", "token", "tool_call", "tool_result", "answer"})
ASKERS: Final = frozenset({"tab", "peer", "mcp"})
CHANNEL: Final = "agent"
RETENTION_MS: Final = 24 * 3600 * 1000
MAX_TASKS: Final = 256  # finished tasks kept (running ones are bounded by MAX_RUNNING)
MAX_RUNNING: Final = 64
MAX_TASK_CHARS: Final = 2 * 1024 * 1024  # characters of one task's events
MAX_TASK_EVENTS: Final = 20_000  # events of one task (a replay stays a few MB)
MAX_FOLLOWS: Final = 64  # tasks one tab follows at once
PROMPT_SUMMARY: Final = 200  # characters of the prompt in a summary


@dataclass(frozen=True, slots=True)
class Asker:
    kind: str  # "tab" | "peer" | "mcp"
    id: str  # the tab's name, the peer's node id, the MCP client's name

    def wire(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id}


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One event of a task's stream; ``data`` is a JSON object."""

    task_id: str
    seq: int
    event: str
    data: Mapping[str, Any] = field(hash=False)

    def wire(self) -> dict[str, Any]:
        return {"taskId": self.task_id, "seq": self.seq, "event": self.event,
                "data": dict(self.data)}


@dataclass(slots=True)
class Task:
    id: str
    target: str | None  # the peer whose agent answers; None: this node's own
    asker: Asker
    prompt: str
    created: int
    updated: int
    state: str = "submitted"
    error: str = ""
    events: list[TaskEvent] = field(default_factory=list)
    chars: int = 0

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def summary(self) -> dict[str, Any]:
        return {"taskId": self.id, "state": self.state, "target": self.target,
                "asker": self.asker.wire(), "prompt": self.prompt[:PROMPT_SUMMARY],
                "created": self.created, "updated": self.updated, "error": self.error,
                "events": len(self.events)}


@dataclass(frozen=True, slots=True)
class StoreTask:
    """Write the task's summary fields (its row); ``events`` are new ones to append."""

    task: Task
    events: tuple[TaskEvent, ...]


@dataclass(frozen=True, slots=True)
class StopTask:
    """Stop the turn of that task now (cancelled, or its stream grew too long)."""

    task_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class DropTasks:
    """Delete those tasks from storage (past their retention, or over the count)."""

    task_ids: tuple[str, ...]


TaskEffect = TabEvent | StoreTask | StopTask | DropTasks


class TaskBook:
    def __init__(self, rng: Rng, *, retention_ms: int = RETENTION_MS,
                 max_tasks: int = MAX_TASKS, max_running: int = MAX_RUNNING,
                 max_task_chars: int = MAX_TASK_CHARS) -> None:
        self.rng = rng
        self.retention_ms = retention_ms
        self.max_tasks = max_tasks
        self.max_running = max_running
        self.max_task_chars = max_task_chars
        self._tasks: dict[str, Task] = {}  # in creation order
        self._followers: dict[str, set[str]] = {}  # task id -> tab names
        self._follows: dict[str, set[str]] = {}  # tab name -> task ids

    # --- queries ----------------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def summaries(self) -> list[dict[str, Any]]:
        """Every task's summary, newest first."""
        return [t.summary() for t in reversed(self._tasks.values())]

    def running(self) -> int:
        return sum(1 for t in self._tasks.values() if not t.final)

    def followers(self, task_id: str) -> frozenset[str]:
        return frozenset(self._followers.get(task_id, ()))

    # --- life of a task ---------------------------------------------------------------

    def create(self, target: str | None, asker: Asker, prompt: str,
               now: int) -> tuple[Task, list[TaskEffect]]:
        """A new task in ``submitted``."""
        if asker.kind not in ASKERS:
            raise LocalProtocolError("bad_request", f"an asker is one of {sorted(ASKERS)}")
        if self.running() >= self.max_running:
            raise LocalProtocolError("busy", f"at most {self.max_running} agent tasks "
                                             "run at once")
        task_id = self.rng(8).hex()
        while task_id in self._tasks:  # an rng that repeats must not merge two tasks
            task_id = self.rng(8).hex()
        task = self._tasks[task_id] = Task(task_id, target, asker, prompt, now, now)
        return task, self._append(task, "state", {"state": "submitted"}, now, changed=True)

    def add(self, task_id: str, event: str, data: Mapping[str, Any],
            now: int) -> list[TaskEffect]:
        """A ``token``, ``tool_call`` or ``tool_result`` of a running task."""
        if event not in EVENTS - {"state", "answer"}:
            raise LocalProtocolError("bad_request", f"not an event a turn adds: {event}")
        task = self._tasks.get(task_id)
        if task is None or task.final:
            return []  # late: the task ended (a cancel won the race)
        out = self._append(task, event, data, now)
        if task.chars > self.max_task_chars or len(task.events) >= MAX_TASK_EVENTS - 2:
            out += self.finish(task_id, "failed", now, error=(
                f"backend: the answer's stream is over {self.max_task_chars} characters "
                f"or {MAX_TASK_EVENTS} events"))
            out.append(StopTask(task_id, "too_long"))
        return out

    def start(self, task_id: str, now: int) -> list[TaskEffect]:
        """The turn runs (``submitted`` → ``working``)."""
        return self._change(task_id, "working", now)

    def finish(self, task_id: str, state: str, now: int, *, text: str = "",
               error: str = "") -> list[TaskEffect]:
        """The turn ended: ``completed`` (with ``answer {text}`` first) or ``canceled``,
        ``failed``, ``rejected`` with ``error`` (a code, optionally ": " and a line)."""
        if state not in FINAL:
            raise LocalProtocolError("bad_request", f"not a final state: {state}")
        task = self._tasks.get(task_id)
        if task is None or task.final or state not in NEXT[task.state]:
            return []
        out: list[TaskEffect] = []
        if state == "completed":
            out += self._append(task, "answer", {"text": text}, now)
        task.error = "" if state == "completed" else error or state
        return out + self._change(task_id, state, now)

    def cancel(self, task_id: str, now: int) -> list[TaskEffect]:
        """A tab (or the asker) cancels the task: ``canceled`` and its turn is stopped.
        A task that already ended is answered ``bad_request``."""
        task = self._known(task_id)
        if task.final:
            raise LocalProtocolError("bad_request", f"the task is already {task.state}")
        out = self.finish(task_id, "canceled", now, error="cancelled: stopped on request")
        return [*out, StopTask(task_id, "cancelled")]

    def _change(self, task_id: str, state: str, now: int) -> list[TaskEffect]:
        task = self._tasks.get(task_id)
        if task is None or task.final or state not in NEXT[task.state]:
            return []
        task.state = state
        data: dict[str, Any] = {"state": state}
        if task.error and state in FINAL:
            data["error"] = task.error
        return self._append(task, "state", data, now, changed=True)

    def _append(self, task: Task, event: str, data: Mapping[str, Any], now: int, *,
                changed: bool = False) -> list[TaskEffect]:
        ev = TaskEvent(task.id, len(task.events), event, data)
        task.events.append(ev)
        task.chars += _chars(data)
        task.updated = now
        out: list[TaskEffect] = [StoreTask(task, (ev,))]
        followers = self._followers.get(task.id)
        if followers:
            out.append(TabEvent(CHANNEL, "task_event", ev.wire(), only=frozenset(followers)))
        if changed:
            out.append(TabEvent(CHANNEL, "task", task.summary()))
        return out

    # --- tabs -------------------------------------------------------------------------

    def follow(self, tab: str, task_id: str, from_seq: int) -> list[TaskEvent]:
        """``tab`` follows the task: the events from ``from_seq`` (past the end: none),
        and each new one as it comes."""
        task = self._known(task_id)
        if type(from_seq) is not int or from_seq < 0:
            raise LocalProtocolError("bad_request", "from is an integer >= 0")
        mine = self._follows.setdefault(tab, set())
        if task_id not in mine and len(mine) >= MAX_FOLLOWS:
            raise LocalProtocolError("busy", f"a tab follows at most {MAX_FOLLOWS} tasks")
        mine.add(task_id)
        self._followers.setdefault(task_id, set()).add(tab)
        return task.events[from_seq:]

    def unfollow(self, tab: str, task_id: str) -> None:
        self._follows.get(tab, set()).discard(task_id)
        followers = self._followers.get(task_id)
        if followers is not None:
            followers.discard(tab)
            if not followers:
                del self._followers[task_id]

    def tab_gone(self, tab: str) -> None:
        for task_id in self._follows.pop(tab, set()):
            self.unfollow(tab, task_id)

    def _known(self, task_id: object) -> Task:
        task = self._tasks.get(task_id) if type(task_id) is str else None
        if task is None:
            raise LocalProtocolError("not_found", "no such task (it may have expired)")
        return task

    # --- keeping ----------------------------------------------------------------------

    def prune(self, now: int) -> list[TaskEffect]:
        """Drop finished tasks past ``retention_ms``, then the oldest finished ones
        over ``max_tasks``."""
        done = [t for t in self._tasks.values() if t.final]
        drop = [t.id for t in done if now - t.updated >= self.retention_ms]
        keep = [t for t in done if t.id not in set(drop)]
        drop += [t.id for t in keep[:max(0, len(keep) - self.max_tasks)]]
        for task_id in drop:
            del self._tasks[task_id]
            for tab in self._followers.pop(task_id, set()):
                self._follows.get(tab, set()).discard(task_id)
        return [DropTasks(tuple(drop))] if drop else []

    def restore(self, tasks: Iterable[Task], now: int) -> list[TaskEffect]:
        """Tasks read back from storage, oldest first; those that were running when the
        node stopped fail (``interrupted``): their turn is gone."""
        out: list[TaskEffect] = []
        for task in tasks:
            self._tasks[task.id] = task
            if not task.final:
                task.error = "interrupted: the node stopped while the task ran"
                out += self._change(task.id, "failed", now)
        return out + self.prune(now)


def task_from_row(task_id: str, meta: Mapping[str, Any],
                  events: Sequence[tuple[str, Mapping[str, Any]]]) -> Task:
    """A task as storage holds it: its summary fields and its events in order."""
    asker = meta.get("asker") or {}
    task = Task(task_id, meta.get("target"), Asker(str(asker.get("kind", "tab")),
                                                  str(asker.get("id", ""))),
                str(meta.get("prompt", "")), int(meta.get("created", 0)),
                int(meta.get("updated", 0)), str(meta.get("state", "failed")),
                str(meta.get("error", "")))
    for seq, (event, data) in enumerate(events):
        task.events.append(TaskEvent(task_id, seq, event, data))
        task.chars += _chars(data)
    return task


def task_row(task: Task) -> dict[str, Any]:
    """What storage keeps of a task besides its events (``task_from_row`` reads it)."""
    return {"target": task.target, "asker": task.asker.wire(), "prompt": task.prompt,
            "created": task.created, "updated": task.updated, "state": task.state,
            "error": task.error}


def _chars(data: Mapping[str, Any]) -> int:
    return sum(len(v) if isinstance(v, str) else len(repr(v)) for v in data.values())
