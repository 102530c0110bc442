"""Agent tasks (``hd_protocol.apps.agent_tasks.TaskBook``): one test per rule of the
module's docstring, on the exact effects. The stream rules (follow from any number,
none lost or twice) are also properties in ``tests/property/test_agent_tasks_props.py``."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from hd_protocol.apps.agent_tasks import (
    FINAL,
    NEXT,
    STATES,
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
from hd_protocol.errors import LocalProtocolError

PEER = "p" * 16
TAB = Asker("tab", "tab-1")


def book(**kw: Any) -> TaskBook:
    counter = itertools.count(1)
    return TaskBook(lambda n: next(counter).to_bytes(n, "big"), **kw)


def states(effects: list[TaskEffect]) -> list[str]:
    return [e.data["state"] for e in effects if isinstance(e, TabEvent)
            and e.event == "task"]


def pushed(effects: list[TaskEffect], event: str = "task_event") -> list[TabEvent]:
    return [e for e in effects if isinstance(e, TabEvent) and e.event == event]


def test_the_states_are_the_a2a_set_and_final_ones_lead_nowhere() -> None:
    assert STATES == ("submitted", "working", "input-required", "completed", "canceled",
                      "failed", "rejected")
    assert {"completed", "canceled", "failed", "rejected"} == FINAL
    assert set(NEXT) == set(STATES) - FINAL
    assert all(NEXT[s] <= set(STATES) for s in NEXT)


def test_a_task_is_created_submitted_and_every_tab_hears_of_it() -> None:
    b = book()
    task, out = b.create(PEER, TAB, "hello", now=1000)
    assert task.state == "submitted" and task.target == PEER and task.created == 1000
    (store, summary) = out
    assert isinstance(store, StoreTask) and store.events[0].event == "state"
    assert store.events[0].seq == 0 and store.events[0].data == {"state": "submitted"}
    assert isinstance(summary, TabEvent) and summary.only is None and summary.skip == set()
    assert summary.data == {"taskId": task.id, "state": "submitted", "target": PEER,
                            "asker": {"kind": "tab", "id": "tab-1"}, "prompt": "hello",
                            "created": 1000, "updated": 1000, "error": "", "events": 1}
    assert b.summaries() == [summary.data]


def test_a_completed_task_streams_its_events_in_order_then_answer_then_completed() -> None:
    b = book()
    task, _ = b.create(None, TAB, "q", now=0)
    b.start(task.id, 1)
    b.add(task.id, "token", {"delta": "a "}, 2)
    b.add(task.id, "tool_call", {"id": "c1", "name": "list_peers", "arguments": {}}, 3)
    b.add(task.id, "tool_result", {"id": "c1", "ok": True, "content": "[]"}, 4)
    out = b.finish(task.id, "completed", 5, text="a b")
    assert states(out) == ["completed"]
    assert [(e.seq, e.event) for e in task.events] == [
        (0, "state"), (1, "state"), (2, "token"), (3, "tool_call"), (4, "tool_result"),
        (5, "answer"), (6, "state")]
    assert task.events[5].data == {"text": "a b"}
    assert task.events[6].data == {"state": "completed"} and task.error == ""


def test_states_change_only_along_next_and_a_final_state_is_final() -> None:
    b = book()
    task, _ = b.create(PEER, TAB, "q", now=0)
    assert b.finish(task.id, "completed", 1, text="x") == []  # submitted -/-> completed
    assert task.state == "submitted"
    assert states(b.finish(task.id, "rejected", 2, error="busy: two running")) == [
        "rejected"]
    assert task.events[-1].data == {"state": "rejected", "error": "busy: two running"}
    for late in (b.start(task.id, 3), b.add(task.id, "token", {"delta": "x"}, 3),
                 b.finish(task.id, "failed", 3, error="timeout")):
        assert late == []
    assert task.state == "rejected" and len(task.events) == 2
    with pytest.raises(LocalProtocolError):
        b.finish(task.id, "working", 4)  # not a final state


def test_a_cancel_ends_the_task_canceled_and_stops_its_turn_once() -> None:
    b = book()
    task, _ = b.create(PEER, TAB, "q", now=0)
    b.start(task.id, 1)
    out = b.cancel(task.id, 2)
    assert states(out) == ["canceled"] and out[-1] == StopTask(task.id, "cancelled")
    assert task.error.startswith("cancelled")
    with pytest.raises(LocalProtocolError, match="already canceled"):
        b.cancel(task.id, 3)
    assert b.finish(task.id, "completed", 3, text="late") == []  # the answer lost the race
    with pytest.raises(LocalProtocolError, match="no such task"):
        b.cancel("nope", 3)


def test_a_follower_gets_the_events_from_its_number_then_each_new_one_alone() -> None:
    b = book()
    task, _ = b.create(PEER, TAB, "q", now=0)
    b.start(task.id, 1)
    b.add(task.id, "token", {"delta": "one "}, 2)
    assert [e.seq for e in b.follow("tab-2", task.id, 1)] == [1, 2]
    assert b.follow("tab-3", task.id, 99) == []  # past the end: nothing, but following
    out = b.add(task.id, "token", {"delta": "two"}, 3)
    (ev,) = pushed(out)
    assert ev.only == {"tab-2", "tab-3"}
    assert ev.data == {"taskId": task.id, "seq": 3, "event": "token",
                       "data": {"delta": "two"}}
    b.unfollow("tab-2", task.id)
    b.tab_gone("tab-3")
    assert pushed(b.add(task.id, "token", {"delta": "!"}, 4)) == []
    assert b.followers(task.id) == set()


def test_follow_refuses_unknown_tasks_bad_numbers_and_too_many_follows() -> None:
    b = book()
    with pytest.raises(LocalProtocolError, match="no such task"):
        b.follow("t", "missing", 0)
    task, _ = b.create(None, TAB, "q", now=0)
    with pytest.raises(LocalProtocolError, match="integer"):
        b.follow("t", task.id, -1)
    ids = [task.id, *(b.create(None, TAB, f"q{i}", now=0)[0].id for i in range(63))]
    for task_id in ids:
        b.follow("t", task_id, 0)
    b.finish(ids[1], "failed", 1, error="backend")  # frees a place to run, not to follow
    with pytest.raises(LocalProtocolError, match="at most 64"):
        b.follow("t", b.create(None, TAB, "one more", now=0)[0].id, 0)
    assert len(b.follow("t", task.id, 0)) == 1  # the same task again is not one more


def test_a_stream_over_its_budget_fails_the_task_and_stops_its_turn() -> None:
    b = book(max_task_chars=100)
    task, _ = b.create(PEER, TAB, "q", now=0)
    b.start(task.id, 1)
    assert b.add(task.id, "token", {"delta": "x" * 50}, 2)[-1] != StopTask(task.id,
                                                                           "too_long")
    out = b.add(task.id, "token", {"delta": "y" * 80}, 3)
    assert states(out) == ["failed"] and out[-1] == StopTask(task.id, "too_long")
    assert task.error.startswith("backend: ") and "100 characters" in task.error
    assert [e.event for e in task.events[-2:]] == ["token", "state"]  # nothing lost


def test_at_most_max_running_tasks_run_and_only_turn_events_can_be_added() -> None:
    b = book(max_running=2)
    a, _ = b.create(None, TAB, "a", now=0)
    b.create(None, TAB, "b", now=0)
    with pytest.raises(LocalProtocolError) as exc:
        b.create(None, TAB, "c", now=0)
    assert exc.value.code == "busy"
    b.finish(a.id, "failed", 1, error="backend")
    b.create(None, TAB, "c", now=2)  # a finished task frees its place
    with pytest.raises(LocalProtocolError):
        b.add(a.id, "state", {"state": "working"}, 3)
    with pytest.raises(LocalProtocolError):
        b.create(None, Asker("robot", "x"), "q", now=0)


def test_finished_tasks_are_kept_for_their_retention_and_at_most_max_tasks() -> None:
    b = book(retention_ms=1000, max_tasks=2)
    running, _ = b.create(None, TAB, "runs", now=0)
    done = []
    for i in range(4):
        t, _ = b.create(None, TAB, f"d{i}", now=i)
        b.finish(t.id, "failed", 10 + i, error="backend")
        done.append(t.id)
    (drop,) = b.prune(now=20)
    assert drop == DropTasks((done[0], done[1]))  # the oldest finished over the count
    assert {s["taskId"] for s in b.summaries()} == {running.id, done[2], done[3]}
    b.follow("t", done[3], 0)
    (drop,) = b.prune(now=1013)  # past retention (updated at 13)
    assert drop == DropTasks((done[2], done[3]))
    assert [s["taskId"] for s in b.summaries()] == [running.id]  # running: never dropped
    assert b.prune(now=10**9) == [] and b.followers(done[3]) == set()


def test_tasks_from_storage_come_back_and_running_ones_fail_interrupted() -> None:
    b = book()
    t1, _ = b.create(PEER, TAB, "q1", now=0)
    b.start(t1.id, 1)
    b.add(t1.id, "token", {"delta": "half"}, 2)
    t2, _ = b.create(None, Asker("peer", PEER), "q2", now=3)
    b.start(t2.id, 4)
    b.finish(t2.id, "completed", 5, text="done")
    rows = [(t.id, task_row(t), [(e.event, dict(e.data)) for e in t.events])
            for t in (t1, t2)]
    again = book()
    out = again.restore([task_from_row(*r) for r in rows], now=100)
    assert states(out) == ["failed"]
    back1, back2 = again.get(t1.id), again.get(t2.id)
    assert back1 is not None and back2 is not None
    assert back1.state == "failed" and back1.error.startswith("interrupted")
    assert [e.event for e in back1.events] == ["state", "state", "token", "state"]
    assert back2.state == "completed" and back2.asker == Asker("peer", PEER)
    assert [e.data for e in back2.events] == [e.data for e in t2.events]
    assert [e.seq for e in again.follow("t", t1.id, 2)] == [2, 3]
