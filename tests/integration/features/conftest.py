"""Helpers for the collab and peer-chat integration tests (SPEC 6.1, 6.2, 9).

The node processes come from the integration harness one folder up (``Cluster``,
``NodeProcess``: real ``hd-node run`` processes on loopback, stopped with SIGINT then
SIGKILL by the ``cluster`` fixture). What is here is about the features: pairing over
``/ws`` (faster than two CLI interpreters), opening several tabs at once, and waiting
until every tab agrees on a pane.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from hd_node.client import NodeClient

from ..conftest import PYTHON, NodeProcess, eventually

GUEST_HOST = Path(__file__).with_name("guest_host.py")

Version = tuple[int, str, str]  # (rev, author, text)


async def pair(inviter: NodeProcess, redeemer: NodeProcess, *, timeout: float = 10.0) -> None:
    """Pair over /ws (invite_create on one, pair_redeem on the other) and wait until
    both nodes list the other as connected and trusted."""
    async with inviter.client() as ti, redeemer.client() as tr:
        inv = await ti.request("network", "invite_create")
        res = await tr.request("network", "pair_redeem", {"invite": inv["invite"]},
                               timeout=timeout)
        assert res["ok"] is True, res
        for tab, other in ((ti, redeemer), (tr, inviter)):

            async def up(tab: NodeClient = tab, other: NodeProcess = other) -> bool:
                return await is_connected(tab, other.node_id)

            await eventually(up, timeout=timeout, what=f"a session with {other.name}")


async def peer_of(tab: NodeClient, node_id: str) -> dict[str, Any] | None:
    peers = (await tab.request("network", "list_peers"))["peers"]
    return next((p for p in peers if p["node_id"] == node_id), None)


async def is_connected(tab: NodeClient, node_id: str) -> bool:
    p = await peer_of(tab, node_id)
    return p is not None and p["status"] == "connected" and p["level"] == "trusted"


async def is_down(tab: NodeClient, node_id: str) -> bool:
    p = await peer_of(tab, node_id)
    return p is not None and p["status"] != "connected"


@asynccontextmanager
async def tabs(*nodes: NodeProcess, pane: str | None = None) -> AsyncIterator[list[NodeClient]]:
    """One /ws tab per argument (repeat a node for several tabs on it), all closed at
    the end; with ``pane``, each has that pane open (a pane's writes go only to the
    tabs that joined it, as the page joins the pane it shows)."""
    async with AsyncExitStack() as stack:
        opened = [await stack.enter_async_context(node.client()) for node in nodes]
        if pane is not None:
            for tab in opened:
                await tab.request("collab", "join", {"paneKey": pane})
        yield opened


def last_op(tab: NodeClient, key: str) -> Version | None:
    """The newest ``op`` this tab received for pane ``key``."""
    for ev in reversed(tab.events):
        d = ev.get("data") or {}
        if ev.get("channel") == "collab" and ev.get("event") == "op" and d.get("paneKey") == key:
            return (d["rev"], d["author"], d["text"])
    return None


async def fresh_state(node: NodeProcess, key: str) -> Version:
    """What a tab that opens now sees: ``join`` on a new tab."""
    async with node.client() as tab:
        st = await tab.request("collab", "join", {"paneKey": key})
    return (st["rev"], st["author"], st["text"])


async def all_tabs_show(tabs_: Sequence[NodeClient], key: str, want: Version, *,
                        timeout: float) -> None:
    """Wait until the newest ``op`` of every tab is ``want``; fail at the deadline with
    what each tab last saw."""
    def seen() -> list[Version | None]:
        return [last_op(t, key) for t in tabs_]

    with trio.move_on_after(timeout):
        while any(v != want for v in seen()):
            await trio.sleep(0.01)
        return
    raise AssertionError(f"tabs did not converge on {want} within {timeout} s: {seen()}")


def guest_host(cluster: Any, name: str, guest_id: str, guest_key: str) -> NodeProcess:
    """A node process that admits ``guest_id``/``guest_key`` as a guest (see
    ``guest_host.py``: the record a room host would get from the lobby)."""

    class GuestHost(NodeProcess):
        def command(self) -> list[str]:
            return [PYTHON, str(GUEST_HOST), "--data-dir", str(self.data_dir),
                    "--ui-port", str(self.ui_port_arg), "--peer-port", str(self.peer_port_arg),
                    "--name", self.name, "--guest", f"{guest_id}:{guest_key}"]

    node = GuestHost(cluster.root, name)
    cluster.nodes.append(node)  # stopped by the cluster fixture like every other node
    return node
