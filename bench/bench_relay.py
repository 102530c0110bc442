"""Sealed envelopes through ``hd-relay`` against the same traffic over a direct session.

Starts a standalone ``hd-relay`` and two pairs of ``hd-node`` processes on loopback:
one pair paired directly, the other with its direct listeners off so that its session
runs through the relay (invite -> relay candidate -> virtual links). Each pair then runs
``network bench`` (``bench_echo`` round trips, a window of 64 in flight), one pair after
the other, in the same run. The figure is the relay's throughput as a share of the
direct one (goal: at least 0.65, i.e. the relay costs at most 35 %), next to the
Ed25519 bound of the run for scale. Output: a table, then one JSON line.

    python bench/bench_relay.py [--count N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from bench_link import Node, ed25519_bound  # same directory

from hd_node.client import NodeClient

GOAL = 0.65


class Relay:
    def __init__(self, root: Path) -> None:
        self.data_dir = root / "relay"
        self.log = open(root / "relay.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hd_relay", "run", "--data-dir", str(self.data_dir),
             "--port", "0", "--log-level", "WARNING"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if not k.startswith("HD_")})
        self.url = ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                info = json.loads((self.data_dir / "relay.json").read_text())
                if info.get("pid") == self.proc.pid:
                    self.url = info["url"]
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise RuntimeError("hd-relay did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=10)
        self.log.close()


def relayed_node(root: Path, name: str, relay_url: str) -> Node:
    config = root / f"{name}.toml"
    config.write_text(f'[network]\nenableDirect = false\nrelayUrl = "{relay_url}"\n')
    node = Node.__new__(Node)
    node.name = name
    node.data_dir = root / name
    node.log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
    node.proc = subprocess.Popen(
        [sys.executable, "-m", "hd_node", "run", "--data-dir", str(node.data_dir),
         "--ui-port", "0", "--peer-port", "0", "--peer-host", "127.0.0.1", "--name", name,
         "--log-level", "WARNING", "--config", str(config)],
        stdout=node.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("HD_")})
    node.info = {}
    return node


async def pair_and_bench(a: Node, b: Node, count: int, size: int) -> dict[str, Any]:
    async with NodeClient.open(a.info["ws_url"], a.info["token"]) as tab_a, \
            NodeClient.open(b.info["ws_url"], b.info["token"]) as tab_b:
        inv = await tab_a.request("network", "invite_create")
        paired = await tab_b.request("network", "pair_redeem", {"invite": inv["invite"]},
                                     timeout=30)
        if not paired.get("ok"):
            raise RuntimeError(f"pairing failed: {paired}")
        transport = paired["peer"]["transport"]
        await tab_a.request("network", "bench", {"node_id": b.info["node_id"], "count": 300,
                                                 "size": size}, timeout=60)  # warm-up
        res = await tab_a.request("network", "bench", {"node_id": b.info["node_id"],
                                                       "count": count, "size": size},
                                  timeout=600)
    res.pop("req", None)
    res["transport"] = transport
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=3000, help="round trips per pair")
    p.add_argument("--size", type=int, default=64, help="payload bytes per request")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hd-bench-relay-"))
    procs: list[Any] = []
    try:
        relay = Relay(root)
        procs.append(relay)
        relay.wait_ready()
        direct = [Node(root, "direct-a"), Node(root, "direct-b")]
        relayed = [relayed_node(root, "relayed-a", relay.url),
                   relayed_node(root, "relayed-b", relay.url)]
        procs += direct + relayed
        for n in direct + relayed:
            n.wait_ready()
        bound = ed25519_bound(5)
        res_direct = trio.run(pair_and_bench, direct[0], direct[1], args.count, args.size)
        res_relay = trio.run(pair_and_bench, relayed[0], relayed[1], args.count, args.size)
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(root, ignore_errors=True)
    d, r = res_direct["envelopes_per_s"], res_relay["envelopes_per_s"]
    share = r / d
    print(f"hd fabric relay bench: {args.count} bench_echo round trips of {args.size} B, "
          f"window {res_direct['window']}, one pair at a time")
    print(f"  direct session ({res_direct['transport']:6s})   {d:10.1f} envelopes/s   "
          f"RTT p50 {res_direct['rtt_ms']['p50']:.3f} ms")
    print(f"  through hd-relay ({res_relay['transport']:6s}) {r:10.1f} envelopes/s   "
          f"RTT p50 {res_relay['rtt_ms']['p50']:.3f} ms")
    print(f"  relay / direct                    {share:10.3f}   (goal >= {GOAL:.2f}: "
          f"{'met' if share >= GOAL else 'NOT met'})")
    print(f"  Ed25519 sign+verify bound (1 core) {bound['sign_verify_per_s']:8.0f} envelopes/s")
    print(json.dumps({"bench": "relay", "direct": res_direct, "relay": res_relay,
                      "relay_share": round(share, 4), "goal": GOAL, "ed25519": bound}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
