"""Peer chat between real nodes (SPEC 6.2, 9): queued while the peer is down, delivered
when it is back, kept across restarts under one id, never duplicated by a replay, and
mirrored to every tab."""

from __future__ import annotations

from typing import Any

import trio

from hd_node.client import NodeClient
from hd_protocol import decode_invite
from hd_protocol import session as ss

from ..conftest import Cluster, NodeProcess, RawPeer, eventually, free_port, now_ms
from .conftest import is_connected, is_down, pair, tabs


def _fixed_ports(cluster: Cluster, name: str) -> NodeProcess:
    # Restarted nodes must come back where their peers remember them.
    return cluster.new(name, ui_port=free_port(), peer_port=free_port())


async def _history(tab: NodeClient, node_id: str) -> list[dict[str, Any]]:
    return list((await tab.request("peerchat", "open", {"node_id": node_id}))["messages"])


def _summary(messages: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(m["id"], m["direction"], m["text"], m["status"]) for m in messages]


async def test_message_to_a_down_peer_is_queued_then_delivered_and_both_keep_it_across_restarts(
    cluster: Cluster,
) -> None:
    a, b = _fixed_ports(cluster, "alice"), _fixed_ports(cluster, "bob")
    await cluster.start(a, b)
    await pair(a, b)
    await b.astop()

    async with tabs(a) as (ta,):
        await eventually(lambda: is_down(ta, b.node_id), timeout=10, what="bob to be down")
        mark = ta.mark()
        await ta.request("peerchat", "send", {"node_id": b.node_id, "text": "  while you slept "})
        sent = await ta.wait_for("peerchat", "message", lambda d: d["direction"] == "out",
                                 since=mark)
        msg_id = sent["data"]["id"]
        assert sent["data"]["status"] == "queued"
        assert sent["data"]["text"] == "while you slept"  # SPEC 6.2: trimmed
        assert _summary(await _history(ta, b.node_id)) == [
            (msg_id, "out", "while you slept", "queued")]

        await b.astart()  # same data dir and ports; the session comes back by itself
        await ta.wait_for("peerchat", "status",
                          lambda d: d["id"] == msg_id and d["status"] == "delivered",
                          since=mark, timeout=20)
        statuses = [ev["data"]["status"] for ev in list(ta.events)[mark:]
                    if ev["channel"] == "peerchat" and ev["event"] == "status"]
        assert statuses == ["sent", "delivered"]

    # Both nodes restart. Alice comes back alone first, so what she shows is what she
    # stored (no session could have changed it); then bob, and they reconnect.
    await cluster.stop(a, b)
    await a.astart()
    async with tabs(a) as (ta,):
        assert await is_down(ta, b.node_id)
        assert _summary(await _history(ta, b.node_id)) == [
            (msg_id, "out", "while you slept", "delivered")]
        await b.astart()
        async with tabs(b) as (tb,):
            assert _summary(await _history(tb, a.node_id)) == [
                (msg_id, "in", "while you slept", "delivered")]
            await eventually(lambda: is_connected(ta, b.node_id), timeout=20,
                             what="alice and bob to reconnect")
            await eventually(lambda: is_connected(tb, a.node_id), timeout=20,
                             what="bob and alice to reconnect")
            # Reconnecting flushes nothing delivered: neither has a second copy.
            assert [m["id"] for m in await _history(ta, b.node_id)] == [msg_id]
            assert [m["id"] for m in await _history(tb, a.node_id)] == [msg_id]


async def test_replayed_peer_chat_is_acked_each_time_but_stored_once_with_its_first_text(
    cluster: Cluster,
) -> None:
    (b,) = await cluster.spawn("bob")
    async with tabs(b) as (tb,):
        invite = decode_invite((await tb.request("network", "invite_create"))["invite"])
        msg_id = "0123456789abcdef0123456789abcdef"
        first = {"text": "the original", "from_name": "raw"}

        def run_raw() -> dict[str, Any]:
            out: dict[str, Any] = {"acks": 0}
            with RawPeer(b.peer_url, expected_node_id=b.node_id, token=invite["token"]) as raw:
                session = raw.handshake()
                out["node_id"] = raw.identity.node_id

                def send(data: dict[str, Any]) -> str:
                    _, outs = session.send("peer_chat", data, now_ms(), msg_id=msg_id)
                    (wire,) = [o.wire for o in outs if isinstance(o, ss.Send)]
                    raw.send_raw(wire)
                    return wire

                def ack() -> None:
                    raw.wait_output(lambda o: isinstance(o, ss.Message)
                                    and o.type == "peer_chat_ack"
                                    and o.data == {"id": msg_id} and o.re == msg_id)
                    out["acks"] += 1

                wire = send(first)
                ack()
                send(first)  # the same message again, in a new envelope
                ack()
                send({"text": "an overwrite", "from_name": "raw"})  # same id, new text
                ack()
                # The very same envelope again is a session-level replay (SPEC 3.1 seq):
                # dropped before chat sees it. A ping behind it proves no ack came.
                raw.send_raw(wire)
                out["rtt"] = raw.ping()
                out["extra_acks"] = sum(
                    1 for o in raw.received
                    if isinstance(o, ss.Message) and o.type == "peer_chat_ack") - 3
            return out

        mark = tb.mark()
        got = await trio.to_thread.run_sync(run_raw)
        assert got["acks"] == 3
        assert got["extra_acks"] == 0
        peer = got["node_id"]
        history = await _history(tb, peer)
        assert [(m["id"], m["direction"], m["text"], m["from_name"]) for m in history] == [
            (msg_id, "in", "the original", "raw")]
        messages = [ev for ev in list(tb.events)[mark:]
                    if ev["channel"] == "peerchat" and ev["event"] == "message"]
        assert [ev["data"]["id"] for ev in messages] == [msg_id]
        assert (await tb.request("peerchat", "unread"))["counts"] == {peer: 1}


async def test_two_tabs_see_every_incoming_message_and_unread_counts_follow_read(
    cluster: Cluster,
) -> None:
    a, b = await cluster.spawn("alice", "bob")
    await pair(a, b)
    async with tabs(a, b, b) as (ta, b1, b2):
        texts = ["one", "two", "three"]
        for text in texts:
            await ta.request("peerchat", "send", {"node_id": b.node_id, "text": text})
        out_ids = [ev["data"]["id"] for ev in list(ta.events)
                   if ev["channel"] == "peerchat" and ev["event"] == "message"]
        assert len(out_ids) == 3
        for tab in (b1, b2):
            await tab.wait_for("peerchat", "message", lambda d: d["id"] == out_ids[-1])
            got = [(ev["data"]["id"], ev["data"]["text"], ev["data"]["direction"])
                   for ev in tab.events if ev["channel"] == "peerchat"
                   and ev["event"] == "message"]
            assert got == [(i, t, "in") for i, t in zip(out_ids, texts, strict=True)]
            await tab.wait_for("peerchat", "unread", lambda d: d["counts"] == {a.node_id: 3})
        assert (await b2.request("peerchat", "unread"))["counts"] == {a.node_id: 3}

        # Reading on one tab clears the count on every tab.
        m2 = b2.mark()
        await b1.request("peerchat", "read", {"node_id": a.node_id})
        ev = await b2.wait_for("peerchat", "unread", since=m2)
        assert ev["data"]["counts"] == {a.node_id: 0}
        assert (await b2.request("peerchat", "unread"))["counts"] == {a.node_id: 0}

        # A new message after the read counts again, on both tabs.
        marks = (b1.mark(), b2.mark())
        await ta.request("peerchat", "send", {"node_id": b.node_id, "text": "four"})
        for tab, mark in zip((b1, b2), marks, strict=True):
            await tab.wait_for("peerchat", "message", lambda d: d["text"] == "four", since=mark)
            ev = await tab.wait_for("peerchat", "unread", lambda d: d["counts"] != {},
                                    since=mark)
            assert ev["data"]["counts"] == {a.node_id: 1}
        # The sender saw each of its messages delivered.
        for i in out_ids:
            await ta.wait_for("peerchat", "status",
                              lambda d, i=i: d["id"] == i and d["status"] == "delivered")
