"""A pane's text goes only to the tabs that have it open (issue 20): a tab with another
pane open is told who wrote where (``collab written``), never the text."""

from __future__ import annotations

import json

from .conftest import Cluster

BIG = "x" * 100_000


async def test_a_tab_that_did_not_join_a_pane_gets_no_op_or_state_for_it(cluster: Cluster) -> None:
    (alice,) = await cluster.spawn("alice")
    async with alice.client() as a, alice.client() as b:
        await a.request("collab", "join", {"paneKey": "p"})
        await b.request("collab", "join", {"paneKey": "q"})
        since_a, since_b = a.mark(), b.mark()
        rev = 0
        for i in range(3):
            rev = (await a.request("collab", "op", {"paneKey": "p", "baseRev": rev,
                                                     "text": f"{BIG}{i}"}))["rev"]
        # b's own write is answered after what the node pushed to b for a's three (one
        # queue per tab, in order): everything about "p" that b will get is there.
        await b.request("collab", "op", {"paneKey": "q", "baseRev": 0, "text": "fence"})
        got_b = [ev for ev in list(b.events)[since_b:] if ev["channel"] == "collab"]
        about_p = [ev for ev in got_b if ev["data"].get("paneKey") == "p"]
        assert [ev["event"] for ev in about_p] == ["written"] * 3, about_p
        assert [ev["data"]["rev"] for ev in about_p] == [1, 2, 3]
        assert all(set(ev["data"]) == {"paneKey", "rev", "author", "from"} for ev in about_p)
        assert sum(len(json.dumps(ev)) for ev in got_b) < 10_000  # not 300 KB of text
        # The tab that has "p" open gets every write of it, text and all; none of b's.
        ops_a = [ev for ev in list(a.events)[since_a:] if ev["event"] == "op"]
        assert [(ev["data"]["paneKey"], ev["data"]["text"]) for ev in ops_a] == [
            ("p", f"{BIG}{i}") for i in range(3)]
        await a.wait_for("collab", "written", lambda d: d.get("paneKey") == "q", since=since_a)
