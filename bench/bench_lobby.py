"""10 000 nodes on ``hd-lobby``: one instance, and two instances over one nats-server.

Method. The bench starts the lobby processes (``hd-lobby run``, connection caps raised
with ``--max-connections``/``--max-per-address``; with ``--instances 2`` a nats-server
from the venv on a free port and ``--cluster``/``--instance`` on each) and client
processes (this file with ``--worker``), each holding a share of the simulated nodes.
Every node is a spec-level client: its own WebSocket, its own Ed25519 identity, a
``register`` answered to the lobby's challenge by ``LobbyClient`` (signature over the
nonce). With two instances the nodes alternate between them. Clients read everything
the lobby sends; the bulk nodes only count their frames (a node that decoded 10 000
presence frames each would measure the clients), the watcher decodes all of its own.

1. A watcher registers on instance 1 and hosts an open public room.
2. Go: the workers dial and register their nodes (at most ``--inflight`` dials in
   flight per worker; from 100 loopback source addresses, as the listener admits at
   most 100 new connections per second from one address). Time to N registered is
   from go to the last ``registered`` answer (clocks: CLOCK_MONOTONIC, shared by the
   processes of this machine);
   registrations/s is N over that.
3. The lobbies' RSS (``/proc/PID/status`` VmRSS) is read before step 2 and once all
   are registered: MB per 1 000 nodes is the growth over the nodes the instance holds.
   The CPU time each lobby, and the client processes together, spent in step 2
   (``/proc/PID/stat``): on a 2-core machine the clients share the cores with the
   lobbies, so they run with the servers' collector settings
   (``hd_shell.rlimits.tune_collector``) to take no more of them than they need.
4. Directories whole: seconds after step 2 until a node registering on either
   instance is told of all N (+ the watcher): with two instances, how long each takes
   to read the other's records of the storm.
5. Presence latency: ``--probes`` nodes register one by one on the last instance and
   join a room of the watcher's (a new one every 60 probes: a room holds 64 members);
   the latency is from the probe's ``register`` leaving to the watcher's
   ``LobbyClient`` reporting the probe in its directory.

Goals on a 2-core machine (issue 19): N = 10 000 registered in <= 20 s, presence p99
<= 250 ms, <= 30 MB per 1 000 nodes. A run that does not get there within
``--deadline`` seconds says how far it got. Output: a table, then one JSON line.

    python bench/bench_lobby.py [--nodes N] [--instances 1|2] [--workers W] [--runs R]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from hd_protocol import Identity, Send
from hd_protocol.brokers.frames import encode_frame
from hd_protocol.brokers.lobby_client import DirectoryUpdate, LobbyClient, Registered
from hd_shell.rlimits import tune_collector
from hd_shell.ws.dial import _client_handshake, _parse_ws_url
from hd_shell.ws.link import DialError, LinkClosed, WsLink, dial_ws

GOAL_S = 20.0
GOAL_P99_MS = 250.0
GOAL_MB_PER_1000 = 30.0
PROBES_PER_ROOM = 60  # below a room's 64 members
HEARTBEAT_S = 15  # SPEC 7.2: a node's presence every heartbeat_s (the lobby's default)
BIG = 64 << 20  # a bulk node reads frames of any size: the bench must not be the limit
HERE = Path(__file__).resolve()


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HD_")}


# --- the worker: a share of the nodes in one process ---------------------------------------

# The lobby's listener admits at most 100 new connections per second from one source
# address (burst 200; hd_shell.listener): 10 000 nodes from 127.0.0.1 alone would take
# 100 s whatever the lobby does. The nodes dial from 127.0.1.1 ... (as many NATs would).
SOURCES = [f"127.0.1.{i}" for i in range(1, 101)]


async def dial_from(url: str, local: str, timeout_s: float = 60) -> WsLink:
    """``dial_ws`` from source address ``local`` (the client handshake of hd_shell)."""
    host, port, target, host_header, shown = _parse_ws_url(url)
    with trio.fail_after(timeout_s):
        stream = await trio.open_tcp_stream(host, port, local_address=local)
        try:
            ws = await _client_handshake(stream, host_header, target, [], shown, [])
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    return WsLink(stream, ws, host, max_message_size=BIG)


async def worker_main() -> None:
    """Reads a JSON job on stdin, prints ``ready``, waits for ``go``, registers its nodes,
    reads until ``stop``, prints its result as one JSON line."""
    raise_nofile()
    job = json.loads(sys.stdin.readline())
    urls: list[str] = job["urls"]
    ids = [Identity.generate() for _ in range(job["count"])]
    tune_collector()  # as the servers do: thousands of nodes' objects, walked over and over
    heartbeat = encode_frame("presence", {"status": "online", "capabilities": []})
    done: list[float] = []
    errors: dict[str, int] = {}
    frames = [0]
    links: list[WsLink] = []
    print("ready", flush=True)
    await trio.to_thread.run_sync(sys.stdin.readline)
    stop = trio.Event()
    limit = trio.Semaphore(job["inflight"])

    async def one(i: int, nursery: trio.Nursery) -> None:
        client = LobbyClient(ids[i], node_name=f"n{job['first'] + i}", addresses=[],
                             capabilities=[])
        async with limit:
            try:
                link = await dial_from(urls[i % len(urls)],
                                       SOURCES[(job["first"] + i) % len(SOURCES)])
                links.append(link)
                while True:
                    msgs = await link.receive_some()
                    head = msgs[0]
                    if isinstance(head, str) and '"challenge"' in head:
                        (out,) = client.receive(head, 0)
                        assert isinstance(out, Send), out
                        await link.send_many([out.wire])
                        continue
                    if any(isinstance(m, str) and '"registered"' in m[:40] for m in msgs):
                        done.append(time.monotonic())
                        frames[0] += len(msgs) - 1
                        break
                    errors["before_registered"] = errors.get("before_registered", 0) + 1
            except (LinkClosed, DialError, OSError, AssertionError, trio.TooSlowError) as exc:
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1
                if errors[key] <= 3:
                    print(f"node {i}: {exc!r}", file=sys.stderr, flush=True)
                return
        nursery.start_soon(read_on, link)

    async def read_on(link: WsLink) -> None:
        with contextlib.suppress(LinkClosed):
            while True:
                got = len(await link.receive_some())
                frames[0] += got  # not `+= len(await ...)`: that reads frames[0] first

    async def heartbeats() -> None:
        # Each node every HEARTBEAT_S, spread over the period as nodes that registered at
        # different times would be (not all at once: 10 000 frames in one burst would
        # stall the lobby for a second, which no real fleet does).
        await trio.sleep(HEARTBEAT_S)
        while True:
            batch = list(links)
            step = HEARTBEAT_S / max(1, len(batch))
            started = trio.current_time()
            for k, link in enumerate(batch):
                with contextlib.suppress(LinkClosed):
                    await link.send_many([heartbeat])
                await trio.sleep_until(started + (k + 1) * step)

    async with trio.open_nursery() as n:
        n.start_soon(heartbeats)
        for i in range(len(ids)):
            n.start_soon(one, i, n)
        await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        stop.set()
        print(json.dumps({"done": done, "errors": errors, "frames": frames[0]}), flush=True)
        n.cancel_scope.cancel()


# --- the coordinator -----------------------------------------------------------------------


class Proc:
    def __init__(self, cmd: list[str], log: Path, **kw: Any) -> None:
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=kw.pop("stdout", self.log),
                                     stderr=self.log, env=clean_env(), **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def start_nats(root: Path) -> tuple[Proc, str]:
    port, mon = free_port(), free_port()
    binary = Path(sys.executable).parent / "nats-server"
    p = Proc([str(binary), "-a", "127.0.0.1", "-p", str(port), "-m", str(mon), "-js",
              "-sd", str(root / "js")], root / "nats.log")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", mon), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                if b"200" in s.recv(100):
                    return p, f"nats://127.0.0.1:{port}"
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("nats-server did not start")


def start_lobby(root: Path, name: str, cap: int, cluster: str | None,
                profile: str | None = None) -> tuple[Proc, str]:
    data = root / name
    # --profile DIR: the lobby runs under cProfile, its stats written to DIR/<name>.prof
    # when it stops (for finding where a registration's CPU goes, not for the figures).
    prof = ([] if profile is None
            else ["-m", "cProfile", "-o", str(Path(profile).resolve() / f"{name}.prof")])
    cmd = [sys.executable, *prof, "-m", "hd_lobby", "run", "--data-dir", str(data), "--port", "0",
           "--log-level", "WARNING", "--max-connections", str(cap),
           "--max-per-address", str(cap)]
    if cluster is not None:
        cmd += ["--cluster", cluster, "--instance", name]
    p = Proc(cmd, root / f"{name}.log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            info = json.loads((data / "lobby.json").read_text())
            if info.get("pid") == p.proc.pid:
                return p, str(info["url"])
        assert p.proc.poll() is None, (root / f"{name}.log").read_text()
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not start")


class Watched:
    """A node whose every frame goes through ``LobbyClient``; notes when each node first
    shows up in its directory."""

    def __init__(self, link: WsLink, name: str) -> None:
        self.link = link
        self.client = LobbyClient(Identity.generate(), node_name=name, addresses=[],
                                  capabilities=[])
        self.seen: dict[str, float] = {}
        self.frames: list[dict[str, Any]] = []
        self.registered = trio.Event()
        self.reg: Registered | None = None
        self.changed = trio.Event()

    async def run(self) -> None:
        async with trio.open_nursery() as n:
            n.start_soon(self._heartbeats)
            await self._read()
            n.cancel_scope.cancel()

    async def _heartbeats(self) -> None:
        """What a node's shell does with ``LobbyClient``'s timer: without it the lobby
        expires the watcher after three heartbeats (45 s), and the probes after it miss."""
        with contextlib.suppress(LinkClosed):
            while True:
                due = self.client.next_deadline()
                await trio.sleep(1.0 if due is None else max(0.0, due / 1000 - time.monotonic()))
                for out in self.client.on_timer(int(time.monotonic() * 1000)):
                    if isinstance(out, Send):
                        await self.link.send_many([out.wire])

    async def _read(self) -> None:
        with contextlib.suppress(LinkClosed):
            while True:
                msgs = await self.link.receive_some()
                at = time.monotonic()
                for m in msgs:
                    for out in self.client.receive(m, int(at * 1000)):
                        if isinstance(out, Send):
                            await self.link.send_many([out.wire])
                        elif isinstance(out, Registered):
                            self.reg = out
                            self.registered.set()
                        elif isinstance(out, DirectoryUpdate):
                            self.seen.setdefault(out.entry["node_id"], at)
                    if isinstance(m, str) and ('"room_created"' in m or '"room_info"' in m):
                        self.frames.append(json.loads(m))
                self.changed.set()
                self.changed = trio.Event()

    async def wait(self, pred: Any, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while not pred():
                await self.changed.wait()
            return True
        return False


async def converged(urls: tuple[str, str], expect: int, nursery: trio.Nursery,
                    deadline_s: float = 60) -> float | None:
    """Seconds from now until a node registering on either instance is told of at least
    ``expect`` nodes (``directory_size``: the nodes registered on every instance). The
    probes start after it: they measure presence, not the draining of the storm's
    backlog."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        sizes = []
        for url in urls:
            w = Watched(await dial_ws(url, max_message_size=BIG), "counter")
            nursery.start_soon(w.run)
            ok = await w.wait(lambda w=w: w.registered.is_set(), 10)
            size = w.reg.directory_size if ok and w.reg is not None else None
            sizes.append(size if size is not None else len(w.reg.directory) if w.reg else 0)
            await w.link.aclose()
        if min(sizes) >= expect:
            return time.monotonic() - t0
        await trio.sleep(0.2)
    return None


async def probe_latency(url_watch: str, url_probe: str, count: int, gap: float,
                        phase: Any, expect: int) -> dict[str, Any]:
    """Set up the watcher (before ``phase``), run ``phase``, then the probes."""
    async with trio.open_nursery() as n:
        w = Watched(await dial_ws(url_watch, max_message_size=BIG), "watcher")
        n.start_soon(w.run)
        with trio.fail_after(30):
            await w.registered.wait()
        async def new_room() -> str:
            """Another open room of the watcher's: one holds 64 members (SPEC 11), so 100
            probes in one room had 36 refused (and a probe that left again would be a
            presence change of its own inside the next probe's batch window)."""
            before = sum(1 for f in w.frames if f["type"] == "room_created")
            await w.link.send_many([w.client.create_room("bench", "public", "open").wire])
            assert await w.wait(lambda: sum(1 for f in w.frames
                                            if f["type"] == "room_created") > before, 30)
            return str([f for f in w.frames if f["type"] == "room_created"][-1]["room"]["id"])

        room = await new_room()
        result: dict[str, Any] = {"phase": await phase()}
        result["converged_s"] = await converged((url_watch, url_probe), expect, n)
        lat: list[float] = []
        missed = 0
        probes: list[Watched] = []
        for i in range(count):
            if i and i % PROBES_PER_ROOM == 0:
                room = await new_room()
            try:
                p = Watched(await dial_ws(url_probe, max_message_size=BIG), f"probe{i}")
            except DialError:  # a lobby too busy to answer
                missed += 1
                continue
            probes.append(p)
            n.start_soon(p.run)
            t0: list[float] = []
            real_send = p.link.send_many

            async def timed(msgs: Any, real: Any = real_send, t0: list[float] = t0) -> None:
                t0.append(time.monotonic())
                await real(msgs)
            p.link.send_many = timed  # type: ignore[method-assign]
            pid = p.client.identity.node_id
            if not await p.wait(lambda p=p: p.registered.is_set(), 10):
                missed += 1
                continue
            p.link.send_many = real_send  # type: ignore[method-assign]
            await real_send([p.client.join_room(room).wire])
            if await w.wait(lambda pid=pid: pid in w.seen, 5):
                lat.append((w.seen[pid] - t0[0]) * 1000)
            else:
                missed += 1
            await trio.sleep(gap)  # one change at a time: past the watcher's batch window
        result.update(latencies_ms=lat, missed=missed)
        for p in [w, *probes]:
            await p.link.aclose()
        n.cancel_scope.cancel()
    return result


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="hd-bench-lobby-"))
    procs: list[Proc] = []
    workers: list[Proc] = []
    try:
        cluster = None
        if args.instances > 1:
            nats, cluster = start_nats(root)
            procs.append(nats)
        cap = args.nodes + args.probes + 100
        lobbies = []
        for i in range(args.instances):
            p, url = start_lobby(root, f"lobby{i + 1}", cap, cluster, args.profile)
            procs.append(p)
            lobbies.append((p, url))
        urls = [u for _, u in lobbies]
        share = [args.nodes // args.workers + (1 if i < args.nodes % args.workers else 0)
                 for i in range(args.workers)]
        first = 0
        for i, count in enumerate(share):
            w = Proc([sys.executable, str(HERE), "--worker"], root / f"worker{i}.log",
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert w.proc.stdin is not None
            # Alternate instances node by node across the whole fleet.
            wurls = urls[first % len(urls):] + urls[:first % len(urls)]
            w.proc.stdin.write((json.dumps({"urls": wurls, "count": count, "first": first,
                                            "inflight": args.inflight}) + "\n").encode())
            w.proc.stdin.flush()
            first += count
            workers.append(w)
        for w in workers:
            assert w.proc.stdout is not None
            assert w.proc.stdout.readline().strip() == b"ready"
        time.sleep(1.0)  # the instances have met on the bus
        rss0 = [rss_mb(p.proc.pid) for p, _ in lobbies]
        cpu0 = [cpu_s(p.proc.pid) for p, _ in lobbies]
        wcpu0 = sum(cpu_s(w.proc.pid) for w in workers)
        out: dict[str, Any] = {}

        async def phase() -> dict[str, Any]:
            t0 = time.monotonic()
            for w in workers:
                assert w.proc.stdin is not None
                w.proc.stdin.write(b"go\n")
                w.proc.stdin.flush()
            # Wait for the lobbies to say they hold everyone (their /metrics would do as
            # well; the workers' own answers are read at the end).
            await trio.sleep(0)
            deadline = t0 + args.deadline
            done_at = None
            while time.monotonic() < deadline:
                if await trio.to_thread.run_sync(_all_registered, root, args):
                    done_at = time.monotonic()
                    break
                await trio.sleep(0.25)
            out["rss_mb"] = [rss_mb(p.proc.pid) for p, _ in lobbies]
            out["cpu_s"] = [cpu_s(p.proc.pid) - c for (p, _), c in zip(lobbies, cpu0,
                                                                          strict=True)]
            out["clients_cpu_s"] = sum(cpu_s(w.proc.pid) for w in workers) - wcpu0
            out["t0"] = t0
            out["wall_s"] = (done_at or time.monotonic()) - t0
            return {}

        out["_"] = trio.run(probe_latency, urls[0], urls[-1], args.probes, args.probe_gap,
                              phase, args.nodes + 1)  # and the watcher
        results = []
        for w in workers:
            assert w.proc.stdin is not None and w.proc.stdout is not None
            w.proc.stdin.write(b"stop\n")
            w.proc.stdin.flush()
            results.append(json.loads(w.proc.stdout.readline()))
        done = sorted(t for r in results for t in r["done"])
        errors: dict[str, int] = {}
        for r in results:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        t0 = out["t0"]
        registered = len(done)
        took = done[-1] - t0 if done else float("nan")
        lat = out["_"]["latencies_ms"]
        per_instance = max(1, registered) / args.instances  # (the nodes alternate)
        return {
            "registered": registered, "time_to_all_s": took if registered == args.nodes
            else None, "elapsed_s": out["wall_s"],
            "reg_per_s": registered / took if done else 0.0,
            "presence_worst_ms": [round(x, 1) for x in sorted(lat)[-5:]],
            "converged_s": out["_"]["converged_s"],
            "presence_p50_ms": pct(lat, 0.5), "presence_p99_ms": pct(lat, 0.99),
            "probes_ok": len(lat), "probes_missed": out["_"]["missed"],
            "rss_idle_mb": rss0, "rss_mb": out["rss_mb"], "cpu_s": out["cpu_s"],
            "clients_cpu_s": out["clients_cpu_s"],
            "mb_per_1000": [(b - a) / (per_instance / 1000)
                            for a, b in zip(rss0, out["rss_mb"], strict=True)],
            "frames_to_bulk": sum(r["frames"] for r in results), "errors": errors,
        }
    finally:
        for w in workers:
            w.stop()
        for p in reversed(procs):
            p.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _all_registered(root: Path, args: argparse.Namespace) -> bool:
    """Every lobby's ``hd_lobby_nodes`` gauge: local nodes, all of them there."""
    total = 0
    for i in range(args.instances):
        info = json.loads((root / f"lobby{i + 1}" / "lobby.json").read_text())
        base = info["url"].rsplit("/", 1)[0].replace("ws://", "")
        host, port = base.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                body = b""
                while chunk := s.recv(65536):
                    body += chunk
        except OSError:
            return False
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("hd_lobby_nodes "):
                total += int(float(line.split()[1]))
    return total >= args.nodes + 1  # and the watcher


def summary(name: str, xs: list[float | None], fmt: str = "{:.1f}") -> str:
    vals = [x for x in xs if x is not None]
    if not vals:
        return f"  {name:34s} n/a"
    return (f"  {name:34s} min {fmt.format(min(vals))}  median "
            f"{fmt.format(statistics.median(vals))}  max {fmt.format(max(vals))}"
            + ("" if len(vals) == len(xs) else f"  ({len(xs) - len(vals)} runs n/a)"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--instances", type=int, choices=(1, 2), default=1)
    ap.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                    help="client processes (default: one per core; on 2 cores, 4 of them "
                    "took a third more CPU for the same nodes)")
    ap.add_argument("--inflight", type=int, default=64, help="dials in flight per worker")
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--probe-gap", type=float, default=0.3,
                    help="seconds between probes (the lobby batches presence per 250 ms)")
    ap.add_argument("--deadline", type=float, default=90.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--profile", metavar="DIR", help="run the lobbies under cProfile")
    ap.add_argument("--keep", action="store_true", help="keep the run's directory and logs")
    args = ap.parse_args()
    if args.worker:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(worker_main)
        return
    raise_nofile()
    runs = []
    for i in range(args.runs):
        r = run_once(args)
        runs.append(r)
        print(f"run {i + 1}: " + json.dumps(r), file=sys.stderr, flush=True)
    print(f"hd fabric lobby bench: {args.nodes} nodes on {args.instances} instance(s)"
          f"{' over one nats-server' if args.instances > 1 else ''}, {args.workers} client "
          f"processes, {len(runs)} run(s)")
    print(summary("time to all registered (s)", [r["time_to_all_s"] for r in runs])
          + f"   goal <= {GOAL_S:.0f}")
    print(summary("registrations/s", [r["reg_per_s"] for r in runs], "{:.0f}"))
    print(summary("registered within the deadline", [float(r["registered"]) for r in runs],
                  "{:.0f}"))
    print(summary("directories whole (s after)", [r["converged_s"] for r in runs]))
    print(summary("presence p50 (ms)", [r["presence_p50_ms"] for r in runs]))
    print(summary("presence p99 (ms)", [r["presence_p99_ms"] for r in runs])
          + f"   goal <= {GOAL_P99_MS:.0f}")
    for i in range(args.instances):
        print(summary(f"instance {i + 1} MB per 1000 nodes", [r["mb_per_1000"][i]
                                                              for r in runs])
              + f"   goal <= {GOAL_MB_PER_1000:.0f}")
        print(summary(f"instance {i + 1} RSS (MB)", [r["rss_mb"][i] for r in runs]))
        print(summary(f"instance {i + 1} CPU (s)", [r["cpu_s"][i] for r in runs]))
    print(summary("client processes' CPU (s)", [r["clients_cpu_s"] for r in runs]))
    print(json.dumps({"bench": "lobby", "nodes": args.nodes, "instances": args.instances,
                      "runs": runs}))


if __name__ == "__main__":
    main()
