"""Pairing two real nodes with the CLI, and one hub per node (SPEC 4.2, 9)."""

from __future__ import annotations

from typing import Any

import trio

from .conftest import Cluster, NodeProcess, connected, eventually


def _connected_trusted(peers: list[dict[str, Any]], node_id: str) -> bool:
    return any(p["node_id"] == node_id and p["status"] == "connected"
               and p["level"] == "trusted" for p in peers)


def strip(peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PeerInfo without the fields that change on their own (last_seen, rtt_ms)."""
    return [{k: v for k, v in p.items() if k not in ("last_seen", "rtt_ms")} for p in peers]


async def test_invite_then_pair_connects_both_nodes_as_trusted_within_5s(
    cluster: Cluster,
) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    async with alice.client() as tab_a, bob.client() as tab_b:
        invite = await alice.invite()
        started = trio.current_time()
        (await bob.cli("pair", invite)).check()

        async def both_listed() -> bool:
            async with trio.open_nursery() as n:
                out: dict[str, list[dict[str, Any]]] = {}

                async def peers_of(node: NodeProcess) -> None:
                    out[node.name] = (await node.cli("peers")).check().json()

                n.start_soon(peers_of, alice)
                n.start_soon(peers_of, bob)
            return (_connected_trusted(out["alice"], bob.node_id)
                    and _connected_trusted(out["bob"], alice.node_id))

        await eventually(both_listed, timeout=5.0, what="`hd-node peers` on both nodes")
        assert trio.current_time() - started < 5.0

        # The tabs were open before pairing: each saw the other node come up.
        for tab, other in ((tab_a, bob), (tab_b, alice)):
            ev = await tab.wait_for(
                "network", "peer_update",
                lambda d, o=other: d["peer"]["node_id"] == o.node_id
                and d["peer"]["status"] == "connected",
                timeout=5.0,
            )
            assert ev["data"]["peer"]["level"] == "trusted"
            assert ev["data"]["peer"]["node_name"] in ("alice", "bob")


async def test_pair_output_names_the_inviter_with_its_pinned_key(cluster: Cluster) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    ident = (await alice.cli("id")).check().json()
    res = (await bob.cli("pair", await alice.invite())).check()
    out = res.json()
    assert out["ok"] is True
    assert out["peer"]["node_id"] == alice.node_id == ident["node_id"]
    assert out["peer"]["public_key"] == ident["public_key"]
    assert out["peer"]["level"] == "trusted"


async def test_two_tabs_share_one_hub_same_peers_same_events_one_session(
    cluster: Cluster,
) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    async with alice.client() as tab1, alice.client() as tab2:
        await cluster.pair(alice, bob)
        # Both tabs saw the same peer_update for bob.
        evs = []
        for tab in (tab1, tab2):
            ev = await tab.wait_for(
                "network", "peer_update",
                lambda d: d["peer"]["node_id"] == bob.node_id
                and d["peer"]["status"] == "connected",
                timeout=5.0,
            )
            evs.append(ev["data"]["peer"])
        assert {(p["node_id"], p["status"], p["level"]) for p in evs} == {
            (bob.node_id, "connected", "trusted")}

        async def views() -> tuple[list[Any], list[Any]]:
            a = await tab1.request("network", "list_peers")
            b = await tab2.request("network", "list_peers")
            return a["peers"], b["peers"]

        peers1, peers2 = await views()
        assert strip(peers1) == strip(peers2)
        assert [p["node_id"] for p in peers1 if p["status"] == "connected"] == [bob.node_id]
        assert await alice.metric("hd_sessions") == 1.0
        assert await alice.metric("hd_tabs") == 2.0

        # A second tab asks for another connection to bob: still one session.
        mark1, mark2 = tab1.mark(), tab2.mark()
        ans = await tab2.request("network", "connect", {"address": bob.peer_url}, timeout=10)
        assert ans["peer"]["node_id"] == bob.node_id
        assert ans["peer"]["status"] == "connected"

        async def settled() -> bool:
            a, b = await views()
            return (
                await alice.metric("hd_sessions") == 1.0
                and await bob.metric("hd_sessions") == 1.0
                and [p["node_id"] for p in a if p["status"] == "connected"] == [bob.node_id]
                and strip(a) == strip(b)
            )

        await eventually(settled, timeout=5.0, what="exactly one alice-bob session")

        # Whatever happened to the duplicate, both tabs were told the same things.
        def updates(tab: Any, mark: int) -> list[tuple[str, str]]:
            return [(e["data"]["peer"]["node_id"], e["data"]["peer"]["status"])
                    for e in list(tab.events)[mark:]
                    if e["event"] == "peer_update" and "req" not in e["data"]]

        async def same_updates() -> bool:
            return updates(tab1, mark1) == updates(tab2, mark2)

        await eventually(same_updates, timeout=3.0, what="both tabs to see the same updates")
        # The session stayed up end to end: both still list each other as connected.
        assert (await bob.peer(alice.node_id) or {}).get("status") == "connected"


async def test_simultaneous_dials_from_both_sides_leave_exactly_one_session(
    cluster: Cluster,
) -> None:
    """SPEC 4 tie-break: whatever the timing, both nodes end with the same single
    session, and it stays up."""
    alice, bob = await cluster.spawn("alice", "bob")
    await cluster.pair(alice, bob)
    async with alice.client() as ta, bob.client() as tb:
        await ta.request("network", "disconnect", {"node_id": bob.node_id})

        async def both_offline() -> bool:
            pa, pb = await alice.peer(bob.node_id), await bob.peer(alice.node_id)
            return bool(pa and pb and pa["status"] == pb["status"] == "offline")

        await eventually(both_offline, timeout=5, what="both sides to drop the session")
        for _ in range(3):  # a few rounds: the race goes different ways
            async with trio.open_nursery() as n:
                n.start_soon(ta.request, "network", "connect",
                             {"address": bob.peer_url, "node_id": bob.node_id})
                n.start_soon(tb.request, "network", "connect",
                             {"address": alice.peer_url, "node_id": alice.node_id})
            await eventually(lambda: connected(alice, bob), timeout=5, what="alice up")
            await eventually(lambda: connected(bob, alice), timeout=5, what="bob up")
            await trio.sleep(0.5)  # any duplicate is closed within this
            assert await alice.metric("hd_sessions") == 1.0
            assert await bob.metric("hd_sessions") == 1.0
            assert await connected(alice, bob) and await connected(bob, alice)
            await ta.request("network", "disconnect", {"node_id": bob.node_id})
            await eventually(both_offline, timeout=5, what="both sides to drop the session")
