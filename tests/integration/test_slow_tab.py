"""A tab that stops reading is cut loose; the node and the other tabs carry on.

Every queue is bounded (a tab's outbound queue holds 512 events): a browser that
stalls must not stall the hub or grow memory without limit.
"""

from __future__ import annotations

import json
import threading

import trio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from .conftest import Cluster, eventually

TEXT = "x" * 60_000


async def test_a_tab_that_stops_reading_is_closed_and_the_node_keeps_serving_others(
    cluster: Cluster,
) -> None:
    (alice,) = await cluster.spawn("alice")
    closed_with: list[int | None] = []
    drained = threading.Event()
    with ws_connect(f"{alice.ws_url}?token={alice.token}", max_size=None, max_queue=4,
                    open_timeout=5, ping_interval=None) as slow:
        async with alice.client() as fast:
            await fast.request("collab", "join", {"paneKey": "flood"})
            # The slow tab has the pane open too (a pane's writes go only to the tabs
            # that joined it), then reads nothing more.
            slow.send(json.dumps({"channel": "collab", "event": "join",
                                  "data": {"paneKey": "flood"}}))
            await fast.wait_for("collab", "presence", lambda d: d.get("paneKey") == "flood"
                                and len(d.get("members", [])) == 2)
            rev = 0
            with trio.fail_after(60):
                while "tab dropped: too slow" not in alice.log_text():
                    state = await fast.request("collab", "op", {
                        "paneKey": "flood", "baseRev": rev, "text": TEXT + str(rev)})
                    rev = state["rev"]
            # The fast tab and the node are unaffected.
            peers = await fast.request("network", "list_peers")
            assert peers["self"]["node_id"] == alice.node_id

        def drain() -> None:
            try:
                while True:
                    slow.recv(timeout=10)
            except ConnectionClosed as exc:
                closed_with.append(exc.rcvd.code if exc.rcvd else None)
            except TimeoutError:
                closed_with.append(None)
            drained.set()

        await trio.to_thread.run_sync(drain)
    assert drained.is_set() and closed_with == [1013], closed_with

    async def tabs_gauge_back_to_zero() -> bool:
        return await alice.metric("hd_tabs") == 0.0

    await eventually(tabs_gauge_back_to_zero, timeout=10, what="hd_tabs to drop to 0")
