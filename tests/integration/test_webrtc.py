"""WebRTC between real nodes on loopback (SPEC 8.4): signalled through a real lobby,
aiortc on each node's own asyncio thread, the same handshake and session as any link.

- a room host with no listener is reached over WebRTC (1 s rung) before the relay rung
  (1.5 s) would start: chat, a 300 KB pane write in fragments, and nothing through
  the relay;
- with ``icePolicy = "relay"`` the channel runs through a real TURN server (coturn);
- glare: two nodes that each join the other's room offer at once, and one channel and
  one session result;
- a node without the ``webrtc`` extra (aiortc made unimportable) runs with
  ``enableWebRtc`` set, says so once, and simply has no webrtc rung: it is joined
  through the relay.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import trio

from .conftest import Cluster, NodeProcess, connected, eventually, samples
from .coturn import Coturn
from .servers import ServerProcess, Servers, servers  # noqa: F401 - the fixture
from .test_lobby import _chat, _connected_to_lobby, _host_and_join, _share_pane

WEBRTC = "[network]\nenableWebRtc = true\n"
NO_LISTENER = WEBRTC + "enableDirect = false\n"


async def _lobby_metric(lobby: ServerProcess, name: str) -> float:
    url = lobby.url.replace("ws://", "http://").rsplit("/", 1)[0] + "/metrics"

    def get() -> str:
        with httpx.Client(timeout=10) as c:
            return c.get(url).text

    return sum(v for _, v in samples(await trio.to_thread.run_sync(get), name))


async def _relay_idle(lobby: ServerProcess, attached: int) -> float:
    """Once ``attached`` nodes hold their relay connections: the frames it has read."""
    async def ready() -> bool:
        return await _lobby_metric(lobby, "hd_relay_connections") >= attached
    await eventually(ready, timeout=15, what="both nodes to attach to the lobby's relay")
    return await _lobby_metric(lobby, "hd_relay_frames_in_total")


def _opened(node: NodeProcess) -> list[str]:
    return re.findall(r"webrtc link open .*", node.log_text())


async def _pane_write(writer: NodeProcess, reader: NodeProcess, text: str) -> None:
    """After ``_share_pane``: one big edit, seen whole on the other side."""
    async with writer.client() as tw, reader.client() as tr:
        rev = (await tw.request("collab", "join", {"paneKey": "shared"}))["rev"]
        await tw.request("collab", "op", {"paneKey": "shared", "baseRev": rev, "text": text},
                         timeout=20)

        async def arrived() -> bool:
            state = await tr.request("collab", "join", {"paneKey": "shared"}, timeout=20)
            return bool(state["text"] == text)

        await eventually(arrived, timeout=20, what="the 300 KB edit on the other side")


async def test_a_host_without_a_listener_is_joined_over_webrtc_before_the_relay_rung(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    lobby = await servers.lobby().astart()
    alice = cluster.new("alice", config=NO_LISTENER)
    bob = cluster.new("bob", config=WEBRTC)
    await cluster.start(alice, bob)
    for node in (alice, bob):
        await _connected_to_lobby(node, lobby.url)
    frames = await _relay_idle(lobby, 2)
    t0 = trio.current_time()
    joined, steps = await _host_and_join(alice, bob)
    took = trio.current_time() - t0
    assert joined["via"] == "webrtc" and joined["peer"]["node_id"] == alice.node_id
    # No direct candidate: the ladder starts its first timed rung, WebRTC, at once (SPEC
    # 8.2: a timed kind starts early when nothing else is trying), and it wins before
    # the relay's rung (1.5 s) ever runs.
    assert [(s["kind"], s["step"]) for s in steps] == [("webrtc", "start"), ("webrtc", "won")]
    assert took < 1.5, took
    assert (await bob.peer(alice.node_id) or {}).get("transport") == "webrtc"
    await eventually(lambda: connected(alice, bob), timeout=10, what="alice's session")
    assert (await alice.peer(bob.node_id) or {}).get("transport") == "webrtc"
    await _chat(bob, alice, "over a data channel")
    await _chat(alice, bob, "and back")
    await _share_pane(alice, bob)
    await _pane_write(bob, alice, "w" * 300_000)  # an envelope of ~400 KB: 7 fragments
    await _pane_write(alice, bob, "v" * 300_000)
    assert await _lobby_metric(lobby, "hd_relay_frames_in_total") == frames  # the relay idled
    assert len(_opened(alice)) == 1 and "role=answerer" in _opened(alice)[0]
    assert len(_opened(bob)) == 1 and "role=offerer" in _opened(bob)[0]


def _turn_config(coturn: Coturn, listener: bool) -> str:
    return (f"{WEBRTC}icePolicy = \"relay\"\nturnUrls = [\"{coturn.turn_url}\"]\n"
            f"turnUsername = \"{coturn.USER}\"\nturnCredential = \"{coturn.PASSWORD}\"\n"
            + ("" if listener else "enableDirect = false\n"))


async def test_with_ice_policy_relay_the_channel_runs_through_turn(
    cluster: Cluster, servers: Servers, tmp_path: Path,  # noqa: F811
) -> None:
    coturn = Coturn(tmp_path, extra_args=("-v",))  # -v: one log line per allocation
    await trio.to_thread.run_sync(coturn.start)
    try:
        lobby = await servers.lobby().astart()
        alice = cluster.new("alice", config=_turn_config(coturn, listener=False))
        bob = cluster.new("bob", config=_turn_config(coturn, listener=True))
        await cluster.start(alice, bob)
        for node in (alice, bob):
            await _connected_to_lobby(node, lobby.url)
        frames = await _relay_idle(lobby, 2)
        joined, _ = await _host_and_join(alice, bob)
        assert joined["via"] == "webrtc"
        await _chat(bob, alice, "through TURN")
        await _chat(alice, bob, "and back through TURN")
        log = coturn.log_text()
        # Both ends allocated a relayed address and sent to the other's through it.
        assert len(re.findall(r"ALLOCATE processed, success", log)) >= 2, log[-3000:]
        assert re.search(r"(CHANNEL_BIND|CREATE_PERMISSION) processed, success", log)
        assert await _lobby_metric(lobby, "hd_relay_frames_in_total") == frames
        # The credential is a secret: it is in no node's log.
        for node in (alice, bob):
            assert f"turnCredential = \"{coturn.PASSWORD}\"" not in node.log_text()
            assert len(_opened(node)) == 1
    finally:
        await trio.to_thread.run_sync(coturn.stop)


async def test_glare_two_nodes_offering_at_once_get_one_channel_and_one_session(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    lobby = await servers.lobby().astart()
    alice = cluster.new("alice", config=NO_LISTENER)
    bob = cluster.new("bob", config=NO_LISTENER)
    await cluster.start(alice, bob)
    for node in (alice, bob):
        await _connected_to_lobby(node, lobby.url)
    rooms: dict[str, Any] = {}
    for node in (alice, bob):
        async with node.client() as tab:
            rooms[node.name] = (await tab.request("lobby", "create_room", {
                "name": node.name, "visibility": "public", "joinPolicy": "open"}))["room"]
    joined: dict[str, Any] = {}

    async def join(tab: Any, name: str, room: dict[str, Any]) -> None:
        joined[name] = await tab.request("lobby", "join_room", {"roomId": room["id"]},
                                         timeout=20)

    # Each joins the other's room at the same moment (tabs open first): both ladders
    # start their WebRTC rung together, and both offer to the other.
    async with alice.client() as ta, bob.client() as tb, trio.open_nursery() as n:
        n.start_soon(join, ta, "alice", rooms["bob"])
        n.start_soon(join, tb, "bob", rooms["alice"])
    assert joined["alice"]["via"] == joined["bob"]["via"] == "webrtc"
    assert joined["alice"]["peer"]["node_id"] == bob.node_id
    assert joined["bob"]["peer"]["node_id"] == alice.node_id
    await _chat(alice, bob, "one channel")
    await _chat(bob, alice, "one session")
    await trio.sleep(0.5)  # nothing else opens, and no second session comes and goes
    for node in (alice, bob):
        assert len(_opened(node)) == 1, _opened(node)
        assert "duplicate session" not in node.log_text()
    small, large = sorted((alice, bob), key=lambda n: n.node_id)
    assert "role=offerer" in _opened(small)[0] and "role=answerer" in _opened(large)[0]
    # The larger id dropped its own offer (sent, or still being made) for the smaller's.
    glare = "webrtc glare" in large.log_text() and "kept=theirs" in large.log_text()
    waited = any("webrtc dial waits for the link under way" in n.log_text()
                 for n in (alice, bob))
    assert glare or waited  # the offers crossed, or the later one saw the first coming


async def test_a_node_without_the_webrtc_extra_has_no_webrtc_rung_and_is_joined_by_relay(
    cluster: Cluster, servers: Servers, tmp_path: Path,  # noqa: F811
) -> None:
    blocked = tmp_path / "no-aiortc"
    (blocked / "aiortc").mkdir(parents=True)
    (blocked / "aiortc" / "__init__.py").write_text(
        'raise ImportError("aiortc is not installed (made so by the test)")\n')
    lobby = await servers.lobby().astart()
    alice = cluster.new("alice", config=NO_LISTENER,
                        extra_env={"PYTHONPATH": str(blocked)})
    bob = cluster.new("bob", config=WEBRTC)
    await cluster.start(alice, bob)
    assert "the webrtc extra (aiortc) is not installed" in alice.log_text()
    for node in (alice, bob):
        await _connected_to_lobby(node, lobby.url)
    joined, steps = await _host_and_join(alice, bob)
    assert joined["via"] == "relay"
    assert "webrtc" not in {s["kind"] for s in steps}, steps  # no such rung for alice
    await _chat(bob, alice, "without aiortc, through the relay")
    assert _opened(alice) == [] and _opened(bob) == []
