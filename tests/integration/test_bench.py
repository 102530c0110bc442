"""``network bench`` (SPEC 6.4, 9): bench_echo round trips to a paired peer."""

from __future__ import annotations

import pytest

from hd_node.client import NodeError

from .conftest import NodeProcess


async def test_bench_reports_rtt_percentiles_and_throughput_to_a_paired_peer(
    shared_pair: tuple[NodeProcess, NodeProcess],
) -> None:
    alice, bob = shared_pair
    envelopes_before = await bob.metric("hd_envelopes_in_total")
    async with alice.client() as tab:
        r = await tab.request("network", "bench",
                              {"node_id": bob.node_id, "count": 150, "size": 1024},
                              timeout=60)
    assert (r["node_id"], r["count"], r["size"]) == (bob.node_id, 150, 1024)
    assert (r["timeouts"], r["errors"]) == (0, 0)
    for key in ("rtt_ms", "loaded_rtt_ms"):
        pct = r[key]
        assert pct["samples"] == 150  # sequential phase: min(count, 200)
        assert 0 < pct["min"] <= pct["p50"] <= pct["p90"] <= pct["p99"] <= pct["max"]
    assert r["round_trips_per_s"] > 0
    assert r["envelopes_per_s"] == pytest.approx(2 * r["round_trips_per_s"], rel=0.01)
    assert r["payload_bytes_per_s"] == pytest.approx(1024 * r["round_trips_per_s"], rel=0.01)
    # Bob really received them: 150 sequential + 150 loaded requests.
    assert await bob.metric("hd_envelopes_in_total") >= (envelopes_before or 0) + 300
    # The session is fine afterwards.
    assert await alice.metric("hd_sessions") == 1.0


async def test_bench_refuses_an_unknown_peer_and_bad_arguments(
    shared_pair: tuple[NodeProcess, NodeProcess],
) -> None:
    alice, bob = shared_pair
    async with alice.client() as tab:
        for data, code in (({"node_id": "aaaaaaaaaaaaaaaa"}, "not_found"),
                           ({"node_id": bob.node_id, "count": 0}, "bad_request"),
                           ({"node_id": bob.node_id, "size": -1}, "bad_request"),
                           ({"node_id": bob.node_id, "size": 10**9}, "bad_request")):
            with pytest.raises(NodeError) as exc:
                await tab.request("network", "bench", data)
            assert exc.value.code == code, data
