"""A lobby and two real nodes: rooms, guests without invites, the join ladder, the relay."""

from __future__ import annotations

import pytest
import trio

from hd_node.client import NodeClient, NodeError

from .conftest import Cluster, NodeProcess, eventually
from .servers import Servers, servers  # noqa: F401 - the fixture

NO_DIRECT = "[network]\nenableDirect = false\n"


async def _connected_to_lobby(node: NodeProcess, url: str) -> None:
    async with node.client() as tab:
        await tab.request("lobby", "connect", {"url": url})

        async def up() -> bool:
            return bool((await tab.request("lobby", "state"))["connected"])

        await eventually(up, timeout=10, what=f"{node.name} to register with the lobby")


async def _host_and_join(host: NodeProcess, guest: NodeProcess, policy: str = "open",
                         **join: str) -> tuple[dict, list[dict]]:
    async with host.client() as th:
        room = (await th.request("lobby", "create_room", {
            "name": "room", "visibility": "public", "joinPolicy": policy,
            **({"token": join["token"]} if policy == "token" else {})}))["room"]
    async with guest.client() as tg:
        joined = await tg.request("lobby", "join_room", {"roomId": room["id"], **join},
                                  timeout=20)
        # Every ladder step reached the tab, ending with the path that won (SPEC 8.2).
        steps = [e["data"] for e in tg.events
                 if (e["channel"], e["event"]) == ("network", "ladder")]
        assert steps and steps[-1]["step"] == "won", steps
        assert steps[-1]["kind"] == joined["via"] and steps[0]["step"] == "start"
        return joined, steps


async def _chat(a: NodeProcess, b: NodeProcess, text: str) -> None:
    async with a.client() as ta:
        await ta.request("peerchat", "send", {"node_id": b.node_id, "text": text})
        await ta.wait_for("peerchat", "status", lambda d: d["status"] == "delivered",
                          timeout=15)
    async with b.client() as tb:
        hist = await tb.request("peerchat", "open", {"node_id": a.node_id})
        assert text in [m["text"] for m in hist["messages"]]


async def test_a_guest_joins_an_open_room_and_reaches_the_host_directly_as_a_guest(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    lobby = await servers.lobby().astart()
    alice, bob = await cluster.spawn("alice", "bob")  # trust mode manual, never paired
    for node in (alice, bob):
        await _connected_to_lobby(node, lobby.url)
    joined, steps = await _host_and_join(alice, bob)
    assert joined["via"] == "direct" and joined["peer"]["node_id"] == alice.node_id
    # A listener bound to one address offers only that one: nothing else is dialled.
    assert {s["address"] for s in steps if s["kind"] == "direct"} == {alice.peer_url}
    assert joined["peer"]["level"] == "guest"
    await eventually(lambda: _level(alice, bob.node_id), timeout=10, what="bob's session")
    assert await _level(alice, bob.node_id) == "guest"
    await _chat(bob, alice, "hello from a guest")
    await _chat(alice, bob, "hello back")
    # A guest gets collab only on panes shared with it.
    async with bob.client() as tb, alice.client() as ta:
        await ta.request("collab", "op", {"paneKey": "secret", "baseRev": 0, "text": "s"})
        await tb.request("collab", "join", {"paneKey": "secret"})
        await trio.sleep(0.5)
        mine = await ta.request("collab", "join", {"paneKey": "secret"})
        assert bob.node_id not in mine["sharers"] and mine["text"] == "s"
    await _share_pane(alice, bob)
    assert (await alice.peer(bob.node_id) or {}).get("level") == "guest"


async def _share_pane(alice: NodeProcess, bob: NodeProcess) -> None:
    """Between guests sharing is explicit on both sides: each accepts the other's edits
    only on a pane it shared with it. Edits then flow both ways."""
    async with bob.client() as tb, alice.client() as ta:
        await ta.request("collab", "share", {"paneKey": "shared", "node_id": bob.node_id})
        await tb.request("collab", "share", {"paneKey": "shared", "node_id": alice.node_id})
        await ta.request("collab", "op", {"paneKey": "shared", "baseRev": 0, "text": "yes"})

        async def sees(tab: NodeClient, text: str) -> bool:
            state = await tab.request("collab", "join", {"paneKey": "shared"})
            return bool(state["text"] == text)

        await eventually(lambda: sees(tb, "yes"), timeout=10, what="alice's edit at bob")
        await tb.request("collab", "op", {"paneKey": "shared", "baseRev": 1, "text": "yes!"})
        await eventually(lambda: sees(ta, "yes!"), timeout=10, what="bob's edit at alice")


async def _level(node: NodeProcess, peer: str) -> str | None:
    p = await node.peer(peer)
    return p["level"] if p and p["status"] == "connected" else None


async def test_with_direct_disabled_the_join_falls_back_to_the_relay(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    lobby = await servers.lobby().astart()
    alice = cluster.new("alice", config=NO_DIRECT)
    bob = cluster.new("bob")
    await cluster.start(alice, bob)
    for node in (alice, bob):
        await _connected_to_lobby(node, lobby.url)
    t0 = trio.current_time()
    joined, steps = await _host_and_join(alice, bob)
    assert trio.current_time() - t0 < 3.0
    assert joined["via"] == "relay"
    assert {s["kind"] for s in steps} == {"relay"}  # no listener, no direct candidate
    assert (await bob.peer(alice.node_id) or {}).get("transport") == "relay"
    await _chat(bob, alice, "through the relay")
    await _chat(alice, bob, "and back")
    await _share_pane(alice, bob)
    assert (await bob.peer(alice.node_id) or {}).get("transport") == "relay"


async def test_lobby_commands_without_a_lobby_are_clean_errors(cluster: Cluster) -> None:
    (alice,) = await cluster.spawn("alice")
    async with alice.client() as tab:
        state = await tab.request("lobby", "state")
        assert state["connected"] is False
        try:
            await tab.request("lobby", "list_rooms")
            raise AssertionError("listed rooms without a lobby")
        except NodeError as exc:
            assert exc.code == "unreachable"
        assert set(await tab.request("system", "ping")) == {"req"}
        # A lobby that is not there: the tab hears that and why, and the node retries.
        mark = tab.mark()
        ans = await tab.request("lobby", "connect", {"url": "ws://127.0.0.1:1/lobby-ws"})
        assert (ans["status"], ans["connected"]) == ("connecting", False)
        pushed = await tab.wait_for("lobby", "state", lambda d: d["last_error"] is not None,
                                    timeout=10, since=mark)
        pushed = pushed["data"]
        assert pushed["status"] == "connecting" and pushed["last_error"]["code"] == "unreachable"
        ans = await tab.request("lobby", "disconnect")
        assert (ans["status"], ans["last_error"]) == ("disconnected", None)



async def test_a_command_during_a_reconnect_waits_for_the_registration(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    """A node registers again when its addresses change (its relay attached): a tab's
    command in that moment is answered once the node is back, not refused."""
    lobby = await servers.lobby().astart()
    (alice,) = await cluster.spawn("alice")
    await _connected_to_lobby(alice, lobby.url)
    async with alice.client() as tab:
        for i in range(3):
            await tab.request("lobby", "connect")  # the same lobby, registered again
            room = (await tab.request("lobby", "create_room", {
                "name": f"room {i}", "visibility": "public", "joinPolicy": "open"}))["room"]
            assert room["host"] == alice.node_id
        await tab.request("lobby", "disconnect")
        t0 = trio.current_time()
        with pytest.raises(NodeError) as no_lobby:
            await tab.request("lobby", "list_rooms")
        assert no_lobby.value.code == "unreachable" and trio.current_time() - t0 < 1


async def test_a_node_keeps_its_registration_by_its_heartbeats(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    """A lobby that drops a node silent for three heartbeats of 1 s still lists a real
    node after many of them: the node beats when its lobby client's deadline comes."""
    lobby = await servers.lobby(extra_args=["--heartbeat", "1"]).astart()
    alice, bob = await cluster.spawn("alice", "bob")
    for node in (alice, bob):
        await _connected_to_lobby(node, lobby.url)
    await trio.sleep(5.5)  # past the 3 s a silent node lasts
    async with bob.client() as tb:
        state = await tb.request("lobby", "state")
        assert state["connected"]
        assert alice.node_id in [e["node_id"] for e in state["directory"]], state
    for node in (alice, bob):  # never dropped and registered again
        log = node.log_text()
        assert log.count("lobby registered") == 1, log
        assert "silent for three heartbeats" not in log, log
