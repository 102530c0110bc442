"""Real nodes on two lobby instances sharing one NATS (docs/cluster.md): a guest on
instance two joins a room hosted on instance one over each rung of the join ladder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from natsservers import NatsServer, nats_server

from .conftest import Cluster
from .servers import ServerProcess, Servers, servers  # noqa: F401 - the fixture
from .test_lobby import _chat, _connected_to_lobby, _host_and_join
from .test_webrtc import NO_LISTENER, WEBRTC


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    with nats_server(tmp_path / "nats") as server:
        yield server


async def two_instances(servers: Servers, nats: NatsServer,  # noqa: F811
                        ) -> tuple[ServerProcess, ServerProcess]:
    one = servers.lobby("lobby1", ["--cluster", nats.url, "--instance", "one"])
    two = servers.lobby("lobby2", ["--cluster", nats.url, "--instance", "two"])
    await one.astart()
    await two.astart()
    return one, two


async def test_a_guest_on_another_instance_joins_directly(
    cluster: Cluster, servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    one, two = await two_instances(servers, nats)
    alice, bob = await cluster.spawn("alice", "bob")
    await _connected_to_lobby(alice, one.url)
    await _connected_to_lobby(bob, two.url)
    joined, _ = await _host_and_join(alice, bob)
    assert joined["via"] == "direct" and joined["peer"]["node_id"] == alice.node_id
    await _chat(bob, alice, "across two lobby instances")
    await _chat(alice, bob, "and back")


async def test_a_guest_on_another_instance_joins_over_webrtc_signalled_across(
    cluster: Cluster, servers: Servers, nats: NatsServer,  # noqa: F811
) -> None:
    one, two = await two_instances(servers, nats)
    alice = cluster.new("alice", config=NO_LISTENER)
    bob = cluster.new("bob", config=WEBRTC)
    await cluster.start(alice, bob)
    await _connected_to_lobby(alice, one.url)
    await _connected_to_lobby(bob, two.url)
    joined, _ = await _host_and_join(alice, bob)
    assert joined["via"] == "webrtc"
    await _chat(bob, alice, "over a data channel signalled through two instances")
