"""Agent turns as tasks of the node (SPEC 6.3, 9 ``agent``), between real nodes: a turn
outlives the tab that started it, a new tab follows it from any number and sees each
token once, any tab cancels it (and the peer's backend process is gone), every tab
hears each change of state, and tasks are kept across a restart of the node."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from hd_node.client import NodeClient, NodeError

from .conftest import Cluster, NodeProcess, eventually
from .test_agents import SLOW, _alive, _command_backend

DEMO_REMOTE = "[network]\nagentBackend = \"demo\"\nallowRemoteAgent = true\n"


def _task_events(tab: NodeClient, task_id: str) -> list[dict[str, Any]]:
    return [e["data"] for e in tab.events if e.get("channel") == "agent"
            and e.get("event") == "task_event" and e["data"]["taskId"] == task_id]


def _states(tab: NodeClient, task_id: str) -> list[str]:
    """The states the tab was told of (``task`` pushes), in order, repeats folded."""
    seen: list[str] = []
    for e in tab.events:
        if e.get("channel") == "agent" and e.get("event") == "task" \
                and e["data"]["taskId"] == task_id and e["data"]["state"] not in seen[-1:]:
            seen.append(e["data"]["state"])
    return seen


async def _started(tab: NodeClient, turn_id: str) -> str:
    ev = await tab.wait_for("agent", "started",
                            lambda d: d.get("turnId") == turn_id, timeout=15)
    return str(ev["data"]["taskId"])


async def _slow_peer(cluster: Cluster, tmp_path: Path) -> tuple[NodeProcess, NodeProcess, Path]:
    pidfile = tmp_path / "slow.pid"
    backend = _command_backend(tmp_path, "slow", SLOW.format(pidfile=pidfile))
    alice = cluster.new("alice")
    bob = cluster.new("bob", config=f"[network]\nagentBackend = '{backend}'\n"
                                    "allowRemoteAgent = true\n")
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    return alice, bob, pidfile


async def test_a_turn_outlives_its_tab_a_new_tab_follows_it_and_another_cancels_it(
    cluster: Cluster, tmp_path: Path,
) -> None:
    alice, bob, pidfile = await _slow_peer(cluster, tmp_path)
    async with alice.client() as watcher:  # a second tab, open all along
        async with alice.client() as tab:
            await tab.send("agent", "ask_peer", {"turnId": "t", "node_id": bob.node_id,
                                                 "prompt": "take your time", "req": "r1"})
            task_id = await _started(tab, "t")
            await eventually(lambda: _tokens_at_least(tab, "t", 3), timeout=15,
                             what="tokens from bob's slow backend in the first tab")
        # The first tab is gone (a reload): the turn goes on.
        pid = int(pidfile.read_text())
        await trio.sleep(0.5)
        assert _alive(pid)
        async with alice.client() as again:
            listed = (await again.request("agent", "tasks", {}))["tasks"]
            (row,) = [t for t in listed if t["taskId"] == task_id]
            assert row["state"] == "working" and row["target"] == bob.node_id
            assert row["asker"]["kind"] == "tab" and row["prompt"] == "take your time"
            answer = await again.request("agent", "follow", {"taskId": task_id,
                                                             "fromSeq": 0})
            assert answer["task"]["taskId"] == task_id
            await eventually(lambda: _tokens_at_least(again, task_id, 12, task=True),
                             timeout=15, what="live tokens after the replay")
            # A second tab cancels it; the peer's backend process is stopped.
            cancelled = await watcher.request("agent", "cancel_task", {"taskId": task_id})
            assert cancelled["state"] == "canceled"
            await eventually(lambda: _gone(pid), timeout=10, what="bob's backend to stop")
            await eventually(lambda: _state_event(again, task_id, "canceled"), timeout=10,
                             what="the canceled state in the following tab")
            events = _task_events(again, task_id)
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(len(seqs))), "a number lost or repeated"
        states = [e["data"]["state"] for e in events if e["event"] == "state"]
        assert states == ["submitted", "working", "canceled"]
        tokens = [e["data"]["delta"] for e in events if e["event"] == "token"]
        assert tokens == [f"t{i} " for i in range(len(tokens))]  # each once, in order
        assert _states(watcher, task_id) == ["submitted", "working", "canceled"]
    assert "reason=cancelled" in bob.log_text()


async def test_a_finished_task_is_listed_with_its_stream_after_the_node_restarts(
    cluster: Cluster,
) -> None:
    alice = cluster.new("alice")
    bob = cluster.new("bob", config=DEMO_REMOTE)
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    async with alice.client() as tab:
        done = await tab.request("agent", "ask_peer", {"turnId": "q", "node_id": bob.node_id,
                                                       "prompt": "hello there"}, timeout=30)
        assert done["ok"] is True
        task_id = await _started(tab, "q")
    await cluster.stop(alice)
    await cluster.start(alice)
    async with alice.client() as tab:
        (row,) = [t for t in (await tab.request("agent", "tasks", {}))["tasks"]
                  if t["taskId"] == task_id]
        assert row["state"] == "completed"
        await tab.request("agent", "follow", {"taskId": task_id, "fromSeq": 0})
        await eventually(lambda: _state_event(tab, task_id, "completed"), timeout=10,
                         what="the replayed stream")
        events = _task_events(tab, task_id)
    (answer,) = [e["data"]["text"] for e in events if e["event"] == "answer"]
    assert f"demo-agent@{bob.node_id}: hello there" in answer
    assert "".join(e["data"]["delta"] for e in events if e["event"] == "token") == answer
    assert [e["data"]["state"] for e in events if e["event"] == "state"] == [
        "submitted", "working", "completed"]
    st = os.stat(alice.data_dir / "node.db")
    assert st.st_mode & 0o077 == 0


async def test_a_refused_request_is_rejected_and_bad_task_commands_get_errors(
    cluster: Cluster,
) -> None:
    alice = cluster.new("alice")
    bob = cluster.new("bob", config="[network]\nagentBackend = \"demo\"\n")  # no remote
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    async with alice.client() as tab:
        done = await tab.request("agent", "ask_peer", {"turnId": "n", "node_id": bob.node_id,
                                                       "prompt": "hi"}, timeout=30)
        assert done["ok"] is False
        task_id = await _started(tab, "n")
        (row,) = [t for t in (await tab.request("agent", "tasks", {}))["tasks"]
                  if t["taskId"] == task_id]
        assert row["state"] == "rejected" and row["error"].startswith("not_allowed")
        for data, code in (({"taskId": "nope"}, "not_found"),
                           ({"taskId": task_id}, "bad_request")):  # already ended
            with pytest.raises(NodeError) as exc:
                await tab.request("agent", "cancel_task", data)
            assert exc.value.code == code, exc.value
        for seq in (-1, "0", True):
            with pytest.raises(NodeError) as exc:
                await tab.request("agent", "follow", {"taskId": task_id, "fromSeq": seq})
            assert exc.value.code == "bad_request"
        assert (await tab.request("system", "ping", {})) is not None  # the tab goes on


async def _tokens_at_least(tab: NodeClient, key: str, n: int, *, task: bool = False) -> bool:
    if task:
        return sum(1 for e in _task_events(tab, key) if e["event"] == "token") >= n
    return sum(1 for e in tab.events if e.get("channel") == "agent"
               and e.get("event") == "token"
               and (e.get("data") or {}).get("turnId") == key) >= n


async def _gone(pid: int) -> bool:
    return not _alive(pid)


async def _state_event(tab: NodeClient, task_id: str, state: str) -> bool:
    return any(e["event"] == "state" and e["data"]["state"] == state
               for e in _task_events(tab, task_id))
