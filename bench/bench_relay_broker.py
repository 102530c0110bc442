"""The relay's own ceiling: ``hd-relay`` alone, fed by spec-level clients (issue 20).

Method. Starts one ``hd-relay`` (no cluster: the SQLite mailbox) and, in this process,
``--pairs`` pairs of spec-level nodes (``RawNode`` of ``bench_relay``: attach, ``relay``
frames, ``ack`` of stored ones; the frames ``hd-node`` sends). Every envelope is signed
before the clock starts (Ed25519 is the nodes' work, not the relay's): what is timed is
the relay checking, routing and storing. Three phases, each of ``--count`` envelopes
spread over the pairs:

1. live, 64 B payloads: every receiver attached; each sender keeps at most ``--window``
   envelopes in flight to its receiver;
2. live, 1 KiB payloads: the same; then again with ``--latency-window`` (16) in flight
   per pair, for the latency below saturation (with 256 per pair the relay is the
   bottleneck and the latency is the queue: 2 048 envelopes in flight at ~20 000/s);
3. queued, 1 KiB: the receivers are away; the senders send until every envelope is
   acknowledged as stored (``relay_ack queued``, after the SQLite commit), then the
   receivers attach and take everything, acking as they go.

For each: envelopes/s, the relay's CPU time per envelope (``/proc/PID/stat``, what the
one core it runs on spends) and, live, the latency from the batch an envelope was
sent in to its arrival (every envelope: its ``msg_id`` names its index), p50/p99. The
clients' own CPU is shown beside: when it nears the wall time, the clients, not the
relay, set the pace, and the figure is a floor of the relay's ceiling.

Targets (issue 20, 2-core machine): at least 20 000 live envelopes/s of 1 KiB on one
core with p99 <= 20 ms. The relay's ``relay`` frame rate per connection is 20 000/s
(SPEC 19.1): each pair stays below it. Output: a table, then one JSON line.

    python bench/bench_relay_broker.py [--pairs P] [--count N] [--window W]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_relay import RawNode, Relay, cpu_s, signed_frames  # noqa: E402

TARGET_LIVE_1K = 20_000.0
TARGET_P99_MS = 20.0
MSG_ID = '"msg_id":"'


def index_of(frame: str) -> int:
    """The envelope's index, from its ``msg_id`` (``signed_frames`` numbers them)."""
    at = frame.index(MSG_ID) + len(MSG_ID)
    return int(frame[at:at + 32], 16)


async def attached(url: str, n: int) -> list[RawNode]:
    nodes = [RawNode(url) for _ in range(n)]
    for node in nodes:
        await node.attach()
    return nodes


async def live(url: str, pid: int, pairs: int, count: int, size: int,
               window: int) -> dict[str, Any]:
    from hd_protocol.brokers.relay import ack_frame

    senders, receivers = await attached(url, pairs), await attached(url, pairs)
    each = count // pairs
    frames = [signed_frames(a, b, each, size) for a, b in zip(senders, receivers, strict=True)]
    sent_at = [[0.0] * each for _ in range(pairs)]
    latencies: list[float] = []
    got = [0] * pairs
    room = [trio.Event() for _ in range(pairs)]

    async def receive(i: int) -> None:
        ws = receivers[i].ws
        while got[i] < each:
            batch = await ws.receive_some()
            now = time.perf_counter()
            qids = []
            for raw in batch:
                if raw.startswith('{"type":"relay"'):
                    latencies.append(now - sent_at[i][index_of(raw)])
                    got[i] += 1
                    if '"qid":' in raw:  # stored meanwhile (a congested receiver)
                        qids.append(json.loads(raw)["qid"])
            if qids:
                await ws.send_many([ack_frame(qids)])
            room[i].set()
            room[i] = trio.Event()

    async def send(i: int) -> None:
        ws, sent = senders[i].ws, 0
        while sent < each:
            while sent - got[i] >= window:
                await room[i].wait()
            n = min(each - sent, 64, window - (sent - got[i]))
            now = time.perf_counter()
            for k in range(sent, sent + n):
                sent_at[i][k] = now
            await ws.send_many(frames[i][sent:sent + n])
            sent += n

    cpu0, own0, t0 = cpu_s(pid), time.process_time(), time.perf_counter()
    with trio.fail_after(60):
        async with trio.open_nursery() as n:
            for i in range(pairs):
                n.start_soon(receive, i)
                n.start_soon(send, i)
    elapsed = time.perf_counter() - t0
    relay_cpu, own = cpu_s(pid) - cpu0, time.process_time() - own0
    for node in (*senders, *receivers):
        with trio.move_on_after(2):
            await node.ws.aclose()
    total = each * pairs
    lat = sorted(latencies)
    return {"envelopes": total, "seconds": round(elapsed, 3),
            "envelopes_per_s": round(total / elapsed, 1),
            "relay_cpu_us": round(relay_cpu / total * 1e6, 1),
            "clients_cpu_s": round(own, 2), "relay_cpu_s": round(relay_cpu, 2),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2)}


async def queued(url: str, pid: int, pairs: int, count: int, size: int) -> dict[str, Any]:
    """Store ``count`` for receivers that are away, then deliver it all."""
    from hd_protocol.brokers.relay import ack_frame

    senders = await attached(url, pairs)
    away = [RawNode(url) for _ in range(pairs)]
    each = min(count // pairs, 900)  # below the mailbox's 1000 per destination
    frames = [signed_frames(a, b, each, size) for a, b in zip(senders, away, strict=True)]

    async def store(i: int) -> None:
        ws, acked, sent = senders[i].ws, 0, 0
        while acked < each:
            if sent < each:
                n = min(each - sent, 64, 256 - (sent - acked))
                if n > 0:
                    await ws.send_many(frames[i][sent:sent + n])
                    sent += n
            for raw in await ws.receive_some():
                if '"relay_ack"' in raw:
                    acked += 1
                elif '"error"' in raw:
                    raise RuntimeError(f"refused: {raw[:200]}")

    async def drain(i: int) -> None:
        from hd_protocol.brokers.frames import decode_frame, parse_challenge
        from hd_protocol.brokers.relay import attach_frame
        from hd_shell.ws.link import dial_ws

        node = away[i]  # attached here: the deliveries may share a read with "attached"
        node.ws = await dial_ws(url, timeout_s=5)
        frames = list(await node.ws.receive_some())
        hello = parse_challenge(decode_frame(frames.pop(0), 1 << 20))
        await node.ws.send_many([attach_frame(node.ident, hello)])
        got = 0
        while got < each:
            qids = [json.loads(raw)["qid"] for raw in frames
                    if raw.startswith('{"type":"relay"')]
            got += len(qids)
            if qids:
                await node.ws.send_many([ack_frame(qids)])
            if got < each:
                frames = list(await node.ws.receive_some())

    out: dict[str, Any] = {"envelopes": each * pairs}
    for phase, fn in (("store", store), ("deliver", drain)):
        cpu0, t0 = cpu_s(pid), time.perf_counter()
        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                for i in range(pairs):
                    n.start_soon(fn, i)
        elapsed = time.perf_counter() - t0
        out[phase] = {"seconds": round(elapsed, 3),
                      "envelopes_per_s": round(each * pairs / elapsed, 1),
                      "relay_cpu_us": round((cpu_s(pid) - cpu0) / (each * pairs) * 1e6, 1)}
    for node in (*senders, *away):
        with trio.move_on_after(2):
            await node.ws.aclose()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--count", type=int, default=40_000, help="envelopes per phase")
    p.add_argument("--window", type=int, default=256, help="in flight per pair (live)")
    p.add_argument("--latency-window", type=int, default=16,
                   help="in flight per pair for the latency phase (live, 1 KiB)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hd-bench-relay-broker-"))
    relay = Relay(root, "relay")
    try:
        relay.wait_ready()
        pid = relay.proc.pid
        small = trio.run(live, relay.url, pid, args.pairs, args.count, 64, args.window)
        big = trio.run(live, relay.url, pid, args.pairs, args.count, 1024, args.window)
        calm = trio.run(live, relay.url, pid, args.pairs, args.count, 1024,
                        args.latency_window)
        stored = trio.run(queued, relay.url, pid, args.pairs, args.count, 1024)
    finally:
        relay.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"hd fabric relay broker bench: one hd-relay, {args.pairs} pairs of spec-level "
          f"nodes in one client process, window {args.window}")
    for name, r in (("live, 64 B", small), ("live, 1 KiB", big),
                    (f"1 KiB, w {args.latency_window}", calm)):
        print(f"  {name:12s} {r['envelopes_per_s']:9.0f} envelopes/s  p50 {r['p50_ms']} ms "
              f"p99 {r['p99_ms']} ms  relay {r['relay_cpu_us']} us/envelope "
              f"({r['relay_cpu_s']} s CPU, clients {r['clients_cpu_s']} s, "
              f"over {r['seconds']} s)")
    for phase in ("store", "deliver"):
        r = stored[phase]
        print(f"  queued {phase:7s} {r['envelopes_per_s']:7.0f} envelopes/s  relay "
              f"{r['relay_cpu_us']} us/envelope")
    one_core = 1e6 / big["relay_cpu_us"]
    print(f"  live 1 KiB on one core (1 s / relay CPU per envelope): {one_core:.0f}/s; "
          f"measured {big['envelopes_per_s']:.0f}/s (target >= {TARGET_LIVE_1K:.0f}: "
          f"{'met' if big['envelopes_per_s'] >= TARGET_LIVE_1K else 'NOT met'}); p99 "
          f"{calm['p99_ms']} ms at {calm['envelopes_per_s']:.0f}/s (target <= "
          f"{TARGET_P99_MS:.0f}: {'met' if calm['p99_ms'] <= TARGET_P99_MS else 'NOT met'})")
    print(json.dumps({"bench": "relay_broker", "pairs": args.pairs, "window": args.window,
                      "live_64": small, "live_1k": big, "live_1k_latency": calm,
                      "queued_1k": stored}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
