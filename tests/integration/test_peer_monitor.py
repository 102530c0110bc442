"""The peer monitor on real nodes (SPEC 6.4, 9): ``peer_metrics`` rows on request and
pushed every 5 s, the RTT within 6 s of a session opening, a killed or frozen peer
shown as lost, ``/metrics`` per-peer series that go away some time after a loss, and
``network bench``."""

from __future__ import annotations

import signal
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from hd_node.client import NodeClient

from .conftest import Cluster, NodeProcess, eventually

ROW_FIELDS = {"node_id", "rtt_ms", "srtt_ms", "rttvar_ms", "timeouts", "bytes_in",
              "bytes_out", "msgs_in", "msgs_out", "rate_in_bps", "rate_out_bps",
              "rate_msgs_in", "rate_msgs_out", "status"}
PUSH_S = 5.0  # SPEC 6.4: every 5 s
LOST_ROW_INTERVALS = 12  # hd_node.hub.monitor: how long a lost row lingers, in ping intervals


def _row(rows: list[dict[str, Any]], node_id: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["node_id"] == node_id), None)


async def _rows(tab: NodeClient) -> list[dict[str, Any]]:
    """``network list_metrics``: answered with ``peer_metrics {metrics}``."""
    event, data = await tab.request_event("network", "list_metrics", {})
    assert event == "peer_metrics"
    return list(data["metrics"])


async def _families(node: NodeProcess) -> dict[str, Any]:
    """``/metrics`` with the token (the per-peer series need it), parsed by the
    reference parser; a format error raises here."""
    r = await node.http("GET", "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def _peer_value(families: dict[str, Any], family: str, sample: str,
                peer: str) -> float | None:
    for s in families[family].samples:
        if s.name == sample and s.labels == {"peer": peer}:
            return float(s.value)
    return None


async def _next_push(tab: NodeClient, since: int, timeout: float) -> tuple[float, Any]:
    """The next pushed ``peer_metrics`` (an answer to a request carries ``req``)."""
    ev = await tab.wait_for("network", "peer_metrics", lambda d: "req" not in d,
                            timeout=timeout, since=since)
    return trio.current_time(), ev["data"]["metrics"]


async def test_rtt_is_reported_within_6_s_of_the_session_opening(cluster: Cluster) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    async with alice.client() as tab:
        opened: list[float] = []

        async def watch_open() -> None:
            await tab.wait_for("network", "peer_update",
                               lambda d: d["peer"]["node_id"] == bob.node_id
                               and d["peer"]["status"] == "connected", timeout=15)
            opened.append(trio.current_time())

        async with trio.open_nursery() as n:
            n.start_soon(watch_open)
            await cluster.pair(alice, bob)

        async def rtt_row() -> dict[str, Any] | None:
            row = _row(await _rows(tab), bob.node_id)
            return row if row is not None and row["rtt_ms"] is not None else None

        row = await eventually(rtt_row, timeout=6.5, what="an RTT for bob", interval=0.1)
        seen_after = trio.current_time() - opened[0]
    # Measured by the node itself (session age when the row first had an RTT) and by
    # the tab (from its peer_update, which comes a little after the opening).
    assert row["connected_for_ms"] <= 6000, row
    assert seen_after <= 6.0, seen_after
    assert row.keys() >= ROW_FIELDS, ROW_FIELDS - row.keys()
    assert row["status"] == "connected" and row["transport"] == "direct"
    # RFC 6298 first sample: SRTT = R, RTTVAR = R/2.
    assert (row["srtt_ms"], row["rttvar_ms"]) == (row["rtt_ms"], row["rtt_ms"] / 2)
    assert 0 <= row["rtt_ms"] < 1000 and row["timeouts"] == 0
    # Presence and a pong came in; presence, the ping and pongs went out; all of it
    # within the last 10 s.
    assert row["msgs_in"] >= 2 and row["msgs_out"] >= 2
    assert row["bytes_in"] > 0 and row["bytes_out"] > 0
    assert row["rate_msgs_in"] > 0 and row["rate_in_bps"] > 0
    assert row["rate_msgs_out"] > 0 and row["rate_out_bps"] > 0


async def test_peer_metrics_are_pushed_to_every_tab_every_5_s(
    shared_pair: tuple[NodeProcess, NodeProcess],
) -> None:
    alice, bob = shared_pair
    async with alice.client() as tab1, alice.client() as tab2:
        times: dict[int, list[float]] = {1: [], 2: []}
        rows: list[list[dict[str, Any]]] = []

        async def collect(k: int, tab: NodeClient) -> None:
            for _ in range(3):
                since = tab.mark()
                at, metrics = await _next_push(tab, since, timeout=PUSH_S + 3)
                times[k].append(at)
                rows.append(metrics)

        async with trio.open_nursery() as n:
            n.start_soon(collect, 1, tab1)
            n.start_soon(collect, 2, tab2)
    for k in (1, 2):
        gaps = [b - a for a, b in zip(times[k], times[k][1:], strict=False)]
        assert all(PUSH_S - 1.0 <= g <= PUSH_S + 1.5 for g in gaps), gaps
    for metrics in rows:
        row = _row(metrics, bob.node_id)
        assert row is not None and row.keys() >= ROW_FIELDS
        assert row["status"] == "connected"
    assert (await alice.peer(bob.node_id) or {}).get("status") == "connected"


async def test_metrics_endpoint_parses_and_has_the_per_peer_rtt_and_counters(
    shared_pair: tuple[NodeProcess, NodeProcess],
) -> None:
    alice, bob = shared_pair

    async def with_rtt() -> dict[str, Any] | None:
        fams = await _families(alice)
        rtt = _peer_value(fams, "hd_peer_rtt_ms", "hd_peer_rtt_ms", bob.node_id)
        return fams if rtt is not None else None

    fams = await eventually(with_rtt, timeout=7, what="hd_peer_rtt_ms{peer=bob}")
    peer = bob.node_id
    assert _peer_value(fams, "hd_peer_up", "hd_peer_up", peer) == 1.0
    for gauge in ("hd_peer_rtt_ms", "hd_peer_srtt_ms", "hd_peer_rttvar_ms"):
        assert fams[gauge].type == "gauge"
        value = _peer_value(fams, gauge, gauge, peer)
        assert value is not None and 0 <= value < 1000, gauge
    for counter in ("hd_peer_bytes_in", "hd_peer_bytes_out", "hd_peer_msgs_in",
                    "hd_peer_msgs_out", "hd_peer_ping_timeouts"):
        assert fams[counter].type == "counter", counter
        value = _peer_value(fams, counter, f"{counter}_total", peer)
        assert value is not None, counter
        assert value >= (0 if counter == "hd_peer_ping_timeouts" else 1), (counter, value)
    # Only the one peer has series; the node-wide counters are still there.
    assert {s.labels["peer"] for s in fams["hd_peer_rtt_ms"].samples} == {peer}
    assert "hd_envelopes_in" in fams and "hd_sessions" in fams
    # Without the token (anyone on this machine may ask): the node-wide series, but no
    # per-peer family and no peer id anywhere in the text.
    r = await alice.http("GET", "/metrics", token=False)
    assert r.status_code == 200
    public = {f.name for f in text_string_to_metric_families(r.text)}
    assert "hd_envelopes_in" in public and "hd_sessions" in public
    assert not {n for n in public if n.startswith("hd_peer_")}
    assert peer not in r.text
    wrong = await alice.http("GET", "/metrics", token=False,
                             headers={"Authorization": "Bearer " + "x" * 43})
    assert peer not in wrong.text


async def test_a_sigkilled_peer_stays_visible_as_lost_with_its_last_figures(
    cluster: Cluster,
) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    await cluster.pair(alice, bob)
    async with alice.client() as tab:

        async def rtt_row() -> dict[str, Any] | None:
            row = _row(await _rows(tab), bob.node_id)
            return row if row is not None and row["rtt_ms"] is not None else None

        before = await eventually(rtt_row, timeout=7, what="an RTT for bob", interval=0.1)
        mark = tab.mark()
        bob.send_signal(signal.SIGKILL)
        assert await bob.await_exit(10) == -signal.SIGKILL

        async def lost_row() -> dict[str, Any] | None:
            row = _row(await _rows(tab), bob.node_id)
            return row if row is not None and row["status"] != "connected" else None

        lost = await eventually(lost_row, timeout=5, what="bob's row to show the loss")
        assert lost["status"] == "lost" and lost["reason"]
        assert lost["lost_for_ms"] is not None and lost["lost_for_ms"] >= 0
        # The last figures, not a blank row.
        assert lost["rtt_ms"] is not None and lost["srtt_ms"] is not None
        assert lost["rtt_samples"] >= before["rtt_samples"]
        for key in ("bytes_in", "bytes_out", "msgs_in", "msgs_out"):
            assert lost[key] >= before[key], key
        # The periodic push shows it too, though no peer is connected any more.
        _, pushed = await _next_push(tab, mark, timeout=PUSH_S + 3)
        while (r := _row(pushed, bob.node_id)) is not None and r["status"] == "connected":
            _, pushed = await _next_push(tab, tab.mark(), timeout=PUSH_S + 3)
        assert r is not None and r["status"] == "lost"
    fams = await _families(alice)
    assert _peer_value(fams, "hd_peer_up", "hd_peer_up", bob.node_id) == 0.0
    assert _peer_value(fams, "hd_peer_rtt_ms", "hd_peer_rtt_ms", bob.node_id) is not None


FAST = "[network]\npingInterval = 0.25\npingTimeout = 1.0\n"


async def test_a_lost_peers_row_and_series_are_removed_some_time_after_the_loss(
    cluster: Cluster,
) -> None:
    alice = cluster.new("alice", config=FAST)
    bob = cluster.new("bob", config=FAST)
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    linger_ms = LOST_ROW_INTERVALS * 250
    await eventually(
        lambda: _series_of(alice, bob.node_id), timeout=5, what="bob's series")
    bob.send_signal(signal.SIGKILL)
    assert await bob.await_exit(10) == -signal.SIGKILL
    async with alice.client() as tab:
        seen_lost: list[int] = []

        async def gone() -> bool:
            row = _row(await _rows(tab), bob.node_id)
            if row is not None:
                assert row["status"] == "lost", row
                seen_lost.append(row["lost_for_ms"])
                return False
            return True

        await eventually(gone, timeout=linger_ms / 1000 + 5, what="bob's row to go",
                         interval=0.1)
    # It stayed visible for (about) the whole linger, then went.
    assert seen_lost and seen_lost[0] < linger_ms / 2, seen_lost
    assert max(seen_lost) >= linger_ms - 500, (max(seen_lost), linger_ms)
    assert await _series_of(alice, bob.node_id) == set()


async def _series_of(node: NodeProcess, peer: str) -> set[str]:
    """The names of every ``/metrics`` sample labelled ``peer``."""
    fams = await _families(node)
    return {s.name for f in fams.values() for s in f.samples if s.labels.get("peer") == peer}


async def test_a_frozen_peer_shows_ping_timeouts_growing_then_the_loss(
    cluster: Cluster,
) -> None:
    fast = "[network]\npingInterval = 0.5\npingTimeout = 0.5\n"
    alice = cluster.new("alice", config=fast)
    bob = cluster.new("bob", config=fast)
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    async with alice.client() as tab:
        await eventually(lambda: _with_rtt(tab, bob.node_id), timeout=5, what="an RTT")
        bob.send_signal(signal.SIGSTOP)  # TCP stays up; only pings can tell
        try:
            counts: list[int] = []

            async def lost() -> dict[str, Any] | None:
                row = _row(await _rows(tab), bob.node_id)
                assert row is not None
                counts.append(row["timeouts"])
                return row if row["status"] == "lost" else None

            row = await eventually(lost, timeout=10, what="bob lost", interval=0.1)
            # Read while bob is still frozen: once he runs again the two reconnect,
            # and the new session's series starts again from 0.
            fams = await _families(alice)
        finally:
            bob.send_signal(signal.SIGCONT)
    # Three pings in a row unanswered close the session (SPEC 5 keepalive).
    assert row["timeouts"] == 3 and row["reason"] == "timeout", row
    assert sorted(counts) == counts and {1, 2} <= set(counts), counts
    assert _peer_value(fams, "hd_peer_ping_timeouts", "hd_peer_ping_timeouts_total",
                       bob.node_id) == 3.0


async def _with_rtt(tab: NodeClient, peer: str) -> bool:
    row = _row(await _rows(tab), peer)
    return row is not None and row["rtt_ms"] is not None


async def test_bench_answers_rtt_percentiles_and_throughput_and_the_monitor_counts_it(
    shared_pair: tuple[NodeProcess, NodeProcess],
) -> None:
    alice, bob = shared_pair
    count, size = 300, 1024
    async with alice.client() as tab:
        before = _row(await _rows(tab), bob.node_id)
        assert before is not None
        t0 = trio.current_time()
        r = await tab.request("network", "bench",
                              {"node_id": bob.node_id, "count": count, "size": size},
                              timeout=60)
        after = _row(await _rows(tab), bob.node_id)
        took = trio.current_time() - t0
    assert after is not None and after["status"] == "connected"
    assert (r["timeouts"], r["errors"]) == (0, 0)
    for key in ("rtt_ms", "loaded_rtt_ms"):
        pct = r[key]
        assert 0 <= pct["min"] <= pct["p50"] <= pct["p90"] <= pct["p95"] <= pct["p99"]
        assert pct["p99"] <= pct["max"]
    assert r["rtt_ms"]["samples"] == 200 and r["loaded_rtt_ms"]["samples"] == count
    assert r["round_trips_per_s"] > 0 and r["payload_bytes_per_s"] > 0
    assert r["envelopes_per_s"] > 0
    # 200 sequential + 300 windowed requests went out, each with `size` bytes of pad.
    sent = 200 + count
    assert after["msgs_out"] - before["msgs_out"] >= sent
    assert after["msgs_in"] - before["msgs_in"] >= sent
    assert after["bytes_out"] - before["bytes_out"] >= sent * size
    if took < 9.0:  # the whole bench sits in the monitor's 10 s window
        assert after["rate_out_bps"] >= sent * size / 10
        assert after["rate_msgs_in"] >= sent / 10
