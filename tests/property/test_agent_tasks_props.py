"""Properties of the agent task book's streams (``hd_protocol.apps.agent_tasks``): under
any interleaving of a turn's events, follows from any number, unfollows, tabs closing
(a reload) and the end of the task, no follower loses an event or gets one twice."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol.apps.agent_tasks import Asker, StopTask, TaskBook, TaskEffect
from hd_protocol.effects import TabEvent

TABS = ("a", "b", "c")

steps = st.lists(st.one_of(
    st.tuples(st.just("token"), st.text(max_size=4)),
    st.tuples(st.just("follow"), st.sampled_from(TABS), st.integers(0, 40)),
    st.tuples(st.just("resume"), st.sampled_from(TABS)),
    st.tuples(st.just("unfollow"), st.sampled_from(TABS)),
    st.tuples(st.just("reload"), st.sampled_from(TABS)),
    st.tuples(st.just("end"), st.sampled_from(["completed", "failed", "cancel"])),
), max_size=60)


def _book() -> TaskBook:
    counter = itertools.count(1)
    return TaskBook(lambda n: next(counter).to_bytes(n, "big"), max_task_chars=60)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_what_a_follower_gets_is_the_stream_from_its_number_in_order_once(
        program: list[tuple[Any, ...]]) -> None:
    b = _book()
    task, _ = b.create(None, Asker("tab", "a"), "q", now=0)
    b.start(task.id, 0)
    # Per tab: the number it followed from (None: not following) and what it got since.
    since: dict[str, int | None] = dict.fromkeys(TABS)
    got: dict[str, list[int]] = {t: [] for t in TABS}
    page_next = dict.fromkeys(TABS, 0)  # a page that resumes from what it has seen
    page_seen: dict[str, list[int]] = {t: [] for t in TABS}

    def deliver(out: list[TaskEffect]) -> None:
        for e in out:
            if isinstance(e, TabEvent) and e.event == "task_event":
                assert e.only is not None
                for tab in e.only:
                    got[tab].append(e.data["seq"])
                    see(tab, e.data["seq"])

    def see(tab: str, seq: int) -> None:
        if seq >= page_next[tab]:  # what a page does with a number it already has
            assert seq == page_next[tab], "a gap in what the page was sent"
            page_seen[tab].append(seq)
            page_next[tab] = seq + 1

    def follow(tab: str, from_seq: int) -> None:
        since[tab], got[tab] = from_seq, []
        for ev in b.follow(tab, task.id, from_seq):
            got[tab].append(ev.seq)
            see(tab, ev.seq)

    for step in program:
        if step[0] == "token":
            deliver(b.add(task.id, "token", {"delta": step[1]}, 1))
        elif step[0] == "follow":
            if step[2] <= page_next[step[1]]:  # a page never asks past what it has
                follow(step[1], step[2])
        elif step[0] == "resume":
            follow(step[1], page_next[step[1]])
        elif step[0] == "unfollow":
            b.unfollow(step[1], task.id)
            since[step[1]] = None
        elif step[0] == "reload":
            b.tab_gone(step[1])
            since[step[1]] = None
        elif step[1] == "cancel":
            if not task.final:
                out = b.cancel(task.id, 2)
                assert StopTask(task.id, "cancelled") in out
                deliver(out)
        else:
            deliver(b.finish(task.id, step[1], 2, text="t", error="backend"))
    seqs = [e.seq for e in task.events]
    assert seqs == list(range(len(seqs)))
    for tab in TABS:
        if since[tab] is not None:  # still following: exactly the stream from its number
            assert got[tab] == seqs[since[tab]:]
        # A page that resumed from its own count saw a prefix of the stream, each once.
        assert page_seen[tab] == seqs[:page_next[tab]]
    assert sum(1 for e in task.events if e.event == "state"
               and e.data["state"] in ("completed", "failed", "canceled")) <= 1
