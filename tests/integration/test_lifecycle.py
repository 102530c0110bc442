"""Stopping and restarting nodes: bye on SIGTERM, reconnect without a new invite
(SPEC 5 reconnect, bye)."""

from __future__ import annotations

import signal

import trio

from .conftest import Cluster, connected, eventually, free_port


async def test_both_nodes_reconnect_by_themselves_after_both_restart_within_10s(
    cluster: Cluster,
) -> None:
    alice = cluster.new("alice", ui_port=free_port(), peer_port=free_port())
    bob = cluster.new("bob", ui_port=free_port(), peer_port=free_port())
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    ids = (alice.node_id, bob.node_id)
    await cluster.stop(alice, bob)
    assert (alice.returncode, bob.returncode) == (0, 0)

    await cluster.start(alice, bob)
    started = trio.current_time()
    assert (alice.node_id, bob.node_id) == ids  # same identities, same ports
    a = await eventually(lambda: connected(alice, bob), timeout=10,
                         what="alice to reconnect to bob")
    b = await eventually(lambda: connected(bob, alice), timeout=10,
                         what="bob to reconnect to alice")
    assert trio.current_time() - started < 10
    assert a["level"] == b["level"] == "trusted"
    # No new invite was needed (the one used for pairing is the only one).
    assert len((await alice.http("GET", "/api/invites")).json()) == 1
    assert (await bob.http("GET", "/api/invites")).json() == []
    assert await alice.metric("hd_sessions") == await bob.metric("hd_sessions") == 1.0


async def test_one_node_restarting_is_reconnected_to_by_its_peer(cluster: Cluster) -> None:
    alice = cluster.new("alice", ui_port=free_port(), peer_port=free_port())
    bob = cluster.new("bob")  # bob's port changes on restart: alice must learn it again
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    assert await alice.astop() == 0
    await alice.astart()
    await eventually(lambda: connected(bob, alice), timeout=10,
                     what="bob to reconnect to the restarted alice")
    await eventually(lambda: connected(alice, bob), timeout=5, what="alice to see bob")


async def test_sigterm_sends_bye_exits_0_and_the_peer_sees_it_offline_at_once(
    cluster: Cluster,
) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    await cluster.pair(alice, bob)
    async with bob.client() as tab:
        mark = tab.mark()
        t0 = trio.current_time()
        alice.send_signal(signal.SIGTERM)
        ev = await tab.wait_for(
            "network", "peer_update",
            lambda d: d["peer"]["node_id"] == alice.node_id and d["peer"]["status"] == "offline",
            timeout=3.0, since=mark)
        seen_after = trio.current_time() - t0
        assert await alice.await_exit(5.0) == 0
    assert seen_after < 2.0, seen_after
    assert ev["data"]["peer"]["level"] == "trusted"  # still paired, just offline
    # Bob learnt it from alice's bye, not from a broken link.
    assert f"session closed peer={alice.node_id} reason=shutdown remote=True" in bob.log_text()
    assert "signal received signal=SIGTERM" in alice.log_text()
    assert not (alice.data_dir / "node.json").exists()


FAST_PING = "[network]\npingInterval = 0.3\npingTimeout = 0.3\n"


async def test_a_frozen_peer_is_seen_offline_after_missed_pings_and_reconnects_when_it_wakes(
    cluster: Cluster,
) -> None:
    """SIGSTOP keeps the TCP connection open but answers nothing: only the ping
    monitor can tell (SPEC 5/6.4). Three missed pings close the session."""
    alice = cluster.new("alice", config=FAST_PING)
    bob = cluster.new("bob", config=FAST_PING, ui_port=free_port(), peer_port=free_port())
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    bob.send_signal(signal.SIGSTOP)
    try:
        async def offline() -> bool:
            p = await alice.peer(bob.node_id)
            return p is not None and p["status"] == "offline"

        await eventually(offline, timeout=5, what="alice to drop the frozen bob")
    finally:
        bob.send_signal(signal.SIGCONT)
    assert f"session closed peer={bob.node_id} reason=timeout" in alice.log_text()
    await eventually(lambda: connected(alice, bob), timeout=10,
                     what="alice and bob to reconnect once bob wakes up")
