"""Several ``hd-relay`` instances on one NATS (issue 19): the mailbox is a JetStream
stream any instance delivers from, nothing acknowledged is lost when an instance and a
NATS server die, and a relay that loses its bus keeps its live traffic and refuses to
queue (``unavailable``) until the bus is back.

Real processes: nats-server from the venv (``tests/natsservers``), ``hd-relay run
--cluster``, and raw spec-level nodes (attach, ``relay``, ``ack``) over WebSocket.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio
from natsservers import NatsServer, nats_cluster, nats_server

from hd_protocol import Identity, encode_envelope, make_envelope, new_msg_id, sign_envelope
from hd_protocol.brokers.frames import decode_frame, parse_challenge
from hd_protocol.brokers.relay import ack_frame, attach_frame, relay_frame
from hd_shell.ws.link import WsLink, dial_ws

from .conftest import eventually
from .servers import ServerProcess

READY_S = 20.0


def cluster_relay(root: Path, name: str, urls: list[str]) -> ServerProcess:
    return ServerProcess(root, name, "hd_relay", "relay.json",
                         ["--cluster", ",".join(urls), "--instance", name])


async def health(relay: ServerProcess) -> dict[str, Any]:
    r = await trio.to_thread.run_sync(
        lambda: httpx.get(f"http://127.0.0.1:{relay.port}/healthz", timeout=2.0))
    body: dict[str, Any] = r.json()
    return body


async def reached(relay: ServerProcess, status: str, timeout: float) -> None:
    """Until the relay's /healthz says ``status``."""
    async def says() -> bool:
        return (await health(relay))["status"] == status
    await eventually(says, timeout=timeout, what=f"{relay.name} {status}", interval=0.1)


async def metric(relay: ServerProcess, name: str) -> float | None:
    r = await trio.to_thread.run_sync(
        lambda: httpx.get(f"http://127.0.0.1:{relay.port}/metrics", timeout=2.0))
    for line in r.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class Node:
    """A raw node attached to one relay."""

    def __init__(self, ident: Identity, ws: WsLink, queued: int,
                 early: list[dict[str, Any]]) -> None:
        self.ident, self.ws, self.queued = ident, ws, queued
        self.pending = early  # frames read but not taken yet

    @classmethod
    async def attach(cls, url: str, ident: Identity) -> Node:
        ws = await dial_ws(url, timeout_s=5)
        with trio.fail_after(10):
            frames = list(await ws.receive_some())
            hello = parse_challenge(decode_frame(frames.pop(0), 1 << 20))
            await ws.send_many([attach_frame(ident, hello)])
            if not frames:
                frames = list(await ws.receive_some())
        attached = decode_frame(frames.pop(0), 1 << 20)
        assert attached["type"] == "attached", attached
        return cls(ident, ws, attached["queued"], [decode_frame(f, 2 << 20) for f in frames])

    async def frames(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        """``count`` frames; stored envelopes among them are acknowledged as they come
        (the relay sends the next batch once a batch is acknowledged)."""
        got, self.pending = self.pending, []
        await self._ack(got)
        with trio.fail_after(timeout):
            while len(got) < count:
                more = [decode_frame(f, 2 << 20) for f in await self.ws.receive_some()]
                await self._ack(more)
                got += more
        self.pending = got[count:]
        return got[:count]

    async def _ack(self, frames: list[dict[str, Any]]) -> None:
        qids = [f["qid"] for f in frames if f.get("type") == "relay" and "qid" in f]
        if qids:
            await self.ws.send_many([ack_frame(qids)])

    async def send(self, to: Identity, ns: range) -> None:
        await self.ws.send_many([relay_frame(to.node_id, envelope(self.ident, to, n))
                                 for n in ns])

    async def quiet(self, s: float = 0.5) -> list[Any]:
        with trio.move_on_after(s):
            return list(await self.ws.receive_some())
        return []


class Nodes:
    """Every node a test attached, closed at its end."""

    def __init__(self) -> None:
        self.all: list[Node] = []

    async def attach(self, url: str, ident: Identity) -> Node:
        node = await Node.attach(url, ident)
        self.all.append(node)
        return node

    async def aclose(self) -> None:
        for node in self.all:
            with trio.move_on_after(2):
                await node.ws.aclose()


def envelope(src: Identity, dst: Identity, n: int) -> str:
    env = make_envelope("ping", msg_id=new_msg_id(lambda k: n.to_bytes(k, "big")),
                        src=src.node_id, dst=dst.node_id, ts=1, data={"n": n})
    return encode_envelope(sign_envelope(env, src))


async def wait_queueing(relay: ServerProcess, sender: Node, timeout: float = READY_S) -> None:
    """Until the relay's mailbox takes an envelope (for a node nobody attaches)."""
    nobody = Identity.generate()
    with trio.fail_after(timeout):
        for n in range(1 << 20):
            await sender.send(nobody, range(n, n + 1))
            (answer,) = await sender.frames(1)
            if answer.get("status") == "queued":
                return
            assert answer["type"] == "error" and answer["code"] == "unavailable", answer
            await trio.sleep(0.2)


async def send_queued(sender: Node, to: Identity, ns: range, chunk: int = 100) -> None:
    for start in range(ns.start, ns.stop, chunk):
        part = range(start, min(start + chunk, ns.stop))
        await sender.send(to, part)
        answers = await sender.frames(len(part))
        assert [a.get("status") for a in answers] == ["queued"] * len(part), answers[:3]
        assert [a["msg_id"] for a in answers] == [
            new_msg_id(lambda k, n=n: n.to_bytes(k, "big")) for n in part]


async def until_live(sender: Node, to: Node, n: int) -> int:
    """Sends to ``to`` one envelope at a time from ``n`` until one arrives live (no qid:
    the sender's instance knows where ``to`` is attached); the next ``n``."""
    with trio.fail_after(READY_S):
        while True:
            await sender.send(to.ident, range(n, n + 1))
            (f,) = await to.frames(1)
            n += 1
            if "qid" not in f:
                return n


@contextlib.asynccontextmanager
async def two_relays(root: Path, urls: list[str],
                     ) -> AsyncIterator[tuple[ServerProcess, ServerProcess, Nodes]]:
    """Relays r1 and r2 on the NATS servers at ``urls``, started, and the test's nodes;
    all stopped at its end (a relay the test killed is only reaped)."""
    r1, r2 = cluster_relay(root, "r1", urls), cluster_relay(root, "r2", urls)
    nodes = Nodes()
    try:
        await r1.astart()
        await r2.astart()
        yield r1, r2, nodes
    finally:
        await nodes.aclose()
        r1.stop()
        r2.stop()


@contextlib.asynccontextmanager
async def bob_at_r2_alice_at_r1(root: Path) -> AsyncIterator[
        tuple[ServerProcess, ServerProcess, Nodes, Node, Node]]:
    """``two_relays`` on one NATS server, bob attached at r2, then alice at r1 once r1's
    mailbox takes envelopes: (r1, r2, nodes, alice's node, bob's node)."""
    with nats_server(root / "nats") as nats:
        async with two_relays(root, [nats.url]) as (r1, r2, nodes):
            b = await nodes.attach(r2.url, Identity.generate())
            a = await nodes.attach(r1.url, Identity.generate())
            await wait_queueing(r1, a)
            yield r1, r2, nodes, a, b


def numbers(frames: list[dict[str, Any]]) -> list[int]:
    assert all(f["type"] == "relay" for f in frames), [f for f in frames
                                                        if f["type"] != "relay"][:3]
    return [f["envelope"]["data"]["n"] for f in frames]


def stream_leader(servers: list[NatsServer]) -> NatsServer:
    """The server that leads the mailbox stream (the one whose loss hurts most)."""
    for s in servers:
        try:
            jsz = httpx.get(f"http://127.0.0.1:{s.monitor_port}/jsz?streams=true",
                            timeout=2.0).json()
        except httpx.HTTPError:
            continue
        for acc in jsz.get("account_details") or []:
            for st in acc.get("stream_detail") or []:
                leader = (st.get("cluster") or {}).get("leader")
                if st.get("name") == "HD_MAILBOX" and leader:
                    return next((x for x in servers if x.name == leader), servers[0])
    return servers[0]


async def test_what_one_instance_queued_survives_it_and_a_nats_server_and_arrives_once_in_order(
    tmp_path: Path,
) -> None:
    with nats_cluster(tmp_path / "nats", 3) as nats:
        async with two_relays(tmp_path, [s.url for s in nats]) as (r1, r2, nodes):
            alice, bob = Identity.generate(), Identity.generate()
            a = await nodes.attach(r1.url, alice)
            await wait_queueing(r1, a)
            await send_queued(a, bob, range(500))  # bob is attached nowhere

            # Instance 1 dies with no chance to say anything, and so does a NATS server
            # (the stream's leader: the replicas must elect another).
            r1.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            r1.proc.wait(10)  # type: ignore[union-attr]
            stream_leader(nats).stop(signal.SIGKILL)

            b = await nodes.attach(r2.url, bob)
            got = await b.frames(500, timeout=25)
            assert numbers(got) == list(range(500))  # all, in order, none twice
            assert {f["from"] for f in got} == {alice.node_id}
            assert len({f["qid"] for f in got}) == 500
            assert await b.quiet(1.0) == []  # nothing more: none twice


async def test_a_node_attached_at_one_instance_gets_what_is_sent_through_another_live_in_order(
    tmp_path: Path,
) -> None:
    async with bob_at_r2_alice_at_r1(tmp_path) as (r1, r2, nodes, a, b):
        alice, bob = a.ident, b.ident
        await wait_queueing(r2, b)
        # Until instance 1 knows bob is at instance 2: what it stores meanwhile comes
        # through the mailbox (with a qid, and an ack to alice); then live (neither).
        await until_live(a, b, 1000)
        await a.quiet(0.5)  # the acks of what was stored
        queued = [await metric(r, "hd_relay_envelopes_queued_total") for r in (r1, r2)]
        # Bob stays attached at instance 2 the whole time: no re-attach.
        for start in range(0, 300, 50):
            await a.send(bob, range(start, start + 50))
        got = await b.frames(300, timeout=20)
        assert numbers(got) == list(range(300))  # in order, none twice
        assert not any("qid" in f for f in got)  # live: not through the stream
        assert {f["from"] for f in got} == {alice.node_id}
        assert await b.quiet(0.5) == [] and await a.quiet(0.1) == []  # no acks: live
        assert [await metric(r, "hd_relay_envelopes_queued_total")
                for r in (r1, r2)] == queued
        assert await metric(r1, "hd_relay_envelopes_forwarded_total") >= 300  # type: ignore[operator]


async def test_a_relay_that_loses_its_bus_keeps_live_traffic_refuses_to_queue_and_recovers(
    tmp_path: Path,
) -> None:
    nats = NatsServer(tmp_path / "nats").start()
    relay = cluster_relay(tmp_path, "r1", [nats.url])
    nodes = Nodes()
    try:
        await relay.astart()
        alice, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()
        a = await nodes.attach(relay.url, alice)
        b = await nodes.attach(relay.url, bob)
        await wait_queueing(relay, a)
        await send_queued(a, carol, range(0, 5))  # carol is away: queued

        nats.stop(signal.SIGKILL)
        await reached(relay, "degraded", 10)
        assert await metric(relay, "hd_cluster_connected") == 0.0
        # Ten seconds without the bus: live traffic flows, queueing is refused.
        n, end = 100, trio.current_time() + 10  # (no cancel scope: it would cut a write)
        while trio.current_time() < end:
            await a.send(bob, range(n, n + 10))
            assert numbers(await b.frames(10)) == list(range(n, n + 10))
            await a.send(carol, range(n + 10, n + 11))
            (refused,) = await a.frames(1)
            assert refused["type"] == "error" and refused["code"] == "unavailable"
            n += 11
            await trio.sleep(0.2)
        assert n > 200 and relay.running
        body = await health(relay)
        assert body["status"] == "degraded" and body["cluster"]["connected"] is False

        await trio.to_thread.run_sync(nats.start)  # the same port and store
        await reached(relay, "ok", 15)
        await wait_queueing(relay, a)
        await send_queued(a, carol, range(5, 10))
        assert await metric(relay, "hd_cluster_connected") == 1.0
        c = await nodes.attach(relay.url, carol)  # what was queued before and after
        assert numbers(await c.frames(10)) == list(range(10))
        await a.send(bob, range(1000, 1003))  # and live still
        assert numbers(await b.frames(3)) == [1000, 1001, 1002]
    finally:
        await nodes.aclose()
        relay.stop()
        nats.stop()


async def test_when_the_receiving_instance_is_killed_later_envelopes_are_stored_and_delivered(
    tmp_path: Path,
) -> None:
    async with bob_at_r2_alice_at_r1(tmp_path) as (r1, r2, nodes, a, b):
        bob = b.ident
        n = await until_live(a, b, 1000)  # instance 1 sends bob's envelopes live
        await a.quiet(0.5)
        r2.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        r2.proc.wait(10)  # type: ignore[union-attr]
        # Live into the void until instance 1's map drops instance 2 (20 s without
        # its heartbeat); from then on stored, and acknowledged as such.
        first = None
        with trio.fail_after(40):
            while first is None:
                await a.send(bob, range(n, n + 1))
                for f in await a.quiet(0.5):
                    answer = decode_frame(f, 1 << 20)
                    if answer.get("status") == "queued" and first is None:
                        first = next(k for k in range(n, n - 100, -1) if new_msg_id(
                            lambda j, k=k: k.to_bytes(j, "big")) == answer["msg_id"])
                n += 1
        await send_queued(a, bob, range(n, n + 50))
        b2 = await nodes.attach(r1.url, bob)  # bob fails over to instance 1
        got = numbers(await b2.frames(n + 50 - first, timeout=20))
        assert got == list(range(first, n + 50))  # none lost since the map knew, in order


def padded(src: Identity, dst: Identity, n: int, pad: int) -> str:
    env = make_envelope("ping", msg_id=new_msg_id(lambda k: n.to_bytes(k, "big")),
                        src=src.node_id, dst=dst.node_id, ts=1, data={"n": n, "pad": "x" * pad})
    return encode_envelope(sign_envelope(env, src))


async def test_big_envelopes_cross_live_one_bus_message_cannot_carry_is_refused_as_such(
    tmp_path: Path,
) -> None:
    # nats-server's default max_payload (1 MiB): three envelopes of 400 KB sent at once
    # went as one message the bus refused, and all three were lost.
    async with bob_at_r2_alice_at_r1(tmp_path) as (r1, _r2, _nodes, a, b):
        n = await until_live(a, b, 1000)
        await a.quiet(0.5)  # the acks of what was stored meanwhile
        await a.ws.send_many([relay_frame(b.ident.node_id, padded(a.ident, b.ident, n + i,
                                                                  400_000)) for i in range(3)])
        got = await b.frames(3, timeout=15)
        assert numbers(got) == [n, n + 1, n + 2] and not any("qid" in f for f in got)
        # Within the relay's envelope limit but over what one bus message carries:
        # an honest too_large, nothing stored, and what follows still goes live.
        await a.ws.send_many([relay_frame(b.ident.node_id, padded(a.ident, b.ident, n + 3,
                                                                  1_041_000))])
        (refused,) = await a.frames(1)
        assert (refused["type"], refused["code"]) == ("error", "too_large")
        await a.send(b.ident, range(n + 4, n + 5))
        assert numbers(await b.frames(1)) == [n + 4]
        assert await a.quiet(0.3) == [] and await b.quiet(0.3) == []
        assert await metric(r1, "hd_relay_forward_lost_total") == 0.0
        # The operator was told at start why, and what to set.
        assert "less than the largest envelope" in r1.log_text()
        assert "max_payload: 2MB" in r1.log_text()
