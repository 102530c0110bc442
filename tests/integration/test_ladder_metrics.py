"""/metrics counts the rungs of the join ladder (SPEC 8.2): what was tried and what won,
per link kind, read with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from hd_protocol.peer.candidates import LINK_KINDS

from .conftest import Cluster, NodeProcess
from .servers import Servers, servers  # noqa: F401 - the fixture
from .test_lobby import NO_DIRECT, _connected_to_lobby, _host_and_join


async def ladder_counts(node: NodeProcess) -> dict[str, dict[str, float]]:
    """{"attempts": {kind: n}, "wins": {kind: n}} from the node's /metrics."""
    r = await node.http("GET", "/metrics", token=False)
    assert r.status_code == 200
    out: dict[str, dict[str, float]] = {"attempts": {}, "wins": {}}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name == "hd_ladder_attempts_total":
                out["attempts"][s.labels["kind"]] = s.value
            elif s.name == "hd_ladder_wins_total":
                out["wins"][s.labels["kind"]] = s.value
    return out


async def test_a_relay_fallback_join_counts_one_relay_attempt_and_one_relay_win(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    lobby = await servers.lobby().astart()
    alice = cluster.new("alice", config=NO_DIRECT)  # no listener: the relay only
    bob = cluster.new("bob")
    await cluster.start(alice, bob)
    zero = {kind: 0.0 for kind in LINK_KINDS}
    assert await ladder_counts(bob) == {"attempts": zero, "wins": zero}  # shown from start
    for node in (alice, bob):
        await _connected_to_lobby(node, lobby.url)
    joined, steps = await _host_and_join(alice, bob)
    assert joined["via"] == "relay"
    assert await ladder_counts(bob) == {"attempts": {**zero, "relay": 1.0},
                                        "wins": {**zero, "relay": 1.0}}
    assert await ladder_counts(alice) == {"attempts": zero, "wins": zero}  # it was dialled


async def test_a_dead_candidate_counts_as_an_attempt_and_the_next_one_wins(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    """alice advertises an address where nothing listens, ahead of her real listener:
    bob's ladder tries both directly and the second wins before the relay's turn."""
    lobby = await servers.lobby().astart()
    alice = cluster.new("alice", extra_args=["--advertise", "ws://127.0.0.1:1/peer-ws"])
    bob = cluster.new("bob")
    await cluster.start(alice, bob)
    for node in (alice, bob):
        await _connected_to_lobby(node, lobby.url)
    joined, steps = await _host_and_join(alice, bob)
    assert joined["via"] == "direct"
    assert [(s["step"], s["address"]) for s in steps if s["kind"] == "direct"][:2] == [
        ("start", "ws://127.0.0.1:1/peer-ws"), ("failed", "ws://127.0.0.1:1/peer-ws")]
    zero = {kind: 0.0 for kind in LINK_KINDS}
    assert await ladder_counts(bob) == {"attempts": {**zero, "direct": 2.0},
                                        "wins": {**zero, "direct": 1.0}}
