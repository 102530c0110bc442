"""STUN against a real server (Debian's coturn on loopback): the client learns its
mapped address, gives up on a silent server after exactly the configured sends, and a
node with ``--ice`` registers its server-reflexive candidate with a real lobby
(SPEC 8.1, 8.3)."""

from __future__ import annotations

import statistics

import trio

from hd_node.transports.stun import Mapped, StunFailed, binding
from hd_protocol import priority
from hd_protocol.stun import BINDING, REQUEST, decode_message

from .conftest import Cluster, NodeProcess, eventually
from .coturn import Coturn, coturn  # noqa: F401 - the fixture
from .lobbyclients import fleet, is_type
from .servers import Servers, servers  # noqa: F401 - the fixture


async def test_the_stun_client_learns_its_mapped_address_from_coturn(
    coturn: Coturn,  # noqa: F811
) -> None:
    out = await binding(("127.0.0.1", coturn.port))
    assert isinstance(out, Mapped), out
    # On loopback there is no NAT: coturn sees our socket's own address and port.
    assert (out.host, out.port) == ("127.0.0.1", out.local[1])
    assert out.server == ("127.0.0.1", coturn.port) and out.sends == 1
    rtts = [out.elapsed_ms]
    for _ in range(20):
        again = await binding(("127.0.0.1", coturn.port))
        assert isinstance(again, Mapped) and again.host == "127.0.0.1"
        rtts.append(again.elapsed_ms)
    assert statistics.median(rtts) < 100, rtts  # one loopback round trip (~0.1 ms)


async def test_a_silent_server_gets_exactly_the_configured_sends_then_the_client_gives_up(
) -> None:
    silent = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with silent:
        await silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        t0 = trio.current_time()
        out = await binding(("127.0.0.1", port), rto_ms=20, max_sends=4, last_wait_rtos=2)
        elapsed = trio.current_time() - t0
        assert out == StunFailed("timeout", "timeout", 4)
        # Sends at 0, 20, 60 and 140 ms, then 2 RTOs of waiting: 180 ms in all.
        assert 0.18 <= elapsed < 1.5, elapsed
        got: list[bytes] = []
        while True:  # everything the silent server received, queued in its socket
            with trio.move_on_after(0.1) as waited:
                got.append(await silent.recv(65536))
            if waited.cancelled_caught:
                break
    assert len(got) == 4
    assert len(set(got)) == 1  # one transaction, resent as it was
    request = decode_message(got[0])
    assert (request.method, request.cls, request.fingerprint_ok) == (BINDING, REQUEST, True)


async def _registered(node: NodeProcess) -> bool:
    async with node.client() as tab:
        return bool((await tab.request("lobby", "state"))["connected"])


async def test_a_node_with_ice_registers_its_srflx_candidate_with_the_lobby(
    cluster: Cluster, servers: Servers, coturn: Coturn,  # noqa: F811
) -> None:
    """The room's host card, as a guest reads it from the lobby, carries the srflx
    candidate: the IP coturn saw with the node's peer port. The node's listener is on
    127.0.0.2 and its STUN socket on the wildcard, so on loopback the two differ (a
    srflx equal to a host candidate is left out, see test_reflexive)."""
    lobby = await servers.lobby().astart()
    alice = cluster.new("alice", extra_args=[
        "--peer-host", "127.0.0.2", "--ice", "--stun-server", coturn.stun_server,
        "--lobby", lobby.url])
    await alice.astart()
    await eventually(lambda: _registered(alice), timeout=10, what="alice's registration")
    async with alice.client() as tab:
        room = (await tab.request("lobby", "create_room", {
            "name": "r", "visibility": "public", "joinPolicy": "open"}))["room"]
    srflx = {"type": "srflx", "url": f"ws://127.0.0.1:{alice.peer_port}/peer-ws",
             "priority": priority("srflx", 65535)}
    host = {"type": "host", "url": f"ws://127.0.0.2:{alice.peer_port}/peer-ws",
            "priority": priority("host", 65534)}
    async with fleet() as f:
        guest = await f.lobby_node(lobby.url, "guest")
        join = guest.client.join_room(room["id"])
        info = await guest.request(join.wire, is_type("room_info", roomId=room["id"]))
    addresses = info["host"]["addresses"]
    assert srflx in addresses and host in addresses, addresses
    assert addresses.index(host) < addresses.index(srflx)  # best first
    # The first registration carried it: the node waited for coturn's answer.
    assert "registering again" not in alice.log_text()
    me = (await alice.http("GET", "/api/self")).json()
    assert srflx["url"] in me["addrs"]
    assert await alice.metric("hd_stun_bindings_total", result="ok") == 1
