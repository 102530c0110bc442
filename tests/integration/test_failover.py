"""A node given several lobby or relay instances (issue 19) moves on when its instance dies.

Real processes: two independent ``hd-lobby`` (or ``hd-relay``) processes, no cluster
between them — what is checked is the node's part: it uses the first instance, and after a
SIGKILL of that one it registers (attaches) at the second within a few seconds, says so in
``lobby state``, and stays there when the first comes back.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio

from .conftest import Cluster, NodeProcess, connected, eventually, sample
from .servers import ServerProcess, Servers, servers  # noqa: F401 - the fixture

NO_DIRECT = "[network]\nenableDirect = false\n"
FAILOVER_S = 5.0  # the acceptance: on instance 2 within 5 s of the SIGKILL


async def _state(node: NodeProcess) -> dict[str, Any]:
    r = await node.http("GET", "/api/lobby")
    assert r.status_code == 200, r.text
    state: dict[str, Any] = r.json()
    return state


async def _sees(watcher: NodeProcess, node_id: str) -> bool:
    state = await _state(watcher)
    return state["connected"] and node_id in {e["node_id"] for e in state["directory"]}


async def _registered_at(node: NodeProcess, url: str) -> bool:
    state = await _state(node)
    return bool(state["connected"] and state["url"] == url)


async def _relay_at(node: NodeProcess, url: str) -> bool:
    relay = (await _state(node))["relay"]
    return bool(relay["attached"] and relay["url"] == url)


async def _relay_connections(server: ServerProcess) -> float:
    base = server.url.split("/relay-ws")[0].replace("ws://", "http://", 1)

    def get() -> httpx.Response:
        return httpx.get(f"{base}/metrics", timeout=5)

    r = await trio.to_thread.run_sync(get)
    assert r.status_code == 200
    return sample(r.text, "hd_relay_connections") or 0.0


async def test_a_node_registers_at_the_next_lobby_within_seconds_of_a_sigkill(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    lobby1, lobby2 = servers.lobby("lobby1"), servers.lobby("lobby2")
    async with trio.open_nursery() as n:
        n.start_soon(lobby1.astart)
        n.start_soon(lobby2.astart)
    alice = cluster.new("alice", config=(f'[network]\nlobbyUrl = ["{lobby1.url}", '
                                         f'"{lobby2.url}"]\n'))
    watch1 = cluster.new("watch1", extra_args=["--lobby", lobby1.url])
    watch2 = cluster.new("watch2", extra_args=["--lobby", lobby2.url])
    await cluster.start(alice, watch1, watch2)
    await eventually(lambda: _sees(watch1, alice.node_id), timeout=15,
                     what="alice in lobby 1's directory")
    state = await _state(alice)
    assert state["url"] == lobby1.url and state["urls"] == [lobby1.url, lobby2.url]
    # Our own relay is the one beside the lobby we are on.
    await eventually(lambda: _relay_at(alice, lobby1.info["relay_url"]), timeout=10,
                     what="alice attached at the relay beside lobby 1")
    assert not await _sees(watch2, alice.node_id)

    lobby1.kill()  # SIGKILL
    t0 = trio.current_time()
    await eventually(lambda: _sees(watch2, alice.node_id), timeout=FAILOVER_S,
                     what="alice in lobby 2's directory after the SIGKILL of lobby 1")
    assert trio.current_time() - t0 < FAILOVER_S
    assert await _registered_at(alice, lobby2.url)
    await eventually(lambda: _relay_at(alice, lobby2.info["relay_url"]),
                     timeout=FAILOVER_S, what="alice's relay following her lobby")

    # Lobby 1 comes back (same port): alice stays where she is, no flapping back.
    await lobby1.astart()
    await eventually(lambda: _registered_at(watch1, lobby1.url), timeout=15,
                     what="watch1 back on lobby 1")
    await trio.sleep(2.0)
    assert await _registered_at(alice, lobby2.url)
    assert not await _sees(watch1, alice.node_id)


async def test_a_node_attaches_at_the_next_relay_within_seconds_of_a_sigkill(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    relay1, relay2 = servers.relay("relay1"), servers.relay("relay2")
    async with trio.open_nursery() as n:
        n.start_soon(relay1.astart)
        n.start_soon(relay2.astart)
    alice = cluster.new("alice", config=NO_DIRECT,
                        extra_args=["--relay", f"{relay1.url},{relay2.url}"])
    await alice.astart()
    await eventually(lambda: _relay_at(alice, relay1.url), timeout=15,
                     what="alice attached at relay 1")
    assert await _relay_connections(relay1) == 1
    assert await _relay_connections(relay2) == 0
    assert (await _state(alice))["relay"]["urls"] == [relay1.url, relay2.url]

    relay1.kill()  # SIGKILL
    t0 = trio.current_time()
    await eventually(lambda: _relay_at(alice, relay2.url), timeout=FAILOVER_S,
                     what="alice attached at relay 2 after the SIGKILL of relay 1")
    assert trio.current_time() - t0 < FAILOVER_S
    assert await _relay_connections(relay2) == 1
    # Our relay candidate names the instance we are on: a peer reaches us through it.
    bob = cluster.new("bob", config=NO_DIRECT, extra_args=["--relay", relay2.url])
    await bob.astart()
    async with alice.client() as ta:
        invite = (await ta.request("network", "invite_create"))["invite"]
    async with bob.client() as tb:
        res = await tb.request("network", "pair_redeem", {"invite": invite}, timeout=20)
    assert res["ok"] is True and res["peer"]["transport"] == "relay", res
    peer = await eventually(lambda: connected(bob, alice), timeout=15,
                            what="bob's session with alice")
    assert peer["transport"] == "relay" and peer["address"] == relay2.url
    assert await _relay_connections(relay2) == 2

    await relay1.astart()  # back on its port: alice stays on relay 2
    await trio.sleep(2.0)
    assert await _relay_at(alice, relay2.url)
    assert await _relay_connections(relay1) == 0

