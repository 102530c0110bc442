"""The relay broker: it routes but never reads, and it loses nothing it acknowledged."""

from __future__ import annotations

import json
import signal
from typing import Any

import trio

from hd_protocol import Identity, encode_envelope, make_envelope, new_msg_id, sign_envelope
from hd_protocol.brokers.frames import decode_frame, parse_challenge
from hd_protocol.brokers.relay import ack_frame, attach_frame, relay_frame
from hd_shell.ws.link import WsLink, dial_ws

from .conftest import Cluster, connected, eventually, free_port
from .servers import Servers, servers  # noqa: F401 - the fixture


async def _attach(url: str, ident: Identity) -> tuple[WsLink, dict[str, Any], list[Any]]:
    """A raw node attached to the relay; returns (link, attached frame, frames after)."""
    ws = await dial_ws(url, timeout_s=5)
    frames = list(await ws.receive_some())
    hello = parse_challenge(decode_frame(frames.pop(0), 1 << 20))
    await ws.send_many([attach_frame(ident, hello)])
    if not frames:
        frames = list(await ws.receive_some())
    attached = decode_frame(frames.pop(0), 1 << 20)
    assert attached["type"] == "attached", attached
    return ws, attached, [decode_frame(f, 2 << 20) for f in frames]


def _envelope(src: Identity, dst: Identity, n: int) -> str:
    env = make_envelope("ping", msg_id=new_msg_id(lambda k: n.to_bytes(k, "big")),
                        src=src.node_id, dst=dst.node_id, ts=1, data={"n": n})
    return encode_envelope(sign_envelope(env, src))


async def _read_until(ws: WsLink, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    with trio.fail_after(timeout):
        while len(got) < count:
            got += [decode_frame(f, 2 << 20) for f in await ws.receive_some()]
    return got


async def test_queued_envelopes_survive_a_killed_relay_and_arrive_once_in_order(
    servers: Servers,  # noqa: F811
) -> None:
    port = free_port()
    relay = await servers.relay(port=port).astart()
    alice, bob = Identity.generate(), Identity.generate()
    ws_a, _, _ = await _attach(relay.url, alice)
    sent = 20
    await ws_a.send_many([relay_frame(bob.node_id, _envelope(alice, bob, i))
                          for i in range(sent)])
    acks = await _read_until(ws_a, sent)
    assert [a["type"] for a in acks] == ["relay_ack"] * sent
    assert {a["status"] for a in acks} == {"queued"}
    await ws_a.aclose()

    # The relay dies without a chance to flush anything, and comes back on its data dir.
    relay.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    relay.proc.wait(10)  # type: ignore[union-attr]
    await relay.astart()

    ws_b, attached, early = await _attach(relay.url, bob)
    assert attached["queued"] == sent
    frames = early + await _read_until(ws_b, sent - len(early))
    assert [f["type"] for f in frames] == ["relay"] * sent
    assert [f["envelope"]["data"]["n"] for f in frames] == list(range(sent))  # in order
    assert {f["from"] for f in frames} == {alice.node_id}
    assert all(f["envelope"]["ttl"] == 7 for f in frames)  # one hop taken
    await ws_b.send_many([ack_frame([f["qid"] for f in frames])])
    await trio.sleep(0.3)
    await ws_b.aclose()
    ws_b2, attached2, early2 = await _attach(relay.url, bob)
    assert attached2["queued"] == 0 and early2 == []  # acked: never again
    with trio.move_on_after(0.5):
        more = await ws_b2.receive_some()
        raise AssertionError(f"got more after the ack: {more}")
    await ws_b2.aclose()


async def test_over_the_per_destination_limit_the_relay_answers_queue_full(
    servers: Servers,  # noqa: F811
) -> None:
    relay = await servers.relay().astart()
    alice, bob = Identity.generate(), Identity.generate()
    ws, _, _ = await _attach(relay.url, alice)
    answers: list[dict[str, Any]] = []
    for start in range(0, 1001, 100):
        await ws.send_many([relay_frame(bob.node_id, _envelope(alice, bob, i))
                            for i in range(start, min(start + 100, 1001))])
        answers += await _read_until(ws, min(100, 1001 - start))
    assert [a.get("status") for a in answers[:1000]] == ["queued"] * 1000
    assert answers[1000]["type"] == "error" and answers[1000]["code"] == "queue_full"
    await ws.aclose()


class Tap:
    """A TCP proxy in front of the relay that keeps every byte it passes on."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.seen = bytearray()
        self.port = 0

    async def run(self, *, task_status: Any) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._one, listeners)

    async def _one(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self.target)
        async with client, server, trio.open_nursery() as n:

            async def pipe(a: trio.SocketStream, b: trio.SocketStream) -> None:
                try:
                    while data := await a.receive_some(65536):
                        self.seen += data
                        await b.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                n.cancel_scope.cancel()

            n.start_soon(pipe, client, server)
            n.start_soon(pipe, server, client)


async def test_the_relay_never_sees_a_plaintext_chat(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    relay = await servers.relay().astart()
    tap = Tap(relay.port)
    async with trio.open_nursery() as n:
        await n.start(tap.run)
        via = f"ws://127.0.0.1:{tap.port}/relay-ws"
        config = f'[network]\nenableDirect = false\nrelayUrl = "{via}"\n'
        alice = cluster.new("alice", config=config)
        bob = cluster.new("bob", config=config)
        await cluster.start(alice, bob)
        async with alice.client() as ta:
            inv = await ta.request("network", "invite_create")
        async with bob.client() as tb:
            res = await tb.request("network", "pair_redeem", {"invite": inv["invite"]},
                                   timeout=20)
            assert res["ok"] is True, res
            assert res["peer"]["transport"] == "relay"
        await eventually(lambda: connected(alice, bob), timeout=10, what="the session")
        secrets = [f"secret number {i} {'x' * i}" for i in range(5)]
        async with alice.client() as ta:
            for text in secrets:
                await ta.request("peerchat", "send", {"node_id": bob.node_id, "text": text})
            for _ in secrets:
                await ta.wait_for("peerchat", "status", lambda d: d["status"] == "delivered",
                                  timeout=15)
        n.cancel_scope.cancel()
    seen = bytes(tap.seen)
    assert b"peer_chat" in seen  # the relay sees types, ids and sizes...
    for text in secrets:  # ...never a payload
        assert text.encode() not in seen
        assert json.dumps(text).encode() not in seen
