"""What a page shows before anything is opened (SPEC 6.1, 6.2, 9): the conversation list
with unread counts and previews, kept in the database; history in pages (``open
{before, limit}`` → ``more``); the list of panes with their sharers and members."""

from __future__ import annotations

from typing import Any

import pytest

from hd_node.client import NodeClient, NodeError

from ..conftest import Cluster, NodeProcess, free_port
from .conftest import pair, tabs


def _fixed_ports(cluster: Cluster, name: str) -> NodeProcess:
    return cluster.new(name, ui_port=free_port(), peer_port=free_port())


async def _send_all(tab: NodeClient, peer: str, texts: list[str]) -> None:
    """Send each text and wait until the last one is delivered (acked in order)."""
    mark = tab.mark()
    ids = []
    for text in texts:
        await tab.request("peerchat", "send", {"node_id": peer, "text": text})
    for ev in list(tab.events)[mark:]:
        if ev["event"] == "message" and ev["data"]["direction"] == "out":
            ids.append(ev["data"]["id"])
    assert len(ids) == len(texts)
    await tab.wait_for("peerchat", "status",
                       lambda d: d["id"] == ids[-1] and d["status"] == "delivered",
                       since=mark, timeout=20)


async def test_conversations_with_unread_and_a_preview_are_there_for_a_fresh_tab(
    cluster: Cluster,
) -> None:
    a, b = _fixed_ports(cluster, "alice"), _fixed_ports(cluster, "bob")
    await cluster.start(a, b)
    await pair(a, b)
    long = "a long one " * 20
    async with tabs(a) as (ta,):  # bob has no tab open while the messages arrive
        await _send_all(ta, b.node_id, ["hello", "are you there?", long])

    async def check(tab: NodeClient) -> None:
        [conv] = (await tab.request("peerchat", "conversations"))["items"]
        assert (conv["node_id"], conv["node_name"], conv["unread"]) == (a.node_id, "alice", 3)
        last = conv["last"]
        assert (last["direction"], last["status"], last["text"]) == (
            "in", "delivered", long.strip()[:140])
        peers = (await tab.request("network", "list_peers"))["peers"]
        [row] = [p for p in peers if p["node_id"] == a.node_id]
        assert row["unread"] == 3 and row["last_message"] == last

    async with tabs(b) as (tb,):
        await check(tb)
    # From the database after a restart, before the session is back.
    await b.astop()
    await b.astart()
    async with tabs(b) as (tb,):
        await check(tb)
        await tb.request("peerchat", "read", {"node_id": a.node_id})
        [conv] = (await tb.request("peerchat", "conversations"))["items"]
        assert conv["unread"] == 0
    # Alice's own list: her messages, nothing unread, newest activity first.
    async with tabs(a) as (ta,):
        [conv] = (await ta.request("peerchat", "conversations"))["items"]
        assert (conv["node_id"], conv["node_name"], conv["unread"]) == (b.node_id, "bob", 0)
        assert conv["last"]["direction"] == "out"


async def test_history_comes_in_pages_with_before_limit_and_more(cluster: Cluster) -> None:
    a, b = await cluster.spawn("alice", "bob")
    await pair(a, b)
    texts = [f"message {i}" for i in range(1, 131)]
    async with tabs(a, b) as (ta, tb):
        await _send_all(ta, b.node_id, texts)
        for tab, peer in ((ta, b.node_id), (tb, a.node_id)):
            first = await tab.request("peerchat", "open", {"node_id": peer})
            assert [m["text"] for m in first["messages"]] == texts[-50:]
            assert first["more"] is True and first["node_id"] == peer
            seen: list[dict[str, Any]] = first["messages"]
            page = first
            while page["more"]:
                page = await tab.request("peerchat", "open", {
                    "node_id": peer, "before": page["messages"][0]["seq"], "limit": 40})
                assert len(page["messages"]) <= 40
                assert all(m["seq"] < seen[0]["seq"] for m in page["messages"])
                seen = page["messages"] + seen
            assert [m["text"] for m in seen] == texts
            small = await tab.request("peerchat", "open", {"node_id": peer, "limit": 1})
            assert [m["text"] for m in small["messages"]] == [texts[-1]] and small["more"]
            for bad in ({"limit": 0}, {"limit": 201}, {"before": -1}, {"limit": "5"}):
                with pytest.raises(NodeError) as exc:
                    await tab.request("peerchat", "open", {"node_id": peer, **bad})
                assert exc.value.code == "bad_request"


async def test_the_pane_list_shows_a_shared_pane_with_its_sharers_and_members(
    cluster: Cluster,
) -> None:
    a, b = await cluster.spawn("alice", "bob")
    await pair(a, b)
    async with tabs(a, a, b) as (ta, watcher, tb):
        assert (await ta.request("collab", "list"))["panes"] == []
        mark = watcher.mark()
        await ta.request("collab", "share", {"paneKey": "plan", "node_id": b.node_id})
        await ta.request("collab", "op", {"paneKey": "plan", "baseRev": 0, "text": "step 1"})
        # Every tab is pushed the list when the set of panes or sharers changes.
        pushed = await watcher.wait_for("collab", "panes", lambda d: any(
            p["paneKey"] == "plan" and p["sharers"] == [b.node_id] for p in d["panes"]),
            since=mark)
        assert pushed["data"]["panes"][0]["paneKey"] == "plan"
        joined = await ta.request("collab", "join", {"paneKey": "plan"})
        assert len(joined["members"]) == 1  # this tab, by the name the node gave it
        [plan] = (await ta.request("collab", "list"))["panes"]
        assert plan == {"paneKey": "plan", "rev": 1, "author": a.node_id,
                        "sharers": [b.node_id], "members": joined["members"]}
        # Sharing is mutual: bob lists it too, shared with alice.
        # Bob's tab has another pane open: it is told who wrote where, not the text.
        written = await tb.wait_for("collab", "written", lambda d: d["paneKey"] == "plan")
        assert written["data"] == {"paneKey": "plan", "rev": 1, "author": a.node_id,
                                   "from": a.node_id}
        [theirs] = (await tb.request("collab", "list"))["panes"]
        assert (theirs["paneKey"], theirs["rev"], theirs["sharers"]) == (
            "plan", 1, [a.node_id])



async def test_a_burst_of_chat_messages_pushes_the_peers_row_once_per_tick_not_per_message(
    cluster: Cluster,
) -> None:
    """A peer's row (``peer_update``, with ``unread`` and ``last_message``) follows a
    burst of messages in a few pushes, the last one right (issue 20: per message, the
    pushes to every tab were most of what a chat message cost the node)."""
    a, b = await cluster.spawn("alice", "bob")
    await pair(a, b)
    n = 60
    async with tabs(a, b) as (ta, tb):
        mark = tb.mark()
        for i in range(n):  # a burst: the answers are not waited for
            await ta.send("peerchat", "send", {"node_id": b.node_id, "text": f"m{i}"})
        row = await tb.wait_for("network", "peer_update", lambda d: d["peer"]["node_id"]
                                == a.node_id and (d["peer"]["last_message"] or {}).get(
                                    "text") == f"m{n - 1}", since=mark, timeout=20)
        assert row["data"]["peer"]["unread"] == n
        rows = [ev for ev in list(tb.events)[mark:] if ev["event"] == "peer_update"
                and ev["data"]["peer"]["node_id"] == a.node_id]
        messages = [ev for ev in list(tb.events)[mark:] if ev["event"] == "message"]
        assert len(messages) == n
        assert len(rows) <= n // 3, [r["data"]["peer"]["unread"] for r in rows]
