"""A transport the hub has never heard of plugs into the seam and carries everything.

Two real nodes minus their listeners (``hd_node.node.compose``: stores, sessions,
features, commands) run in one trio run and meet only through ``MemoryTransport`` — in-memory
links of a kind ``"memory"`` no hub module names. They handshake, chat with delivery
acks, share a pane, see a dropped link and dial again, exactly as over WebSocket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from hd_node.config import Settings
from hd_node.hub.trust import DialIntent
from hd_node.metrics import NodeMetrics
from hd_node.node import Parts, compose
from hd_node.store import NodeStore
from hd_protocol import DialCandidate, Identity
from hd_protocol.limits import DEFAULT_LIMITS

from .memlink import MemoryNetwork

A = Identity.from_seed(b"\x1a" * 32)
B = Identity.from_seed(b"\x1b" * 32)


def make_hub(tmp: Path, ident: Identity, other: Identity, net: MemoryNetwork,
             address: str) -> tuple[Parts, Any]:
    store = NodeStore(tmp / f"{address}.db")
    store.pin_peer(other.node_id, other.public_key, now=0, trusted=True)
    hub = compose(ident, Settings(data_dir=tmp, node_name=address), store, NodeMetrics(),
                  limits=DEFAULT_LIMITS)
    transport = net.transport(address)
    hub.transports.add(transport)
    return hub, transport


async def eventually(check: Any, what: str, timeout: float = 5.0) -> None:
    with trio.move_on_after(timeout):
        while not check():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_two_hubs_chat_and_share_a_pane_over_a_transport_the_hub_never_names(
    tmp_path: Path,
) -> None:
    net = MemoryNetwork()
    hub_a, t_a = make_hub(tmp_path, A, B, net, "a")
    hub_b, t_b = make_hub(tmp_path, B, A, net, "b")
    async with trio.open_nursery() as n:
        for hub, t in ((hub_a, t_a), (hub_b, t_b)):
            await n.start(hub.run)
            await n.start(t.serve, hub)
        driver = await hub_a.connector.dial_any(
            [DialCandidate("memory", "b")],
            DialIntent(expected_node_id=B.node_id, expected_key=B.public_key))
        assert driver.peer_id == B.node_id and driver.kind == "memory"
        await eventually(lambda: hub_b.sessions.get(A.node_id) is not None, "b's session")
        assert hub_a.peers.peer_info(B.node_id)["transport"] == "memory"

        tab = hub_a.bus.subscribe()
        await hub_a.commands.run("peerchat", "send", {"node_id": B.node_id, "text": "hi"}, tab)
        (sent,) = hub_a.features.chat.history(B.node_id)
        await eventually(
            lambda: hub_a.features.chat.message(B.node_id, sent.id).status == "delivered",
            "the ack")
        assert [m.text for m in hub_b.features.chat.history(A.node_id)] == ["hi"]

        await hub_a.commands.run("collab", "share", {"paneKey": "p", "node_id": B.node_id}, tab)
        await hub_a.commands.run("collab", "op", {"paneKey": "p", "baseRev": 0, "text": "x"},
                                 tab)
        await eventually(lambda: hub_b.features.panes.pane("p").text == "x", "the pane")

        # The link drops (no bye): both sides see the session end, and a new dial over
        # the same transport picks the conversation up again.
        await driver.link.aclose()
        await eventually(lambda: hub_a.sessions.get(B.node_id) is None
                         and hub_b.sessions.get(A.node_id) is None, "both to see it end")
        await hub_a.connector.dial_any(
            [DialCandidate("memory", "b")],
            DialIntent(expected_node_id=B.node_id, expected_key=B.public_key))
        await hub_a.commands.run("peerchat", "send", {"node_id": B.node_id, "text": "again"},
                                 tab)
        await eventually(lambda: len(hub_b.features.chat.history(A.node_id)) == 2,
                         "the second message")
        await hub_a.shutdown()
        await hub_b.shutdown()
        n.cancel_scope.cancel()
    hub_a.store.close()
    hub_b.store.close()
