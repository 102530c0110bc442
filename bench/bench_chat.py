"""Chat throughput between two real nodes, against the Ed25519 bound of the same run.

Starts two ``hd-node run`` processes on loopback and pairs them. A script on A's
``/ws`` (a plain WebSocket client, as a user's own script would be) keeps ``window``
``peerchat send`` commands in flight, and counts each message once A reports it
``delivered``: by then it was stored on A (``queued``, before it left), sealed and sent,
verified, opened and stored on B, acked by B with a sealed ``peer_chat_ack``, and that
ack verified and stored on A. Every delivered message is two sealed envelopes (the
message and its ack), each signed once and verified once, so

    delivered + acked envelopes/s  =  2 x delivered messages/s

and the bound is the raw Ed25519 sign+verify rate of one core, measured in this run
(as in bench_link). The script, both nodes and the measurement share this machine.
Output: a table, then one JSON line.

    python bench/bench_chat.py [--count N] [--window N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from bench_link import Node, ed25519_bound  # same directory

from hd_node.client import NodeClient
from hd_shell.ws.link import dial_ws

TARGET = 0.45


async def pair(a: Node, b: Node) -> None:
    async with NodeClient.open(a.info["ws_url"], a.info["token"]) as tab_a, \
            NodeClient.open(b.info["ws_url"], b.info["token"]) as tab_b:
        inv = await tab_a.request("network", "invite_create")
        paired = await tab_b.request("network", "pair_redeem", {"invite": inv["invite"]},
                                     timeout=20)
        if not paired.get("ok"):
            raise RuntimeError(f"pairing failed: {paired}")


async def chat(a: Node, peer: str, count: int, window: int, size: int) -> dict[str, Any]:
    """``count`` messages with ``window`` in flight; returns timings and counts."""
    host_port = a.info["ws_url"].split("//", 1)[1].split("/", 1)[0]
    link = await dial_ws(f"ws://{host_port}/ws?token={a.info['token']}", timeout_s=10,
                         max_message_size=16 << 20)
    pad = "x" * max(0, size - 8)
    sent = answered = 0
    delivered = 0
    errors: list[Any] = []
    first_delivered_at = 0.0
    try:
        t0 = trio.current_time()
        while delivered < count:
            batch = []
            while sent < count and sent - answered < window:
                batch.append(json.dumps({"channel": "peerchat", "event": "send", "data": {
                    "node_id": peer, "text": f"{sent:08d}{pad}", "req": str(sent)}}))
                sent += 1
            if batch:
                await link.send_many(batch)
            for raw in await link.receive_some():
                ev = json.loads(raw)
                data = ev.get("data") or {}
                if "req" in data:
                    answered += 1
                if ev.get("event") == "error":
                    errors.append(data)
                    answered += 0 if "req" in data else 0
                elif ev.get("event") == "status" and data.get("status") == "delivered":
                    delivered += 1
                    if delivered == 1:
                        first_delivered_at = trio.current_time()
            if len(errors) > 10:
                raise RuntimeError(f"the node answered errors: {errors[:3]}")
        elapsed = trio.current_time() - t0
    finally:
        await link.aclose()
    return {"count": count, "window": window, "size": size, "elapsed_s": elapsed,
            "first_delivery_ms": round((first_delivered_at - t0) * 1000, 1),
            "errors": len(errors)}


async def drive(a: Node, b: Node, count: int, window: int, size: int) -> dict[str, Any]:
    await pair(a, b)
    peer = b.info["node_id"]
    await chat(a, peer, min(500, count), window, size)  # warm-up: paths, caches, presence
    cpu_a, cpu_b, t0 = a.cpu_s(), b.cpu_s(), time.monotonic()
    res = await chat(a, peer, count, window, size)
    wall = time.monotonic() - t0
    cpu_a2, cpu_b2 = a.cpu_s(), b.cpu_s()
    if None not in (cpu_a, cpu_b, cpu_a2, cpu_b2):
        res["cpu_s"] = {"a": round(cpu_a2 - cpu_a, 3), "b": round(cpu_b2 - cpu_b, 3),
                        "wall": round(wall, 3)}
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=6000, help="messages in the measured run")
    p.add_argument("--window", type=int, default=100, help="messages in flight")
    p.add_argument("--size", type=int, default=64, help="bytes of text per message")
    p.add_argument("--rounds", type=int, default=5, help="rounds for the Ed25519 bound")
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="hd-bench-chat-"))
    nodes: list[Node] = []
    try:
        nodes = [Node(root, "chat-a"), Node(root, "chat-b")]
        for n in nodes:
            n.wait_ready()
        bound_before = ed25519_bound(args.rounds)
        res = trio.run(drive, nodes[0], nodes[1], args.count, args.window, args.size)
        bound_after = ed25519_bound(args.rounds)
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(root, ignore_errors=True)

    bound = max(bound_before, bound_after, key=lambda d: d["sign_verify_per_s"])
    msgs_s = res["count"] / res["elapsed_s"]
    env_s = 2 * msgs_s
    ratio = env_s / bound["sign_verify_per_s"]
    print(f"hd fabric chat bench: 2 nodes on loopback, {res['count']} messages of "
          f"{args.size} B, {args.window} in flight from one /ws script")
    print(f"  messages delivered and acked/s   {msgs_s:10.1f}")
    print(f"  delivered+acked envelopes/s      {env_s:10.1f}")
    print(f"  Ed25519 sign+verify bound (1 core) {bound['sign_verify_per_s']:8.0f} envelopes/s")
    print(f"  measured / bound                 {ratio:10.3f}   (target >= {TARGET:.2f}: "
          f"{'met' if ratio >= TARGET else 'NOT met'})")
    cpu = res.get("cpu_s")
    if cpu:
        per_msg_a = cpu["a"] / res["count"] * 1e6
        per_msg_b = cpu["b"] / res["count"] * 1e6
        print(f"  node CPU per message             A {per_msg_a:.0f} us, B {per_msg_b:.0f} us "
              f"({cpu['a']:.2f} s and {cpu['b']:.2f} s over {cpu['wall']:.2f} s wall)")
    if res["errors"]:
        print(f"  errors {res['errors']}")
    print(json.dumps({"bench": "chat", "result": res, "ed25519": bound,
                      "envelopes_per_s": round(env_s, 1), "ratio": round(ratio, 4),
                      "target": TARGET, "ok": ratio >= TARGET}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
