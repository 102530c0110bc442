"""LAN discovery between real node processes (SPEC 8.5), over mDNS on 127.0.0.1.

Every node here runs with ``enableLanDiscovery`` and its peer listener (so zeroconf
too) on 127.0.0.1: multicast on loopback works on these machines, so no network
namespaces are needed. Forged announcements come from a separate process
(``lan_announcer.py``), as a foreign host's would.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from hd_protocol import Identity

from .conftest import Cluster, NodeProcess, connected, eventually

# mDNS is one multicast group per host: these run alone, after the parallel run
# (Makefile), so no other test's nodes announce beside them.
pytestmark = pytest.mark.lan

LAN = "[network]\nenableLanDiscovery = true\n"
OPEN_LAN = LAN + 'trustMode = "open-lan"\n'
ANNOUNCER = Path(__file__).with_name("lan_announcer.py")


async def lan_peers(node: NodeProcess) -> list[dict[str, Any]]:
    async with node.client() as tab:
        data = await tab.request("network", "lan_peers")
    assert data["enabled"] is True
    return list(data["peers"])


async def lan_row(node: NodeProcess, other_id: str) -> dict[str, Any] | None:
    return next((p for p in await lan_peers(node) if p["node_id"] == other_id), None)


async def session_kind(node: NodeProcess, other: NodeProcess) -> str | None:
    p = await connected(node, other)
    return p["transport"] if p else None


async def over_lan(node: NodeProcess, other: NodeProcess) -> bool:
    """``node`` has a session with ``other`` and it is a LAN link. (An acceptor learns
    that once its own browser has seen the dialer's announcement, a moment later.)"""
    return await session_kind(node, other) == "lan"


async def logged(node: NodeProcess, text: str) -> bool:
    return text in node.log_text()


def inbound_handshakes_from(node: NodeProcess, peer_id: str) -> list[str]:
    """Log lines of ``node`` about a handshake another node opened with it."""
    return [line for line in node.log_text().splitlines()
            if ("role=acceptor" in line and peer_id in line)
            or "handshake failed role=acceptor" in line]


@contextlib.contextmanager
def announcer(services: list[dict[str, Any]]) -> Iterator[subprocess.Popen[str]]:
    """A separate process announcing ``services``; unregistered and stopped at the end."""
    proc = subprocess.Popen([sys.executable, str(ANNOUNCER), json.dumps(services)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "registered"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the announcer unregisters (goodbye) and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_two_nodes_see_each_other_in_lan_peers_and_manual_mode_does_not_dial(
    cluster: Cluster,
) -> None:
    alice = cluster.new("alice", config=LAN)
    bob = cluster.new("bob", config=LAN)
    async with trio.open_nursery() as n:
        n.start_soon(alice.astart)
        n.start_soon(bob.astart)
    started = trio.current_time()
    async with alice.client() as tab:
        ev = await tab.wait_for(
            "network", "lan_peers",
            lambda d: any(p["node_id"] == bob.node_id for p in d["peers"]), timeout=15)
        seen_ms = (trio.current_time() - started) * 1000
        row = next(p for p in ev["data"]["peers"] if p["node_id"] == bob.node_id)
        assert row["known"] is False and row["level"] is None
        assert row["node_name"] == "bob"
        assert row["address"] == bob.peer_url
    row_b = await eventually(lambda: lan_row(bob, alice.node_id), timeout=15,
                             what="bob to list alice in lan_peers")
    assert row_b["address"] == alice.peer_url and row_b["known"] is False
    print(f"\nLAN discovery: alice listed bob {seen_ms:.0f} ms after both were up")

    # manual mode: unknown nodes are listed, never dialled.
    await trio.sleep(2.0)
    assert await alice.peer(bob.node_id) is None
    assert await bob.peer(alice.node_id) is None
    assert inbound_handshakes_from(bob, alice.node_id) == []
    assert inbound_handshakes_from(alice, bob.node_id) == []
    for node in (alice, bob):
        assert "kind=lan" not in node.log_text()
        assert "reason=pairing_required" in node.log_text()  # the decision, logged
        assert await node.metric_sum("hd_handshakes_total") == 0
        assert await node.metric("hd_lan_ignored_total", reason="own") is not None

    # A rename is announced (TXT name) and reaches the other's list.
    async with bob.client() as tab:
        await tab.request("network", "rename", {"node_name": "robert"})

    async def renamed() -> bool:
        row = await lan_row(alice, bob.node_id)
        return row is not None and row["node_name"] == "robert"

    await eventually(renamed, timeout=15, what="alice to list bob under his new name")


async def test_unknown_nodes_in_open_lan_mode_dial_each_other_over_lan(
    cluster: Cluster,
) -> None:
    alice = cluster.new("alice", config=OPEN_LAN)
    bob = cluster.new("bob", config=OPEN_LAN)
    await cluster.start(alice, bob)
    started = trio.current_time()
    for node, other in ((alice, bob), (bob, alice)):
        await eventually(lambda n=node, o=other: over_lan(n, o), timeout=15,
                         what=f"{node.name} connected to {other.name} over lan")
    print(f"\nLAN open-lan: connected {1000 * (trio.current_time() - started):.0f} ms "
          f"after both were up")
    row = await lan_row(alice, bob.node_id)
    assert row is not None and row["level"] == "trusted" and row["connected"] is True
    # open-lan trust lives as long as the session: bob is pinned, not stored as trusted.
    peer = await alice.peer(bob.node_id)
    assert peer is not None and peer["level"] == "trusted"


async def test_paired_nodes_reconnect_over_lan_after_both_restart(cluster: Cluster) -> None:
    alice = cluster.new("alice", config=LAN)
    bob = cluster.new("bob", config=LAN)
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    old = (alice.peer_url, bob.peer_url)
    await cluster.stop(alice, bob)
    await cluster.start(alice, bob)  # new ports: the stored addresses lead nowhere
    assert (alice.peer_url, bob.peer_url) != old
    started = trio.current_time()
    for node, other in ((alice, bob), (bob, alice)):
        await eventually(lambda n=node, o=other: session_kind(n, o), timeout=20,
                         what=f"{node.name} reconnected to {other.name}")
    connected_ms = 1000 * (trio.current_time() - started)
    for node, other in ((alice, bob), (bob, alice)):
        await eventually(lambda n=node, o=other: over_lan(n, o), timeout=10,
                         what=f"{node.name}'s session with {other.name} to be a lan link")
    print(f"\nLAN reconnect: both connected {connected_ms:.0f} ms after both were up "
          f"again, both labelled lan after {1000 * (trio.current_time() - started):.0f} ms")
    row = await lan_row(bob, alice.node_id)
    assert row is not None
    assert row["known"] is True and row["level"] == "trusted" and row["connected"] is True
    # Whichever saw the other first redialled it as a known trusted peer.
    assert any("dial=True reason=reconnect" in n.log_text() for n in (alice, bob))


async def test_spoofed_announcements_are_ignored_counted_and_never_dialled(
    cluster: Cluster,
) -> None:
    # bob would dial anyone on the LAN (open-lan) and trusts alice (paired); alice and
    # carol do not announce themselves.
    alice, carol = await cluster.spawn("alice", "carol")
    bob = cluster.new("bob", config=OPEN_LAN)
    await bob.astart()
    await cluster.pair(alice, bob)
    alice_key = (await alice.cli("id")).check().json()["public_key"]
    await cluster.stop(alice)  # bob would take any way back to alice now
    intruder = Identity.generate()
    async with trio.open_nursery() as n:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        trap_port = listeners[0].socket.getsockname()[1]
        knocks: list[str] = []

        async def count(stream: trio.SocketStream) -> None:
            knocks.append("knock")
            await stream.aclose()

        n.start_soon(trio.serve_listeners, count, listeners)
        services = [
            # alice's id with the intruder's key (SPEC 2: the id must be the key's).
            {"name": "spoof-id", "port": trap_port,
             "txt": {"v": "1", "id": alice.node_id, "pk": intruder.public_key,
                     "path": "/peer-ws"}},
            # no key at all
            {"name": "spoof-bad", "port": trap_port,
             "txt": {"v": "1", "id": alice.node_id, "path": "/peer-ws"}},
            # alice's real id and key, at carol's address: whoever answers there is not
            # alice, and the dial (which pins alice's id and key) must fail.
            {"name": "spoof-addr", "port": carol.peer_port,
             "txt": {"v": "1", "id": alice.node_id, "pk": alice_key,
                     "path": "/peer-ws"}},
        ]
        with announcer(services):
            await eventually(
                lambda: bob.metric("hd_lan_ignored_total", reason="id_mismatch"),
                timeout=15, what="bob to count the forged id")
            await eventually(
                lambda: bob.metric("hd_lan_ignored_total", reason="malformed"),
                timeout=15, what="bob to count the malformed TXT")
            await eventually(lambda: logged(bob, f"lan dial failed peer={alice.node_id}"),
                             timeout=15, what="bob's pinned dial to carol's address to fail")
            await trio.sleep(1.0)
            rows = await lan_peers(bob)
            assert [r["address"] for r in rows] == [carol.peer_url]  # only the valid one
            assert rows[0]["node_id"] == alice.node_id and rows[0]["connected"] is False
        n.cancel_scope.cancel()
    assert knocks == []  # the forged announcements were never dialled
    # carol refused a hello meant for alice: the dial pinned the announced id.
    assert "handshake failed role=acceptor addr=127.0.0.1 reason=wrong_node" in carol.log_text()
    assert await bob.peer(carol.node_id) is None  # no session with whoever answered
    peer = await bob.peer(alice.node_id)
    assert peer is not None and peer["status"] != "connected"

