"""Sealed envelopes through ``hd-relay`` against the same traffic over a direct session.

Starts a standalone ``hd-relay`` and two pairs of ``hd-node`` processes on loopback:
one pair paired directly, the other with its direct listeners off so that its session
runs through the relay (invite -> relay candidate -> virtual links). Each pair then runs
``network bench`` (``bench_echo`` round trips, a window of 64 in flight), one pair after
the other, in the same run. The figure is the relay's throughput as a share of the
direct one (goal: at least 0.65, i.e. the relay costs at most 35 %), next to the
Ed25519 bound of the run for scale. Output: a table, then one JSON line.

    python bench/bench_relay.py [--count N] [--size BYTES]

``--cluster``: the relay on several instances instead (issue 19). Starts one nats-server
(the venv's, a temporary store), two ``hd-relay --cluster`` instances on it and one
``hd-relay`` without a cluster, and moves ``--count`` signed envelopes from node A to
node B (spec-level nodes in this process: attach, ``relay``, ``ack``) with at most
``--window`` sent and not yet received (default 900: below the mailbox's 1000 per
destination). Once with A and B on the one relay without a
cluster (live routing), once with A on instance 1 and B on instance 2 (instance 1
sends each envelope live to instance 2 over core NATS, batched, once its map says B is
there; what it stores before that goes through the JetStream mailbox), in the same run,
``--rounds`` times each (default 3), alternated. The figure is the median round's
relayed envelopes/s across the two instances as a share of the median round's on the
one instance (goal: at least 0.7): a round lasts a second or two, and on a shared
machine one slow second in a single pair of rounds moved the share by a fifth. The
envelopes are signed before the clock starts: what is measured is the relays' work,
not the nodes'. The one relay is held to its per-connection rate for ``relay`` frames
(20 000/s, SPEC 19.1), so that figure is a ceiling of the protocol as much as of the
relay.

    python bench/bench_relay.py --cluster [--count N] [--size BYTES] [--window N] [--rounds R]
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
from bench_link import Node, ed25519_bound  # same directory

from hd_node.client import NodeClient

GOAL = 0.65


class Relay:
    def __init__(self, root: Path, name: str = "relay", extra: list[str] | None = None,
                 profile: str | None = None) -> None:
        self.data_dir = root / name
        self.log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        # --profile DIR: the relay runs under cProfile, its stats written to
        # DIR/<name>.prof when it stops (for finding where the CPU goes, not for figures).
        prof = ([] if profile is None
                else ["-m", "cProfile", "-o", str(Path(profile).resolve() / f"{name}.prof")])
        self.proc = subprocess.Popen(
            [sys.executable, *prof, "-m", "hd_relay", "run", "--data-dir", str(self.data_dir),
             "--port", "0", "--log-level", "WARNING", *(extra or [])],
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


CLUSTER_GOAL = 0.7


class NatsServer:
    def __init__(self, root: Path) -> None:
        binary = Path(sys.executable).parent / "nats-server"
        self.port, self.monitor = free_port(), free_port()
        self.log = open(root / "nats.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(binary), "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor),
             "-js", "-sd", str(root / "nats-js")],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = f"nats://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.monitor}/healthz",
                             timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.log.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RawNode:
    """A spec-level node on one relay: attach, send ``relay`` frames, ack what is
    stored (the same frames hd-node sends)."""

    def __init__(self, url: str) -> None:
        from hd_protocol import Identity

        self.url = url
        self.ident = Identity.generate()
        self.ws: Any = None

    async def attach(self) -> None:
        from hd_protocol.brokers.frames import decode_frame, parse_challenge
        from hd_protocol.brokers.relay import attach_frame
        from hd_shell.ws.link import dial_ws

        self.ws = await dial_ws(self.url, timeout_s=5)
        with trio.fail_after(10):
            frames = list(await self.ws.receive_some())
            hello = parse_challenge(decode_frame(frames.pop(0), 1 << 20))
            await self.ws.send_many([attach_frame(self.ident, hello)])
            if not frames:
                frames = list(await self.ws.receive_some())
        if decode_frame(frames.pop(0), 1 << 20)["type"] != "attached":
            raise RuntimeError("not attached")


def signed_frames(a: RawNode, b: RawNode, count: int, size: int) -> list[str]:
    from hd_protocol import encode_envelope, make_envelope, sign_envelope
    from hd_protocol.brokers.relay import relay_frame

    out = []
    for i in range(count):
        env = make_envelope("bench_echo", msg_id=f"{i:032x}", src=a.ident.node_id,
                            dst=b.ident.node_id, ts=1, data={"n": i, "pad": "x" * size})
        out.append(relay_frame(b.ident.node_id, encode_envelope(sign_envelope(env, a.ident))))
    return out


async def flood(a_url: str, b_url: str, count: int, size: int, window: int,
                pids: list[int]) -> dict[str, Any]:
    """``count`` envelopes A -> B, at most ``window`` in the relays at a time."""
    import json as _json

    from hd_protocol.brokers.relay import ack_frame

    a, b = RawNode(a_url), RawNode(b_url)
    await a.attach()
    await b.attach()
    frames = signed_frames(a, b, count + 200, size)
    got = 0
    sent = 0
    refused = 0
    room = trio.Event()
    done = trio.Event()

    async def receive() -> None:
        nonlocal got, room
        while got < count + 200:
            batch = await b.ws.receive_some()
            qids = []
            for raw in batch:
                f = _json.loads(raw)
                if f.get("type") == "relay":
                    got += 1
                    if "qid" in f:
                        qids.append(f["qid"])
            if qids:
                await b.ws.send_many([ack_frame(qids)])
            room.set()
            room = trio.Event()
        done.set()

    async def acks() -> None:
        nonlocal refused
        while True:
            for raw in await a.ws.receive_some():
                f = _json.loads(raw)
                if f.get("type") == "error":
                    refused += 1

    async def send(last: int) -> None:
        nonlocal sent
        while sent < last:
            while sent - got >= window:
                await room.wait()
            n = min(last - sent, 100, window - (sent - got))
            await a.ws.send_many(frames[sent:sent + n])
            sent += n

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        nursery.start_soon(acks)
        with trio.fail_after(120):
            await send(200)  # warm-up
            while got < 200:
                await room.wait()
            cpu0 = [cpu_s(p) for p in pids]
            self0 = time.process_time()
            t0 = time.perf_counter()
            await send(count + 200)
            await done.wait()
            elapsed = time.perf_counter() - t0
            cpu = [round(cpu_s(p) - c, 2) for p, c in zip(pids, cpu0, strict=True)]
            own = round(time.process_time() - self0, 2)
        nursery.cancel_scope.cancel()
    for n in (a, b):
        with trio.move_on_after(2):
            await n.ws.aclose()
    if refused:
        raise RuntimeError(f"{refused} envelopes refused")
    return {"envelopes": count, "seconds": round(elapsed, 3),
            "envelopes_per_s": round(count / elapsed, 1), "cpu_s": cpu, "bench_cpu_s": own}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (of an odd count; the higher middle one)."""
    return sorted(runs, key=lambda r: r["envelopes_per_s"])[len(runs) // 2]


def cluster_main(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="hd-bench-relay-cluster-"))
    procs: list[Any] = []
    try:
        nats = NatsServer(root)
        procs.append(nats)
        nats.wait_ready()
        solo = Relay(root, "solo", profile=args.profile)
        r1 = Relay(root, "r1", ["--cluster", nats.url, "--instance", "r1"], args.profile)
        r2 = Relay(root, "r2", ["--cluster", nats.url, "--instance", "r2"], args.profile)
        procs += [solo, r1, r2]
        for r in (solo, r1, r2):
            r.wait_ready()
        solos, clusters = [], []
        for _ in range(args.rounds):  # alternated: a noisy second hits both sides alike
            solos.append(trio.run(flood, solo.url, solo.url, args.count, args.size,
                                  args.window, [solo.proc.pid]))
            clusters.append(trio.run(flood, r1.url, r2.url, args.count, args.size,
                                     args.window, [r1.proc.pid, r2.proc.pid, nats.proc.pid]))
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(root, ignore_errors=True)
    res_solo = median_run(solos)
    res_cluster = median_run(clusters)
    one, two = res_solo["envelopes_per_s"], res_cluster["envelopes_per_s"]
    share = two / one
    print(f"hd fabric relay cluster bench: {args.count} envelopes A -> B of {args.size} B "
          f"payload, window {args.window}, median of {args.rounds} alternated rounds")
    print("  rounds, envelopes/s: one " + ", ".join(f"{r['envelopes_per_s']:.0f}" for r in solos)
          + "; two " + ", ".join(f"{r['envelopes_per_s']:.0f}" for r in clusters))
    print(f"  one hd-relay, no cluster (live)           {one:10.1f} envelopes/s   "
          f"CPU s relay {res_solo['cpu_s'][0]}")
    print(f"  two instances over one NATS (live)        {two:10.1f} envelopes/s   "
          f"CPU s r1 {res_cluster['cpu_s'][0]}, r2 {res_cluster['cpu_s'][1]}, "
          f"nats {res_cluster['cpu_s'][2]}")
    print(f"  two instances / one instance              {share:10.3f}   (goal >= "
          f"{CLUSTER_GOAL:.2f}: {'met' if share >= CLUSTER_GOAL else 'NOT met'})")
    print(json.dumps({"bench": "relay_cluster", "one": res_solo, "cluster": res_cluster,
                      "cluster_share": round(share, 4), "goal": CLUSTER_GOAL}))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=3000,
                   help="round trips per pair (--cluster: envelopes, default 20000)")
    p.add_argument("--size", type=int, default=64, help="payload bytes per request")
    p.add_argument("--cluster", action="store_true",
                   help="two relay instances over one NATS against one relay")
    p.add_argument("--profile", metavar="DIR",
                   help="--cluster: run the relays under cProfile, stats in DIR/<name>.prof")
    p.add_argument("--rounds", type=int, default=3,
                   help="--cluster: rounds of each, alternated; the figure is their medians")
    p.add_argument("--window", type=int, default=900,
                   help="--cluster: envelopes sent and not yet received, at most")
    args = p.parse_args()
    if args.cluster:
        if args.count == 3000:
            args.count = 20000
        return cluster_main(args)
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
