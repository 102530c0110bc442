"""Trust mode ``directory`` (SPEC 7.6): a lobby vouches for the nodes on its list, and
nodes that pinned that lobby's key trust each other with no invite; anyone else is not."""

from __future__ import annotations

import json

from .conftest import Cluster, NodeProcess, arun_cli, eventually
from .servers import Servers, servers  # noqa: F401 - the fixture


async def _identity(node: NodeProcess) -> dict[str, str]:
    res = (await arun_cli("id", "--data-dir", str(node.data_dir))).check()
    out = res.json()
    return {"node_id": out["node_id"], "public_key": out["public_key"]}


async def _registered(node: NodeProcess, sees: list[NodeProcess]) -> None:
    """Registered, and the lobby's presence has shown it ``sees`` (a node that
    registered after it is announced up to a batch later)."""
    async with node.client() as tab:
        async def up() -> bool:
            state = await tab.request("lobby", "state")
            there = {e["node_id"] for e in state["directory"]}
            return bool(state["connected"]) and {n.node_id for n in sees} <= there

        await eventually(up, timeout=10, what=f"{node.name} on the lobby")


async def test_listed_nodes_trust_each_other_through_the_lobby_and_others_are_refused(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    alice, bob, carol = cluster.new("alice"), cluster.new("bob"), cluster.new("carol")
    listed = [await _identity(alice), await _identity(bob)]  # identities made offline
    directory = cluster.root / "directory.json"
    directory.write_text(json.dumps(listed))
    lobby = await servers.lobby(extra_args=["--directory", str(directory)]).astart()
    for node in (alice, bob, carol):
        node.extra_args += ["--lobby", lobby.url, "--trust-mode", "directory",
                            "--directory-key", lobby.info["server_key"]]
    await cluster.start(alice, bob, carol)
    for node in (alice, bob, carol):
        await _registered(node, [n for n in (alice, bob, carol) if n is not node])
    async with bob.client() as tb:
        # No invite, no room: bob presents the lobby's attestation, alice checks it;
        # bob trusts alice because the pinned lobby lists her id and key.
        ans = await tb.request("network", "connect",
                               {"address": alice.peer_url, "node_id": alice.node_id},
                               timeout=20)
        assert ans["peer"]["level"] == "trusted", ans
    async def alice_trusts_bob() -> bool:
        p = await alice.peer(bob.node_id)
        return bool(p and p["status"] == "connected" and p["level"] == "trusted")

    await eventually(alice_trusts_bob, timeout=10, what="alice to admit bob as trusted")
    # Carol is registered on the same lobby but not on its list.
    async with carol.client() as tc:
        try:
            await tc.request("network", "connect",
                             {"address": alice.peer_url, "node_id": alice.node_id},
                             timeout=20)
            raise AssertionError("carol got in")
        except Exception as exc:  # NodeError: refused on our own side first
            assert "pairing_required" in str(exc), exc
    assert (await alice.peer(carol.node_id) or {}).get("status") != "connected"
