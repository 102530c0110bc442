"""Throughput and RTT of a live session between two real nodes, against the Ed25519 bound.

Starts two ``hd-node run`` processes on loopback, pairs them (invite on A, redeem on B,
both over /ws), then asks A for ``network bench`` to B (SPEC 6.4 ``bench_echo``):

  rtt      one request in flight at a time (what a ping sees): p50 / p99, ms;
  load     ``count`` requests with a window of 64 in flight: round trips per second,
           sealed envelopes per second (request + echo, both directions), and the RTT
           under that load.

In the same run it measures the raw Ed25519 rate of the cryptography library on one
core: sign + verify pairs per second over a message as long as an envelope's signing
bytes. Every sealed envelope costs exactly one sign (sender) and one verify (receiver),
so that rate is the bound one core could reach if envelopes cost nothing else; the
ratio says how much of the per-envelope cost is the signature arithmetic. It also reads
the CPU time each node process spent during the load phase (Linux /proc), which shows
the real cost per envelope. Output: a table, then one JSON line.

    python bench/bench_link.py [--count N] [--size BYTES] [--rounds N]

The machine is shared: figures move with whatever else runs. Each is one run; repeat it.
"""

from __future__ import annotations

import argparse
import contextlib
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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hd_node.client import NodeClient

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class Node:
    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.data_dir = root / name
        self.log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hd_node", "run", "--data-dir", str(self.data_dir),
             "--ui-port", "0", "--peer-port", "0", "--peer-host", "127.0.0.1",
             "--name", name, "--log-level", "WARNING"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if not k.startswith("HD_")},
        )
        self.info: dict[str, Any] = {}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            with contextlib.suppress(OSError, ValueError):
                info = json.loads((self.data_dir / "node.json").read_text())
                if info.get("pid") == self.proc.pid:
                    self.info = info
                    return
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not start within {START_TIMEOUT} s")

    def cpu_s(self) -> float | None:
        """User + system CPU seconds of the process so far (Linux only)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def runqueue_wait_s(self) -> float | None:
        """Seconds the process's threads spent runnable but waiting for a CPU."""
        try:
            tasks = os.listdir(f"/proc/{self.proc.pid}/task")
            return sum(int(Path(f"/proc/{self.proc.pid}/task/{t}/schedstat").read_text()
                           .split()[1]) for t in tasks) / 1e9
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.log.close()


def ed25519_bound(rounds: int, batch: int = 2000, msg_len: int = 420) -> dict[str, float]:
    """Best-of-``rounds`` sign and verify rates on this thread's core (CPU time)."""
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    msg = os.urandom(msg_len)
    sig = key.sign(msg)
    best_sign = best_verify = 0.0
    for _ in range(rounds):
        t = time.thread_time()
        for _ in range(batch):
            key.sign(msg)
        best_sign = max(best_sign, batch / (time.thread_time() - t))
        t = time.thread_time()
        for _ in range(batch):
            pub.verify(sig, msg)
        best_verify = max(best_verify, batch / (time.thread_time() - t))
    pair = 1 / (1 / best_sign + 1 / best_verify)
    return {"sign_per_s": best_sign, "verify_per_s": best_verify, "sign_verify_per_s": pair}


async def drive(a: Node, b: Node, count: int, size: int) -> dict[str, Any]:
    async with NodeClient.open(a.info["ws_url"], a.info["token"]) as tab_a, \
            NodeClient.open(b.info["ws_url"], b.info["token"]) as tab_b:
        inv = await tab_a.request("network", "invite_create")
        paired = await tab_b.request("network", "pair_redeem", {"invite": inv["invite"]},
                                     timeout=20)
        if not paired.get("ok"):
            raise RuntimeError(f"pairing failed: {paired}")
        # Warm-up: code paths, caches and the first presence exchange out of the way.
        await tab_a.request("network", "bench", {"node_id": b.info["node_id"], "count": 200,
                                                 "size": size}, timeout=60)
        cpu_a, cpu_b, t0 = a.cpu_s(), b.cpu_s(), time.monotonic()
        wait_a, wait_b = a.runqueue_wait_s(), b.runqueue_wait_s()
        result = await tab_a.request("network", "bench",
                                     {"node_id": b.info["node_id"], "count": count,
                                      "size": size}, timeout=600)
        wall = time.monotonic() - t0
        cpu_a2, cpu_b2 = a.cpu_s(), b.cpu_s()
        wait_a2, wait_b2 = a.runqueue_wait_s(), b.runqueue_wait_s()
    result.pop("req", None)
    if None not in (cpu_a, cpu_b, cpu_a2, cpu_b2):
        result["cpu_s"] = {"a": round(cpu_a2 - cpu_a, 3), "b": round(cpu_b2 - cpu_b, 3),
                           "wall": round(wall, 3)}
    if None not in (wait_a, wait_b, wait_a2, wait_b2):
        result["runqueue_wait_s"] = {"a": round(wait_a2 - wait_a, 3),
                                     "b": round(wait_b2 - wait_b, 3)}
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=3000, help="round trips in the load phase")
    p.add_argument("--size", type=int, default=64, help="payload bytes per request")
    p.add_argument("--rounds", type=int, default=5, help="rounds for the Ed25519 bound")
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="hd-bench-link-"))
    nodes: list[Node] = []
    try:
        nodes = [Node(root, "bench-a"), Node(root, "bench-b")]
        for n in nodes:
            n.wait_ready()
        bound_before = ed25519_bound(args.rounds)
        res = trio.run(drive, nodes[0], nodes[1], args.count, args.size)
        bound_after = ed25519_bound(args.rounds)
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(root, ignore_errors=True)

    bound = max(bound_before, bound_after, key=lambda d: d["sign_verify_per_s"])
    env_s = res["envelopes_per_s"]
    ratio = env_s / bound["sign_verify_per_s"]
    rtt, loaded = res["rtt_ms"], res["loaded_rtt_ms"]
    print(f"hd fabric link bench: 2 nodes on loopback, payload {args.size} B, "
          f"{res['count']} round trips, window {res['window']}")
    print(f"  RTT, one in flight (ping path)   p50 {rtt['p50']:8.3f} ms   "
          f"p99 {rtt['p99']:8.3f} ms   ({rtt['samples']} samples)")
    print(f"  RTT under load                   p50 {loaded['p50']:8.3f} ms   "
          f"p99 {loaded['p99']:8.3f} ms")
    print(f"  round trips/s                    {res['round_trips_per_s']:10.1f}")
    print(f"  sealed envelopes/s (both ways)   {env_s:10.1f}")
    print(f"  Ed25519 sign/s, verify/s (1 core) {bound['sign_per_s']:9.0f}  "
          f"{bound['verify_per_s']:9.0f}")
    print(f"  Ed25519 sign+verify bound (1 core) {bound['sign_verify_per_s']:8.0f} envelopes/s")
    print(f"  measured / bound                 {ratio:10.3f}")
    cpu = res.get("cpu_s")
    if cpu:
        done = res["count"] - res["timeouts"] - res["errors"]
        per_env_a = cpu["a"] / (2 * done) * 1e6
        per_env_b = cpu["b"] / (2 * done) * 1e6
        crypto_us = 1e6 / bound["sign_verify_per_s"] / 2
        print(f"  node CPU during load             A {cpu['a']:.2f} s, B {cpu['b']:.2f} s "
              f"over {cpu['wall']:.2f} s wall")
        print(f"  node CPU per envelope handled    A {per_env_a:.0f} us, B {per_env_b:.0f} us "
              f"(of which Ed25519 ~{crypto_us:.0f} us)")
        # If each node had a core of its own, the busier one would set the pace.
        cpu_bound = 2 * done / max(cpu["a"], cpu["b"])
        res["cpu_bound_envelopes_per_s"] = round(cpu_bound, 1)
        print(f"  CPU-bound estimate (own core each) {cpu_bound:8.1f} envelopes/s "
              f"= {cpu_bound / bound['sign_verify_per_s']:.3f} of the bound")
    wait = res.get("runqueue_wait_s")
    if wait:
        print(f"  waiting for a CPU (other load)   A {wait['a']:.2f} s, B {wait['b']:.2f} s")
    if res["timeouts"] or res["errors"]:
        print(f"  timeouts {res['timeouts']}, errors {res['errors']}")
    print(json.dumps({"bench": "link", "result": res, "ed25519": bound,
                      "ratio_envelopes_to_bound": round(ratio, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
