"""Nothing anyone on the network sends or answers ends a node or keeps honest peers out.

Attackers are written from the wire format (``attackers.py``) and play other hosts by
binding to other loopback addresses (127.0.0.2, ...).
"""

from __future__ import annotations

import math
import time
from typing import Any

import trio

from hd_node.client import NodeError
from hd_protocol import Identity, decode_invite

from .attackers import open_raw, stream_until_closed, upgrade
from .conftest import (
    Cluster,
    HandshakeRefused,
    NodeProcess,
    RawPeer,
    connected,
    eventually,
)


async def _http_server(status: int, *, task_status: Any) -> None:
    """Answers every request (a WebSocket upgrade included) with ``status``."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def one(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.move_on_after(5):
                    await stream.receive_some(65536)
                    body = b'{"error":"nope"}'
                    await stream.send_all(
                        b"HTTP/1.1 %d Nope\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                        % (status, len(body), body))
            except (trio.BrokenResourceError, OSError):
                pass

    await trio.serve_listeners(one, listeners)


async def _alive_for(node: NodeProcess, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        while node.running:
            await trio.sleep(0.1)
        return False
    return True


def _p95(samples: list[float]) -> float:
    s = sorted(samples)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


# --- answers a dial does not expect ---------------------------------------------------------


async def test_stored_and_advertised_addresses_answering_403_or_404_never_end_a_node(
    cluster: Cluster,
) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    await cluster.pair(alice, bob)  # bob stores alice's address (the user's)
    async with trio.open_nursery() as n:
        missing = await n.start(_http_server, 404)
        # A trusted peer advertises an address that answers 404, then leaves.
        inv = decode_invite(await bob.invite())
        url404 = f"ws://127.0.0.1:{missing}/peer-ws"

        def plant() -> None:
            with RawPeer(bob.peer_url, expected_node_id=bob.node_id,
                         token=inv["token"]) as raw:
                raw.handshake()
                raw.send("presence", {"node_name": "liar", "capabilities": [],
                                      "addrs": [url404]})
                raw.ping()  # the presence was processed before we leave

        await trio.to_thread.run_sync(plant)
        alice_port = alice.peer_port
        await alice.astop()
        # Whatever now answers on alice's port says 403 to every dial.
        n.start_soon(_forbid_port, alice_port)
        for _ in range(3):
            await bob.astop()
            await bob.astart()
            assert await _alive_for(bob, 3.0), bob.log_text()[-3000:]
        log = bob.log_text()
        assert "reason=refused_http" in log and url404 in log, log[-3000:]
        assert "Traceback" not in log
        # The tab and the API still answer.
        async with bob.client() as tab:
            assert set(await tab.request("system", "ping")) == {"req"}
        n.cancel_scope.cancel()


async def _forbid_port(port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")

    async def one(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.move_on_after(5):
                    await stream.receive_some(65536)
                    await stream.send_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n"
                                          b"connection: close\r\n\r\n")
            except (trio.BrokenResourceError, OSError):
                pass

    await trio.serve_listeners(one, listeners)


async def test_a_tab_connect_to_a_foreign_server_is_an_error_event_and_the_tab_stays(
    cluster: Cluster,
) -> None:
    (alice,) = await cluster.spawn("alice")
    async with trio.open_nursery() as n:
        port = await n.start(_http_server, 403)
        async with alice.client() as tab:
            try:
                await tab.request("network", "connect",
                                  {"address": f"ws://127.0.0.1:{port}/peer-ws"}, timeout=20)
                raise AssertionError("connect succeeded")
            except NodeError as exc:
                assert exc.code == "unreachable" and "403" in exc.message
            assert set(await tab.request("system", "ping")) == {"req"}
        r = await alice.http("POST", "/api/connect",
                             json={"address": f"ws://127.0.0.1:{port}/peer-ws"})
        assert r.status_code == 400 and r.json()["error"] == "unreachable"
        n.cancel_scope.cancel()


async def test_pairing_with_a_busy_inviter_is_a_json_error_not_a_500(cluster: Cluster) -> None:
    alice, bob = await cluster.spawn("alice", "bob", config="[network]\nhandshakeTimeout = 20\n")
    invite = await alice.invite()
    held = [await upgrade(alice.peer_port) for _ in range(8)]  # 127.0.0.1's 8 slots
    try:
        assert [u.status for u in held] == [101] * 8
        r = await bob.http("POST", "/api/pair", json={"invite": invite})
        assert r.status_code == 400, r.text
        assert r.json()["ok"] is False and r.json()["error"] == "busy"
    finally:
        for u in held:
            assert u.stream is not None
            await u.stream.aclose()


# --- pre-authentication budgets ---------------------------------------------------------------


async def test_fragment_and_ping_floods_before_hello_are_cut_and_honest_rtt_holds(
    cluster: Cluster,
) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    await cluster.pair(alice, bob)
    closed_after: list[float] = []
    stop = trio.Event()

    async def attacker(kind: str, local: str) -> None:
        while not stop.is_set():
            up = await upgrade(alice.peer_port, local=local)
            if up.status == 101:
                closed_after.append(await stream_until_closed(up, kind, limit_s=5))
            await trio.sleep(0.01)

    async with trio.open_nursery() as n:
        for i, kind in enumerate(["fragments", "fragments", "pings", "pings"]):
            n.start_soon(attacker, kind, f"127.0.0.{2 + i}")
        await trio.sleep(0.5)
        async with bob.client() as tab:
            res = await tab.request("network", "bench", {"node_id": alice.node_id,
                                                         "count": 200, "size": 16},
                                    timeout=60)
        stop.set()
    assert res["timeouts"] == 0 and res["errors"] == 0
    assert res["rtt_ms"]["p95"] < 100, res["rtt_ms"]
    assert len(closed_after) >= 4 and max(closed_after) < 1.0, sorted(closed_after)[-5:]
    # Each one was counted, not only logged.
    violations = await alice.metric_sum("hd_listener_events_total", listener="peer",
                                        event="ws_violation")
    assert violations >= len(closed_after)
    assert await connected(alice, bob)
    assert "Traceback" not in alice.log_text()


async def test_one_address_holding_and_churning_500_silent_links_cannot_keep_others_out(
    cluster: Cluster,
) -> None:
    (alice,) = await cluster.spawn("alice")
    stop = trio.Event()
    tried = 0

    async def hold(local: str) -> None:
        nonlocal tried
        while not stop.is_set():
            tried += 1
            up = await upgrade(alice.peer_port, local=local)
            if up.stream is None:
                await trio.sleep(0.005)
                continue
            with trio.move_on_after(0.5 if tried % 2 else 30):  # churn half, hold half
                await stop.wait()
            await up.stream.aclose()

    honest: list[float] = []
    async with trio.open_nursery() as n:
        for _ in range(50):
            n.start_soon(hold, "127.0.0.2")
        with trio.fail_after(30):
            while tried < 500:
                await trio.sleep(0.05)

        def one() -> float:
            t0 = time.monotonic()
            with RawPeer(alice.peer_url, expected_node_id=alice.node_id) as raw:
                try:
                    raw.handshake(timeout=5)
                except HandshakeRefused as exc:
                    assert exc.reason == "pairing_required", exc
            return time.monotonic() - t0

        for _ in range(20):
            honest.append(await trio.to_thread.run_sync(one))
        stop.set()
    assert _p95(honest) < 1.0, sorted(honest)
    assert "Traceback" not in alice.log_text()


async def test_the_handshake_cap_is_exact_across_addresses(cluster: Cluster) -> None:
    (alice,) = await cluster.spawn("alice", config="[network]\nhandshakeTimeout = 30\n")
    statuses: list[int] = []
    streams: list[Any] = []

    async def one(local: str) -> None:
        up = await upgrade(alice.peer_port, local=local)
        statuses.append(up.status)
        if up.stream is not None:
            streams.append(up.stream)

    async with trio.open_nursery() as n:
        for i in range(9):  # 9 addresses x 8 = 72 attempts at the same moment
            for _ in range(8):
                n.start_soon(one, f"127.0.1.{i + 1}")
    try:
        assert statuses.count(101) == 64 and statuses.count(503) == 8, sorted(statuses)
    finally:
        for s in streams:
            await s.aclose()


async def test_1100_half_open_connections_leave_healthz_and_tabs_working(
    cluster: Cluster,
) -> None:
    (alice,) = await cluster.spawn("alice")
    socks: list[Any] = []
    try:
        for i in range(1100):
            try:
                socks.append(await open_raw(alice.peer_port, local=f"127.0.2.{1 + i % 200}"))
            except OSError:
                break
        assert len(socks) == 1100
        await trio.sleep(0.5)
        r = await alice.http("GET", "/healthz", token=False)
        assert r.status_code == 200 and r.json()["ok"] is True
        async with alice.client() as tab:
            assert set(await tab.request("system", "ping")) == {"req"}
        # An honest peer can still do its handshake on the flooded port.

        def honest() -> str:
            with RawPeer(alice.peer_url, expected_node_id=alice.node_id) as raw:
                try:
                    raw.handshake(timeout=5)
                except HandshakeRefused as exc:
                    return exc.reason
            return "admitted"

        assert await trio.to_thread.run_sync(honest) == "pairing_required"
    finally:
        for s in socks:
            await s.aclose()
    assert alice.running


# --- delivery inside a live session ------------------------------------------------------------


async def test_a_chat_message_the_peer_did_not_ack_is_sent_again_in_the_same_session(
    cluster: Cluster,
) -> None:
    (alice,) = await cluster.spawn("alice", config="[network]\nchatAckTimeout = 1.0\n")
    inv = decode_invite(await alice.invite())
    ident = Identity.generate()
    seen: list[str] = []

    def receiver(text: str) -> None:
        with RawPeer(alice.peer_url, ident, expected_node_id=alice.node_id,
                     token=inv["token"]) as raw:
            raw.handshake()
            first = raw.wait_output(lambda o: getattr(o, "type", "") == "peer_chat",
                                    timeout=10)
            seen.append(first.msg_id)  # "lost": no ack
            again = raw.wait_output(lambda o: getattr(o, "type", "") == "peer_chat",
                                    timeout=10)
            seen.append(again.msg_id)
            raw.send("peer_chat_ack", {"id": again.msg_id})
            raw.ping()

    async with trio.open_nursery() as n:
        n.start_soon(trio.to_thread.run_sync, receiver, "hi")
        async with alice.client() as tab:
            await eventually(lambda: connected(alice, _Named(ident.node_id)), timeout=10,
                             what="the raw peer's session")
            await tab.request("peerchat", "send", {"node_id": ident.node_id, "text": "hi"})
            await tab.wait_for("peerchat", "status", lambda d: d["status"] == "delivered",
                               timeout=20)
    assert len(seen) == 2 and seen[0] == seen[1]


class _Named:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.name = node_id

