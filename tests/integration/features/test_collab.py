"""Collaborative panes between real nodes (SPEC 6.1, 6.1.1, 4.1, 9).

Every node is an ``hd-node run`` process on loopback; every tab is a /ws client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import trio

from hd_node.client import NodeClient, SharedPane
from hd_protocol import Identity
from hd_protocol import session as ss

from ..conftest import Cluster, RawPeer
from .conftest import all_tabs_show, fresh_state, guest_host, last_op, pair, peer_of, tabs

KEY = "notes"
CONVERGE_S = 2.0  # the acceptance bound for two nodes


async def _share_and_seed(owner: NodeClient, sharer_id: str, others: list[NodeClient],
                          text: str) -> None:
    """Share ``KEY`` with one peer, write rev 1 from ``owner`` and wait for ``others``."""
    await owner.request("collab", "share", {"paneKey": KEY, "node_id": sharer_id})
    st = await owner.request("collab", "op", {"paneKey": KEY, "baseRev": 0, "text": text})
    assert st["rev"] == 1
    await all_tabs_show([owner, *others], KEY, (1, st["author"], text), timeout=CONVERGE_S)


def _ops_since(tab: NodeClient, mark: int, key: str) -> list[dict[str, Any]]:
    return [ev["data"] for ev in list(tab.events)[mark:]
            if ev["channel"] == "collab" and ev["event"] == "op"
            and ev["data"]["paneKey"] == key]


def _rejections_since(tab: NodeClient, mark: int) -> int:
    return sum(1 for ev in list(tab.events)[mark:]
               if ev["channel"] == "collab" and ev["event"] == "rejected")


async def test_concurrent_writes_on_one_base_rev_from_both_nodes_converge_on_all_tabs_within_2s(
    cluster: Cluster,
) -> None:
    """Each round, a tab on each node writes on the same rev at the same moment. Which
    of two things happens is a race on the wire, and both must end converged:
    both nodes accept their own write (the greater ``(rev, author)`` wins everywhere,
    SPEC 6.1), or one node has already adopted the other's write and answers
    ``rejected``, and that tab rebases (SPEC 6.1.1) so both edits survive."""
    a, b = await cluster.spawn("alice", "bob")
    await pair(a, b)
    outcomes = []
    async with tabs(a, a, b, b, pane=KEY) as (a1, a2, b1, b2):
        every = [a1, a2, b1, b2]
        await _share_and_seed(a1, b.node_id, every, "base")
        pa, pb = SharedPane(a1, KEY), SharedPane(b1, KEY)
        for round_ in range(6):
            await pa.join()
            await pb.join()
            assert (pa.rev, pa.text) == (pb.rev, pb.text)
            rev, text = pa.rev, pa.text
            marks = [t.mark() for t in every]
            start = trio.current_time()
            async with trio.open_nursery() as n:
                # Alternate who goes first: the tab frames leave this process in order.
                first, second = (pa, pb) if round_ % 2 == 0 else (pb, pa)
                n.start_soon(first.write, ("A" + text) if first is pa else (text + "B"))
                n.start_soon(second.write, ("A" + text) if second is pa else (text + "B"))

            seen = {(d["rev"], d["author"], d["text"])
                    for t, m in zip(every, marks, strict=True) for d in _ops_since(t, m, KEY)}
            want = max(seen)  # SPEC 6.1: every replica ends on the greatest pair written
            await all_tabs_show(every, KEY, want,
                                timeout=CONVERGE_S - (trio.current_time() - start))
            assert await fresh_state(a, KEY) == want
            assert await fresh_state(b, KEY) == want
            rejected = _rejections_since(a1, marks[0]) + _rejections_since(b1, marks[2])
            if rejected == 0:  # both written on `rev`: the greater author wins
                winner = max(a.node_id, b.node_id)
                assert want == (rev + 1, winner,
                                ("A" + text) if winner == a.node_id else (text + "B"))
                outcomes.append("both accepted")
            else:  # the loser of the race rebased onto the winner's text
                assert rejected == 1
                assert (want[0], want[2]) == (rev + 2, "A" + text + "B")
                outcomes.append("one rebased")
    print("concurrent rounds:", outcomes)


async def test_rejected_write_rebases_and_both_non_overlapping_edits_survive_on_both_nodes(
    cluster: Cluster,
) -> None:
    a, b = await cluster.spawn("alice", "bob")
    await pair(a, b)
    async with tabs(a, a, b, b, pane=KEY) as (a1, a2, b1, b2):
        every = [a1, a2, b1, b2]
        await _share_and_seed(a1, b.node_id, every, "alpha beta gamma")
        pa, pb = SharedPane(a1, KEY), SharedPane(b1, KEY)
        assert (await pa.join())["rev"] == 1
        assert (await pb.join())["rev"] == 1

        # Alice edits the start; bob's tab still holds rev 1 when it edits the end.
        await pa.write("ALPHA beta gamma")
        await all_tabs_show(every, KEY, (2, a.node_id, "ALPHA beta gamma"), timeout=CONVERGE_S)
        assert pb.rev == 1  # SharedPane only moves on its own answers or refresh()
        mark = b1.mark()
        state = await pb.write("alpha beta GAMMA")

        # Bob's node refused baseRev 1 (``rejected`` with rev 2), the tab rebased and
        # resubmitted on rev 2: both edits are in the text.
        rejected = await b1.wait_for("collab", "rejected", since=mark, timeout=1)
        assert (rejected["data"]["rev"], rejected["data"]["text"]) == (2, "ALPHA beta gamma")
        want = (3, b.node_id, "ALPHA beta GAMMA")
        assert (state["rev"], state["author"], state["text"]) == want
        await all_tabs_show(every, KEY, want, timeout=CONVERGE_S)
        assert await fresh_state(a, KEY) == want
        assert await fresh_state(b, KEY) == want


async def test_two_tabs_writing_on_one_base_rev_one_is_rejected_and_rebased_nothing_is_lost(
    cluster: Cluster,
) -> None:
    a, b = await cluster.spawn("alice", "bob")
    await pair(a, b)
    async with tabs(a, a, b, pane=KEY) as (a1, a2, b1):
        every = [a1, a2, b1]
        await _share_and_seed(a1, b.node_id, every, "one two three")
        p1, p2 = SharedPane(a1, KEY), SharedPane(a2, KEY)
        await p1.join()
        await p2.join()
        marks = (a1.mark(), a2.mark())
        async with trio.open_nursery() as n:  # same node, same base: one must lose
            n.start_soon(p1.write, "ONE two three")
            n.start_soon(p2.write, "one two THREE")

        rejections = 0
        for tab, mark in zip((a1, a2), marks, strict=True):
            rejections += sum(1 for ev in list(tab.events)[mark:]
                              if ev["channel"] == "collab" and ev["event"] == "rejected")
        assert rejections == 1
        want = (3, a.node_id, "ONE two THREE")
        await all_tabs_show(every, KEY, want, timeout=CONVERGE_S)
        assert await fresh_state(b, KEY) == want


async def test_pane_shared_along_a_chain_converges_on_all_three_whoever_writes(
    cluster: Cluster,
) -> None:
    a, b, c = await cluster.spawn("alice", "bob", "carol")
    await pair(a, b)
    await pair(b, c)  # alice and carol never pair
    async with tabs(a, b, c, pane=KEY) as every:
        ta, tb, tc = every
        assert await peer_of(ta, c.node_id) is None
        assert await peer_of(tc, a.node_id) is None
        await ta.request("collab", "share", {"paneKey": KEY, "node_id": b.node_id})
        await tb.request("collab", "share", {"paneKey": KEY, "node_id": c.node_id})

        for rev, (writer, node) in enumerate(((ta, a), (tc, c), (tb, b)), start=1):
            text = f"written by {node.name}"
            st = await writer.request("collab", "op",
                                      {"paneKey": KEY, "baseRev": rev - 1, "text": text})
            want = (rev, node.node_id, text)
            assert (st["rev"], st["author"], st["text"]) == want
            await all_tabs_show(every, KEY, want, timeout=5.0)
            for n in (a, b, c):
                assert await fresh_state(n, KEY) == want, n.name
        # Alice and carol never had a session: every edit between them went through bob.
        assert await peer_of(ta, c.node_id) is None


async def test_peer_neither_trusted_nor_sharer_cannot_write_a_pane_until_it_is_shared(
    cluster: Cluster,
) -> None:
    """A guest (admitted through a pending room admission, SPEC 4.1 step 6 / 7.4) gets
    ``forbidden`` for a pane that is not shared with it, and may write once it is.

    The guest admission is put in place by ``guest_host.py`` because the lobby that
    would create it does not exist yet; the rest is the real node end to end."""
    guest = Identity.generate()
    host = guest_host(cluster, "host", guest.node_id, guest.public_key)
    await cluster.start(host)
    refused = threading.Event()

    def run_guest() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        with RawPeer(host.peer_url, guest, expected_node_id=host.node_id) as raw:
            raw.handshake()

            def error_for(mid: str) -> Callable[[Any], bool]:
                return lambda o: isinstance(o, ss.PeerError) and o.re == mid

            op = {"paneKey": "private", "rev": 1, "author": guest.node_id, "text": "intrude"}
            mid = raw.send("collab_op", op)
            seen["op"] = raw.wait_output(error_for(mid)).code
            mid = raw.send("collab_join", {"paneKey": "private"})
            seen["join"] = raw.wait_output(error_for(mid)).code
            mid = raw.send("agent_request", {"request_id": "r1", "prompt": "hi",
                                             "origin_chain": [guest.node_id]})
            seen["agent"] = raw.wait_output(error_for(mid)).code
            refused.set()
            # The host shares "open" with us: its state arrives, then we may write it.
            state = raw.wait_output(lambda o: isinstance(o, ss.Message)
                                    and o.type == "collab_op"
                                    and o.data["paneKey"] == "open", timeout=10)
            seen["shared_state"] = state.data
            raw.send("collab_op", {"paneKey": "open", "rev": 1, "author": guest.node_id,
                                   "text": "guest wrote this"})
            mid = raw.send("collab_op", op)  # sharing "open" does not open "private"
            seen["op_after_share"] = raw.wait_output(error_for(mid)).code
        return seen

    result: dict[str, Any] = {}

    async def guest_side() -> None:
        result.update(await trio.to_thread.run_sync(run_guest))

    async with tabs(host) as (t,):
        for key in ("private", "open"):  # the host's tab has both open: it would see a write
            await t.request("collab", "join", {"paneKey": key})
        async with trio.open_nursery() as n:
            n.start_soon(guest_side)
            ev = await t.wait_for("network", "peer_update",
                                  lambda d: d["peer"]["node_id"] == guest.node_id
                                  and d["peer"]["status"] == "connected", timeout=10)
            assert ev["data"]["peer"]["level"] == "guest"
            with trio.fail_after(10):
                while not refused.is_set():
                    await trio.sleep(0.02)
            assert last_op(t, "private") is None
            await t.request("collab", "share", {"paneKey": "open", "node_id": guest.node_id})
            op_ev = await t.wait_for("collab", "op", lambda d: d["paneKey"] == "open",
                                     timeout=10)

        assert result["op"] == result["join"] == result["op_after_share"] == "forbidden"
        assert result["agent"] == "forbidden"  # guests: ping, presence, chat, collab only
        assert result["shared_state"] == {"paneKey": "open", "rev": 0, "author": "",
                                          "text": ""}
        assert op_ev["data"] == {"paneKey": "open", "rev": 1, "author": guest.node_id,
                                 "text": "guest wrote this", "from": guest.node_id}
        assert last_op(t, "private") is None
    assert await fresh_state(host, "private") == (0, "", "")
    assert await fresh_state(host, "open") == (1, guest.node_id, "guest wrote this")
