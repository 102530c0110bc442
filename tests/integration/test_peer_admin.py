"""Managing peers and the node itself from a tab (SPEC 5, 9): a rename reaches every tab
and every connected peer and outlives a restart; forgetting a peer removes it (its
chats stay) and the two can pair again; PeerInfo rows carry ``status`` (connected,
connecting, offline, blocked), ``transport``, ``rtt_ms``, ``unread`` and
``last_message``. Real node processes on loopback."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from hd_node.client import NodeClient, NodeError

from .conftest import Cluster, NodeProcess, eventually, free_port

NEW_NAME = "Alice's laptop ☕"


class NamedOnce(NodeProcess):
    """A node started with ``--name`` only while ``give_name`` is set: a restart
    without it shows which name the node keeps."""

    give_name = True

    def command(self) -> list[str]:
        cmd = super().command()
        if not self.give_name:
            i = cmd.index("--name")
            del cmd[i:i + 2]
        return cmd


def named_once(cluster: Cluster, name: str) -> NamedOnce:
    node = NamedOnce(cluster.root, name, ui_port=free_port(), peer_port=free_port())
    cluster.nodes.append(node)  # stopped by the cluster fixture like every other node
    return node


async def row(tab: NodeClient, node_id: str) -> dict[str, Any] | None:
    peers = (await tab.request("network", "list_peers"))["peers"]
    return next((p for p in peers if p["node_id"] == node_id), None)


async def test_a_rename_reaches_every_tab_and_the_paired_peer_and_outlives_a_restart(
    cluster: Cluster,
) -> None:
    a = named_once(cluster, "alice")
    b = cluster.new("bob", ui_port=free_port(), peer_port=free_port())
    await cluster.start(a, b)
    await cluster.pair(a, b)
    async with a.client() as ta, a.client() as other, b.client() as tb:
        mark_a, mark_o, mark_b = ta.mark(), other.mark(), tb.mark()
        event, me = await ta.request_event("network", "rename", {"node_name": f"  {NEW_NAME} "})
        assert event == "self" and me["node_name"] == NEW_NAME
        assert me["node_id"] == a.node_id
        # Every tab is pushed `network self`, the renaming one too.
        for tab, mark in ((ta, mark_a), (other, mark_o)):
            pushed = await tab.wait_for("network", "self", lambda d: "req" not in d, since=mark)
            assert pushed["data"]["node_name"] == NEW_NAME
        # The peer learns it from a presence envelope: its row and its tabs.
        await tb.wait_for("network", "peer_update",
                          lambda d: d["peer"]["node_id"] == a.node_id
                          and d["peer"]["node_name"] == NEW_NAME, since=mark_b)
        assert (await b.peer(a.node_id) or {})["node_name"] == NEW_NAME
        # A bad name is a typed error; the socket stays open and the name as it was.
        for bad in ("", "   ", "x" * 65, "two\nlines"):
            with pytest.raises(NodeError) as exc:
                await ta.request("network", "rename", {"node_name": bad})
            assert exc.value.code == "bad_request"
        with pytest.raises(NodeError) as exc:
            await ta.request("network", "rename", {})
        assert exc.value.code == "bad_request"
        assert (await ta.request("network", "self"))["node_name"] == NEW_NAME
    # `hd-node id` reads the stored name while the node runs.
    assert (await a.cli("id")).check().json()["name"] == NEW_NAME

    # Restarted without a name, the node keeps the one it was given last; the peer,
    # back in session, still shows it.
    await a.astop()
    a.give_name = False
    await a.astart()
    assert (await a.http("GET", "/api/self")).json()["node_name"] == NEW_NAME
    await eventually(lambda: _named(b, a.node_id, NEW_NAME), timeout=20,
                     what="bob to show alice, reconnected, under her new name")
    # A name given at start wins for that run (and is the one kept from then on).
    await a.astop()
    a.give_name = True
    await a.astart()
    assert (await a.http("GET", "/api/self")).json()["node_name"] == "alice"
    await eventually(lambda: _named(b, a.node_id, "alice"), timeout=20,
                     what="bob to show alice under the name she was started with")


async def _named(node: NodeProcess, peer_id: str, name: str) -> bool:
    p = await node.peer(peer_id)
    return p is not None and p["status"] == "connected" and p["node_name"] == name


async def test_forget_removes_the_peer_keeps_the_chat_and_the_two_can_pair_again(
    cluster: Cluster,
) -> None:
    a, b = await cluster.spawn("alice", "bob")
    await cluster.pair(a, b)
    async with a.client() as ta, a.client() as other, b.client() as tb:
        mark = ta.mark()
        await ta.request("peerchat", "send", {"node_id": b.node_id, "text": "before we part"})
        await ta.wait_for("peerchat", "status", lambda d: d["status"] == "delivered",
                          since=mark)
        mark_o = other.mark()
        event, data = await ta.request_event("network", "forget", {"node_id": b.node_id})
        assert (event, data["node_id"]) == ("peer_removed", b.node_id)
        pushed = await other.wait_for("network", "peer_removed", since=mark_o)
        assert pushed["data"] == {"node_id": b.node_id}
        assert await row(ta, b.node_id) is None
        assert b.node_id not in {p["node_id"] for p in await a.peers()}
        # The session was closed: bob sees alice offline, and does not redial her.
        await eventually(lambda: _status(tb, a.node_id, "offline"), timeout=10,
                         what="bob to see alice offline")
        await trio.sleep(2.5)  # past the first reconnect delays (1 s, 2 s)
        assert await row(ta, b.node_id) is None
        assert (await row(tb, a.node_id) or {}).get("status") == "offline"
        # No late event (the session's end) brought the row back to alice's tabs.
        events = list(other.events)
        removed_at = events.index(pushed)
        assert not [ev for ev in events[removed_at:]
                    if ev["event"] == "peer_update" and ev["data"]["peer"]["node_id"]
                    == b.node_id]
        # The chat stays, named from its messages now that the record is gone.
        convs = (await ta.request("peerchat", "conversations"))["items"]
        assert [(c["node_id"], c["last"]["text"]) for c in convs] == [
            (b.node_id, "before we part")]
        history = await ta.request("peerchat", "open", {"node_id": b.node_id})
        assert [m["text"] for m in history["messages"]] == ["before we part"]
        # Forgetting someone unknown is a typed error.
        with pytest.raises(NodeError) as exc:
            await ta.request("network", "forget", {"node_id": b.node_id})
        assert exc.value.code == "not_found"
        with pytest.raises(NodeError) as exc:
            await ta.request("network", "forget", {"node_id": 7})
        assert exc.value.code == "bad_request"
    # They pair again, as the first time.
    await cluster.pair(a, b)
    again = await a.peer(b.node_id)
    assert again is not None and again["level"] == "trusted"


async def _status(tab: NodeClient, node_id: str, status: str) -> bool:
    p = await row(tab, node_id)
    return p is not None and p["status"] == status


async def test_peer_rows_carry_status_transport_rtt_unread_and_last_message(
    cluster: Cluster,
) -> None:
    a, b = await cluster.spawn("alice", "bob")
    await cluster.pair(a, b)
    async with a.client() as ta, b.client() as tb:
        first = await row(ta, b.node_id)
        assert first is not None
        assert {"unread", "last_message", "status", "transport", "rtt_ms"} <= first.keys()
        assert (first["status"], first["transport"], first["unread"],
                first["last_message"]) == ("connected", "direct", 0, None)

        async def has_rtt() -> bool:
            p = await row(ta, b.node_id)
            return p is not None and isinstance(p["rtt_ms"], int | float)

        await eventually(has_rtt, timeout=10, what="an RTT to bob")

        # A message from bob: alice's row for bob counts it and shows it.
        mark = ta.mark()
        await tb.request("peerchat", "send", {"node_id": a.node_id, "text": "x" * 200})
        upd = await ta.wait_for("network", "peer_update",
                                lambda d: d["peer"]["node_id"] == b.node_id
                                and d["peer"]["unread"] == 1, since=mark)
        last = upd["data"]["peer"]["last_message"]
        assert last["direction"] == "in" and last["text"] == "x" * 140
        assert set(last) == {"id", "direction", "text", "ts", "status", "seq"}
        # Read: the count goes back to 0, pushed.
        mark = ta.mark()
        await ta.request("peerchat", "read", {"node_id": b.node_id})
        await ta.wait_for("network", "peer_update",
                          lambda d: d["peer"]["node_id"] == b.node_id
                          and d["peer"]["unread"] == 0, since=mark)

        # Bob goes away: alice shows him offline, and connecting while she redials.
        mark = ta.mark()
        await b.astop()
        await ta.wait_for("network", "peer_update",
                          lambda d: d["peer"]["node_id"] == b.node_id
                          and d["peer"]["status"] == "connecting", since=mark, timeout=15)
        await eventually(lambda: _status(ta, b.node_id, "offline"), timeout=10,
                         what="bob offline between redials")
        gone = await row(ta, b.node_id)
        assert gone is not None and gone["transport"] is None and gone["rtt_ms"] is None
        assert gone["last_message"]["text"] == "x" * 140  # the chat figures stay

        # Block and unblock.
        blocked = await ta.request("network", "set_trust",
                                   {"node_id": b.node_id, "trusted": False, "blocked": True})
        assert blocked["peer"]["status"] == "blocked"
        unblocked = await ta.request("network", "set_trust",
                                     {"node_id": b.node_id, "trusted": False, "blocked": False})
        assert unblocked["peer"]["status"] == "offline"  # untrusted now: no redial either
