"""Attacks on LAN discovery (SPEC 8.5) from a real foreign process, against real nodes.

The attacker (``lan_flooder.py``) is a separate process that announces hundreds of
``_hd-peer._tcp.local.`` services over mDNS on 127.0.0.1 within a second, and withdraws
them (goodbyes) on command, as a hostile host on the LAN could. Made-up nodes cost it
nothing: a fresh identity is a key pair, and its announcement is as valid as a real
node's. The node under test must stay up with bounded memory and threads, list at most
``MAX_LAN_PEERS``, count (and log) what it did not take, dial nothing it must not — and
still find its real, trusted peers over the LAN.

Every announcement that names a made-up node points at a trap: a TCP listener of the
test (or a real node's peer listener) that counts whoever knocks.

mDNS on 127.0.0.1 is one multicast group for the whole machine: the assertions here
tolerate the few announcements of other tests' nodes, but a flood is seen by every
LAN-enabled node running at the same time (test_lan.py's exact ``lan_peers`` checks, and
its open-lan nodes, would see it): run LAN tests one file at a time.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from hd_protocol import Identity
from hd_protocol.reach.lan import MAX_LAN_PEERS

from .conftest import Cluster, NodeProcess, eventually
from .test_lan import lan_peers, lan_row, over_lan

# mDNS is one multicast group per host: these run alone, after the parallel run
# (Makefile), so no other test's nodes announce beside them.
pytestmark = pytest.mark.lan

LAN = "[network]\nenableLanDiscovery = true\n"
FLOODER = Path(__file__).with_name("lan_flooder.py")
FLOOD = 400  # made-up nodes: more than MAX_LAN_PEERS
STOP_TIMEOUT = 20.0
# What the node may grow by under a flood: every figure seen here is far below (a few
# MB of zeroconf cache and table; the threads of its bounded worker pools).
RSS_GROWTH_KB = 48 * 1024
THREADS_GROWTH = 16


# --- the attacker ------------------------------------------------------------------------


class Flooder:
    """The attacker process: ``add``/``remove`` services, each acknowledged once every
    announcement (or goodbye) of the batch is on the wire."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def _call(self, cmd: dict[str, Any]) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    async def add(self, services: list[dict[str, Any]]) -> None:
        got = await trio.to_thread.run_sync(self._call, {"op": "add", "services": services})
        assert got == f"added {len(services)}", got

    async def remove(self, names: list[str]) -> None:
        got = await trio.to_thread.run_sync(self._call, {"op": "remove", "names": names})
        assert got == f"removed {len(names)}", got


@contextlib.contextmanager
def flooder() -> Iterator[Flooder]:
    """The attacker, stopped at the end (EOF: goodbyes for what is left, then exit)."""
    proc = subprocess.Popen([sys.executable, str(FLOODER)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield Flooder(proc)
    finally:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()


class Trap:
    """A TCP listener that counts connections: where made-up nodes 'live'."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.knocks = 0


@contextlib.asynccontextmanager
async def trap() -> AsyncIterator[Trap]:
    async with trio.open_nursery() as n:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        t = Trap(listeners[0].socket.getsockname()[1])

        async def count(stream: trio.SocketStream) -> None:
            t.knocks += 1
            await stream.aclose()

        n.start_soon(trio.serve_listeners, count, listeners)
        yield t
        n.cancel_scope.cancel()


def txt(node_id: str, key: str | None, **over: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"v": "1", "id": node_id, "pk": key, "path": "/peer-ws"}
    t.update(over)
    return {k: v for k, v in t.items() if v is not ...}


def made_up(prefix: str, count: int, port: int, **spec: Any) -> list[dict[str, Any]]:
    """``count`` services of fresh, valid identities (nobody the node knows)."""
    out = []
    for i in range(count):
        ident = Identity.generate()
        out.append({"name": f"{prefix}-{i}", "port": port,
                    "txt": txt(ident.node_id, ident.public_key, name=f"{prefix}-{i}"),
                    **spec})
    return out


def forged(port: int, per_kind: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Announcements the node must not take, and how many of each reason it must count."""
    out: list[dict[str, Any]] = []

    def add(kind: str, make: Any) -> None:
        for i in range(per_kind):
            a, b = Identity.generate(), Identity.generate()
            out.append({"name": f"{kind}-{i}", "port": port, **make(a, b)})

    add("idmix", lambda a, b: {"txt": txt(a.node_id, b.public_key)})  # id_mismatch
    add("v2", lambda a, b: {"txt": txt(a.node_id, a.public_key, v="2")})  # version
    add("nokey", lambda a, b: {"txt": txt(a.node_id, ...)})  # malformed...
    add("nullkey", lambda a, b: {"txt": txt(a.node_id, None)})
    add("badkey", lambda a, b: {"txt": txt(a.node_id, "not-a-key")})
    add("badid", lambda a, b: {"txt": txt("NOT AN ID", a.public_key)})
    add("badpath", lambda a, b: {"txt": txt(a.node_id, a.public_key, path="peer-ws")})
    add("binary", lambda a, b: {"txt": txt(a.node_id, a.public_key, name={"hex": "ff"})})
    add("keys", lambda a, b: {"txt": {**txt(a.node_id, a.public_key),
                                      **{f"k{j}": "x" for j in range(16)}}})
    add("noaddr", lambda a, b: {"txt": txt(a.node_id, a.public_key),
                                "addresses": ["0.0.0.0"]})  # noqa: S104 - undialable
    return out, {"id_mismatch": per_kind, "version": per_kind, "malformed": 7 * per_kind,
                 "no_address": per_kind}


# --- what the node shows -------------------------------------------------------------------


async def ignored(node: NodeProcess, reason: str) -> float:
    return await node.metric("hd_lan_ignored_total", reason=reason) or 0.0


async def listed(node: NodeProcess) -> float:
    return await node.metric("hd_lan_peers") or 0.0


def proc_status(node: NodeProcess) -> dict[str, int]:
    """Threads and VmRSS (kB) of the node's process."""
    assert node.proc is not None
    out = {}
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS"):
            out[key] = int(value.split()[0])
    return out


async def assert_healthy(node: NodeProcess) -> None:
    assert node.running, f"{node.name} died: {node.returncode}"
    r = await node.http("GET", "/healthz", token=False)
    assert r.status_code == 200 and r.json()["ok"] is True
    log = node.log_text()
    for bad in ("Traceback", " ERROR ", " CRITICAL ", "a bug"):
        assert bad not in log, f"{node.name} logged {bad!r}"


def assert_bounded(name: str, before: dict[str, int], after: dict[str, int]) -> None:
    print(f"\n{name}: threads {before['Threads']} -> {after['Threads']}, "
          f"VmRSS {before['VmRSS'] // 1024} -> {after['VmRSS'] // 1024} MB")
    assert after["Threads"] <= before["Threads"] + THREADS_GROWTH
    assert after["VmRSS"] <= before["VmRSS"] + RSS_GROWTH_KB


async def lan_started(node: NodeProcess) -> None:
    await eventually(lambda: trio.to_thread.run_sync(lambda: "lan announced" in
                                                     node.log_text()),
                     timeout=20, what=f"{node.name} to announce itself")


async def paired_then_apart(cluster: Cluster) -> tuple[NodeProcess, NodeProcess]:
    """alice and bob, paired, both stopped; bob started again on a new port (so neither
    address the other stored leads anywhere: only the LAN can bring them together)."""
    alice = cluster.new("alice", config=LAN)
    bob = cluster.new("bob", config=LAN)
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    old = alice.peer_url
    await cluster.stop(alice, bob)
    await bob.astart()
    await lan_started(bob)
    assert bob.peer_url != old
    return alice, bob


# --- the tests ------------------------------------------------------------------------------


async def test_a_flood_of_made_up_nodes_is_capped_and_counted_and_a_trusted_peer_still_gets_in(
    cluster: Cluster,
) -> None:
    alice, bob = await paired_then_apart(cluster)
    before = proc_status(bob)
    async with trap() as t:
        junk, expected = forged(t.port, per_kind=10)
        flood = made_up("flood", FLOOD, t.port)
        with flooder() as f:
            started = trio.current_time()
            await f.add(flood + junk)

            async def full() -> bool:
                return (await listed(bob) == MAX_LAN_PEERS
                        and await ignored(bob, "full") >= FLOOD - MAX_LAN_PEERS
                        and all([await ignored(bob, r) >= n for r, n in expected.items()]))

            await eventually(full, timeout=30, what="bob to fill his table and count the rest",
                             interval=0.25)
            full_s = trio.current_time() - started
            rows = await lan_peers(bob)
            assert len(rows) == MAX_LAN_PEERS
            assert all(r["known"] is False and r["connected"] is False for r in rows)
            await assert_healthy(bob)
            flooded = proc_status(bob)

            # alice comes back: bob's table is full of strangers, and she is trusted.
            await alice.astart()
            started = trio.current_time()
            for node, other in ((bob, alice), (alice, bob)):
                await eventually(lambda n=node, o=other: over_lan(n, o), timeout=30,
                                 what=f"{node.name} to reconnect {other.name} over lan")
            back_s = trio.current_time() - started
            row = await lan_row(bob, alice.node_id)
            assert row is not None
            assert row["known"] is True and row["level"] == "trusted" and row["connected"]
            assert await listed(bob) == MAX_LAN_PEERS  # still capped: she took a place
            assert len(await lan_peers(bob)) == MAX_LAN_PEERS
            assert await ignored(bob, "evicted") >= 1
            assert "lan peer dropped for a trusted peer" in bob.log_text()
            await assert_healthy(bob)
            await assert_healthy(alice)
            after = proc_status(bob)
    assert t.knocks == 0  # none of the made-up nodes was ever dialled
    counts = {r: await ignored(bob, r) for r in
              ("full", "malformed", "id_mismatch", "version", "no_address", "overflow",
               "evicted")}
    print(f"\nLAN flood: {FLOOD} made-up nodes + {len(junk)} forged: bob full after "
          f"{1000 * full_s:.0f} ms, alice back over lan {1000 * back_s:.0f} ms after her "
          f"start; ignored {counts}")
    assert_bounded("bob before the flood -> flooded", before, flooded)
    assert_bounded("bob before the flood -> after", before, after)


async def test_announcements_a_node_must_not_dial_are_never_dialled_at_volume(
    cluster: Cluster,
) -> None:
    # bob (manual mode) trusts alice; alice is away. carol's peer listener is a target.
    alice, carol = await cluster.spawn("alice", "carol")
    bob = cluster.new("bob", config=LAN)
    await bob.astart()
    await cluster.pair(alice, bob)
    stored = await bob.peer(alice.node_id)
    assert stored is not None and stored["public_key"]
    await cluster.stop(alice)
    await lan_started(bob)
    dialled = await bob.metric_sum("hd_handshakes_total", role="dialer")
    async with trap() as t:
        services = (
            # unknown nodes, valid announcements: listed, never dialled in manual mode
            made_up("stranger", 150, t.port)
            + made_up("stranger-at-carol", 50, carol.peer_port)
            # alice's id with keys that are not hers (a node id is its key's, SPEC 2)
            + [{"name": f"alice-forged-{i}", "port": port,
                "txt": txt(alice.node_id, Identity.generate().public_key)}
               for i, port in enumerate([t.port] * 50 + [carol.peer_port] * 50)]
            # someone's id with someone else's key
            + [{"name": f"mixed-{i}", "port": t.port,
                "txt": txt(Identity.generate().node_id, Identity.generate().public_key)}
               for i in range(50)]
        )
        strangers = {s["txt"]["id"] for s in services if s["name"].startswith("stranger")}
        with flooder() as f:
            await f.add(services)

            async def decided() -> bool:
                log = await trio.to_thread.run_sync(bob.log_text)
                return (await listed(bob) >= 200
                        and await ignored(bob, "id_mismatch") >= 150
                        and log.count("dial=False reason=pairing_required") >= 200)

            await eventually(decided, timeout=30, what="bob to list and decide on them all",
                             interval=0.25)
            await trio.sleep(2.0)  # room for any dial that would follow
            rows = await lan_peers(bob)
            assert strangers <= {r["node_id"] for r in rows}
            assert all(r["known"] is False and r["connected"] is False for r in rows)
            assert alice.node_id not in {r["node_id"] for r in rows}
            await assert_healthy(bob)
    assert t.knocks == 0
    log = bob.log_text()
    assert "kind=lan" not in log and "dial=True" not in log
    assert await bob.metric_sum("hd_handshakes_total", role="dialer") == dialled
    # carol's peer listener saw no handshake at all (nobody dialled her address).
    assert not [line for line in carol.log_text().splitlines() if "role=acceptor" in line]
    assert await carol.metric_sum("hd_handshakes_total") == 0
    assert await carol.metric_sum("hd_connections_refused_total") == 0
    assert [p["node_id"] for p in await bob.peers()] == [alice.node_id]
    print(f"\nLAN must-not-dial: 200 strangers listed, "
          f"{await ignored(bob, 'id_mismatch'):.0f} forgeries counted, 0 dials")


async def test_churn_of_announcements_and_goodbyes_leaves_no_entries(cluster: Cluster) -> None:
    bob = cluster.new("bob", config=LAN)
    await bob.astart()
    await lan_started(bob)
    before = proc_status(bob)
    started = trio.current_time()
    churned: set[str] = set()

    async def left(ids: set[str]) -> int:
        """How many of ``ids`` bob lists."""
        return len(ids & {r["node_id"] for r in await lan_peers(bob)})

    async def gone(ids: set[str]) -> bool:
        return await left(ids) == 0

    async with trap() as t:
        with flooder() as f:
            for rnd in range(6):
                batch = made_up(f"churn{rnd}", 100, t.port)
                ids = {s["txt"]["id"] for s in batch}
                churned |= ids
                await f.add(batch)
                if rnd % 2 == 0:  # seen, then gone
                    await eventually(lambda ids=ids: _equals(left(ids), 100), timeout=20,
                                     what=f"round {rnd}: bob to list the batch")
                    await f.remove([s["name"] for s in batch])
                    await eventually(lambda ids=ids: gone(ids), timeout=20,
                                     what=f"round {rnd}: the goodbyes to empty the table")
                else:  # gone while bob is still resolving them
                    await f.remove([s["name"] for s in batch])
            await eventually(lambda: gone(churned), timeout=20,
                             what="no entry of the churn to be left")
            await trio.sleep(1.0)
            assert await gone(churned)  # and none comes back
            rows = await lan_peers(bob)
            assert await listed(bob) == len(rows) < 100  # back to the baseline
            await assert_healthy(bob)
            after = proc_status(bob)
    assert t.knocks == 0
    print(f"\nLAN churn: 600 services announced and withdrawn in "
          f"{trio.current_time() - started:.1f} s; none left, gauge == rows == {len(rows)}")
    assert_bounded("bob before -> after the churn", before, after)


async def test_announcements_that_never_resolve_do_not_hold_up_a_trusted_peer(
    cluster: Cluster,
) -> None:
    # SRV and TXT but no address record: zeroconf can only ask for the address and wait
    # (3 s a lookup). Hundreds of them must not stand between bob and alice.
    alice, bob = await paired_then_apart(cluster)
    before = proc_status(bob)
    with flooder() as f:
        void = made_up("void", FLOOD, 9, addresses=[])
        await f.add(void)
        await eventually(lambda: _at_least(ignored(bob, "unresolved"), FLOOD // 2),
                         timeout=30, what="bob to put off lookups that cannot finish")
        await alice.astart()
        started = trio.current_time()
        for node, other in ((bob, alice), (alice, bob)):
            await eventually(lambda n=node, o=other: over_lan(n, o), timeout=30,
                             what=f"{node.name} to reconnect {other.name} over lan")
        back_s = trio.current_time() - started
        rows = await lan_peers(bob)
        assert alice.node_id in {r["node_id"] for r in rows}
        assert not {s["txt"]["id"] for s in void} & {r["node_id"] for r in rows}
        assert await listed(bob) == len(rows)
        await assert_healthy(bob)
        after = proc_status(bob)
    print(f"\nLAN unresolvable flood: alice back over lan {1000 * back_s:.0f} ms after her "
          f"start; unresolved {await ignored(bob, 'unresolved'):.0f}, "
          f"overflow {await ignored(bob, 'overflow'):.0f}")
    assert_bounded("bob before -> after the unresolvable flood", before, after)


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)


async def _at_least(value: Any, expected: float) -> bool:
    return bool(await value >= expected)
