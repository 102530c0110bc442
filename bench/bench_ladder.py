"""Time from ``lobby join_room`` to an open session, per rung of the join ladder.

One ``hd-lobby`` on loopback (its bundled relay at ``/relay-ws``) and, for every round,
three fresh host/guest pairs of ``hd-node`` processes, each configured so that exactly
one rung (SPEC 8.2) can win:

  direct   both plain: the host's listener is a direct candidate, tried at 0 s;
  webrtc   host ``enableDirect = false``, both ``enableWebRtc``: no direct candidate, so
           the first timed rung, WebRTC, starts at once (data channel signalled
           through the lobby); the relay would only join it at 1.5 s;
  relay    host ``enableDirect = false``, no WebRTC: the lobby's relay is the only
           candidate and starts at once.

Because a timed rung starts at once when nothing else is trying, none of these figures
contains the ladder's 1 s / 1.5 s offsets: each is what that rung itself costs.

Why fresh pairs: every measured join is a first join of a node that never met the
host: no stored address, no session to reuse (a second ``join_room`` would answer with
the session already open), no reconnect loop of an earlier session racing the ladder.
Leave-and-rejoin would measure a different thing. Nodes are started and connected
first (lobby registered, host in the guest's directory, all attached to the relay), so
no process is starting while a join is timed; the joins of one round run one at a
time, in an order rotated from round to round.

The clock runs on the guest's tab: from sending ``join_room`` (the room exists, the tab
is open) until its answer ``{via, peer}``, which the node sends once the winning link
has an authenticated session. Also per join, from the ``network ladder`` events seen
by the tab: when the winning rung started, and how long its dial took. For scale, in
the same run: a lobby round trip (``list_rooms`` from the guest), which every join
pays once before any rung starts, and each rung's median as a multiple of the direct
rung's. And the CPU time host, guest and lobby used during the join, next to the time
they sat runnable without a CPU (Linux schedstat): the machine is shared, and that
second figure says how much of a slow join was other load. ``via`` must be the
expected rung, or the bench fails with exit status 1. Output: a table, then one JSON
line (each join's figures in ``samples``).

    python bench/bench_ladder.py [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from hd_node.client import NodeClient

START_TIMEOUT = 30.0  # cold interpreters, six at once, on a small shared machine
STOP_TIMEOUT = 10.0
READY_TIMEOUT = 20.0  # lobby registration, directory, relay attachment
JOIN_TIMEOUT = 20.0  # the ladder's own deadline is 15 s

RUNGS = ("direct", "webrtc", "relay")
WEBRTC = "enableWebRtc = true\n"
NO_LISTENER = "enableDirect = false\n"
# rung -> (host's [network] settings, guest's)
CONFIGS = {
    "direct": ("", ""),
    "webrtc": (NO_LISTENER + WEBRTC, WEBRTC),
    "relay": (NO_LISTENER, ""),
}


class BenchFailed(Exception):
    pass


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """One ``python -m MODULE run`` process; started once its info file names its pid."""

    def __init__(self, root: Path, name: str, module: str, info_file: str,
                 args: list[str]) -> None:
        self.name = name
        self.data_dir = root / name
        self.info_path = self.data_dir / info_file
        self.log_path = root / f"{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "run", "--data-dir", str(self.data_dir), *args],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_env())
        self.info: dict[str, Any] = {}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchFailed(f"{self.name} exited with {self.proc.returncode}:\n"
                                  f"{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(self.info_path.read_text())
                if info.get("pid") == self.proc.pid:
                    self.info = info
                    return
            time.sleep(0.02)
        raise BenchFailed(f"{self.name} did not start within {START_TIMEOUT} s")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def schedstat_s(self) -> tuple[float, float]:
        """Seconds its threads ran on a CPU, and spent runnable but waiting for one
        (Linux /proc schedstat, nanoseconds; zeros elsewhere)."""
        pid = self.proc.pid
        ran = waited = 0
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                fields = Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()
                ran, waited = ran + int(fields[0]), waited + int(fields[1])
        except (OSError, IndexError, ValueError):
            pass  # a thread that ended meanwhile: the others still count
        return ran / 1e9, waited / 1e9

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def stop(self) -> None:
        """SIGINT (unless sent already), then SIGKILL if it outlives the deadline."""
        self.interrupt()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
        self.log.close()


def stop_all(procs: list[Proc]) -> None:
    """All at once: SIGINT to each, then wait for each (killed at its deadline)."""
    for p in procs:
        p.interrupt()
    for p in procs:
        with contextlib.suppress(Exception):
            p.stop()


def _dump_logs(procs: list[Proc]) -> None:
    for proc in procs:
        tail = proc.log_tail(1500).strip()
        if tail:
            print(f"--- {proc.name}.log (tail) ---\n{tail}", file=sys.stderr)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def start_node(root: Path, name: str, network: str) -> Proc:
    config = root / f"{name}.toml"
    config.write_text("[network]\n" + network)
    return Proc(root, name, "hd_node", "node.json", [
        "--ui-port", "0", "--peer-port", "0", "--peer-host", "127.0.0.1", "--name", name,
        "--log-level", "WARNING", "--config", str(config)])


def _tab(node: Proc) -> Any:
    return NodeClient.open(node.info["ws_url"], node.info["token"])


async def _eventually(check: Any, what: str, timeout: float = READY_TIMEOUT) -> None:
    with trio.move_on_after(timeout):
        while not await check():
            await trio.sleep(0.02)
        return
    raise BenchFailed(f"timed out after {timeout} s waiting for {what}")


def _metric(lobby_url: str, name: str) -> float:
    url = lobby_url.replace("ws://", "http://").rsplit("/", 1)[0] + "/metrics"
    with httpx.Client(timeout=10) as c:
        text = c.get(url).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name)


async def connect_to_lobby(node: Proc, lobby_url: str) -> None:
    async with _tab(node) as tab:
        await tab.request("lobby", "connect", {"url": lobby_url})

        async def up() -> bool:
            return bool((await tab.request("lobby", "state"))["connected"])

        await _eventually(up, f"{node.name} to register with the lobby")


async def join_once(rung: str, host: Proc, guest: Proc, lobby: Proc) -> dict[str, Any]:
    host_id = host.info["node_id"]
    async with _tab(host) as th:
        room = (await th.request("lobby", "create_room", {
            "name": f"bench-{rung}", "visibility": "public", "joinPolicy": "open"}))["room"]
    async with _tab(guest) as tg:
        async def listed() -> bool:  # the guest knows the host (and that it runs WebRTC)
            entry = next((e for e in (await tg.request("lobby", "state"))["directory"]
                          if e.get("node_id") == host_id), None)
            return entry is not None and (rung != "webrtc"
                                          or "webrtc" in (entry.get("capabilities") or []))

        await _eventually(listed, f"the {rung} host in its guest's lobby directory")
        t = trio.current_time()
        await tg.request("lobby", "list_rooms", timeout=JOIN_TIMEOUT)
        lobby_rtt = trio.current_time() - t

        steps: list[tuple[float, dict[str, Any]]] = []
        since = tg.mark()

        async def watch() -> None:  # each ladder step, stamped when the tab sees it
            nonlocal since
            while True:
                ev = await tg.wait_for("network", "ladder", since=since,
                                       timeout=JOIN_TIMEOUT * 2)
                steps.append((trio.current_time() - t0, ev["data"]))
                since = next(i for i, e in enumerate(tg.events) if e is ev) + 1

        involved = (host, guest, lobby)
        before = [p.schedstat_s() for p in involved]
        async with trio.open_nursery() as n:
            t0 = trio.current_time()
            n.start_soon(watch)
            joined = await tg.request("lobby", "join_room", {"roomId": room["id"]},
                                      timeout=JOIN_TIMEOUT)
            took = trio.current_time() - t0
            n.cancel_scope.cancel()
        after = [p.schedstat_s() for p in involved]
        cpu = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
        waited = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
        # Steps that reached the tab after the answer (none expected) still count.
        seen = {id(d) for _, d in steps}
        steps += [(took, e["data"]) for e in list(tg.events)[since:]
                  if (e.get("channel"), e.get("event")) == ("network", "ladder")
                  and id(e["data"]) not in seen]
    via = joined.get("via")
    if via != rung or (joined.get("peer") or {}).get("node_id") != host_id:
        raise BenchFailed(f"the {rung} pair joined via {via!r} (peer "
                          f"{(joined.get('peer') or {}).get('node_id')}, host {host_id}); "
                          f"ladder steps: {[d for _, d in steps]}")
    mine = [(ts, d) for ts, d in steps if d.get("node_id") == host_id]
    start = next((ts for ts, d in mine if d["kind"] == rung and d["step"] == "start"), None)
    won = next((ts for ts, d in mine if d["kind"] == rung and d["step"] == "won"), None)
    return {
        "ms": round(took * 1000, 2),
        "via": via,
        "lobby_rtt_ms": round(lobby_rtt * 1000, 2),
        "start_ms": None if start is None else round(start * 1000, 2),
        "dial_ms": None if start is None or won is None else round((won - start) * 1000, 2),
        "cpu_ms": round(cpu * 1000, 2),
        "cpu_wait_ms": round(waited * 1000, 2),
        "tried": sorted({d["kind"] for _, d in mine if d["step"] == "start"}),
        "steps": [f"{d['kind']}:{d['step']}" for _, d in mine],
    }


async def one_round(root: Path, lobby: Proc, r: int, procs: list[Proc]
                    ) -> dict[str, dict[str, Any]]:
    pairs: dict[str, tuple[Proc, Proc]] = {}
    mine: list[Proc] = []
    try:
        for rung in RUNGS:
            host_cfg, guest_cfg = CONFIGS[rung]
            host = start_node(root, f"r{r}-{rung}-host", host_cfg)
            procs.append(host)
            mine.append(host)
            guest = start_node(root, f"r{r}-{rung}-guest", guest_cfg)
            procs.append(guest)
            mine.append(guest)
            pairs[rung] = (host, guest)
        for p in mine:
            await trio.to_thread.run_sync(p.wait_ready)
        async with trio.open_nursery() as n:
            for p in mine:
                n.start_soon(connect_to_lobby, p, lobby.info["url"])

        async def attached() -> bool:  # the earlier rounds' nodes are gone by now
            n = await trio.to_thread.run_sync(_metric, lobby.info["url"],
                                              "hd_relay_connections")
            return n == len(mine)

        await _eventually(attached, f"{len(mine)} nodes attached to the lobby's relay")
        order = RUNGS[r % len(RUNGS):] + RUNGS[:r % len(RUNGS)]
        return {rung: await join_once(rung, *pairs[rung], lobby) for rung in order}
    except Exception:
        _dump_logs([lobby, *mine])
        raise
    finally:
        await trio.to_thread.run_sync(stop_all, mine)
        for p in mine:
            procs.remove(p)


async def run(root: Path, lobby: Proc, rounds: int, procs: list[Proc]
              ) -> dict[str, list[dict[str, Any]]]:
    samples: dict[str, list[dict[str, Any]]] = {rung: [] for rung in RUNGS}
    for r in range(rounds):
        got = await one_round(root, lobby, r, procs)
        for rung, s in got.items():
            samples[rung].append(s)
        print(f"  round {r + 1}/{rounds}: " + "  ".join(
            f"{rung} {got[rung]['ms']:.1f} ms" for rung in RUNGS), file=sys.stderr)
    return samples


def _median(values: list[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return round(statistics.median(vs), 2) if vs else None


def summarize(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rung, ss in samples.items():
        ms = [s["ms"] for s in ss]
        out[rung] = {"via": rung, "n": len(ms), "median_ms": _median(list(ms)),
                     "min_ms": min(ms), "max_ms": max(ms),
                     "start_ms_median": _median([s["start_ms"] for s in ss]),
                     "dial_ms_median": _median([s["dial_ms"] for s in ss]),
                     "cpu_ms_median": _median([s["cpu_ms"] for s in ss]),
                     "cpu_wait_ms_median": _median([s["cpu_wait_ms"] for s in ss]),
                     "also_tried": sorted({k for s in ss for k in s["tried"]} - {rung}),
                     "samples": ss}
    base = out["direct"]["median_ms"]
    for rung in RUNGS:
        out[rung]["to_direct"] = round(out[rung]["median_ms"] / base, 3) if base else None
    return out


def _fmt(v: float | None, width: int = 8) -> str:
    return f"{v:{width}.1f}" if v is not None else " " * (width - 1) + "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5,
                   help="joins per rung, each with a fresh host/guest pair (default 5)")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")

    root = Path(tempfile.mkdtemp(prefix="hd-bench-ladder-"))
    procs: list[Proc] = []
    try:
        lobby = Proc(root, "lobby", "hd_lobby", "lobby.json",
                     ["--port", "0", "--log-level", "WARNING"])
        procs.append(lobby)
        lobby.wait_ready()
        samples = trio.run(run, root, lobby, args.rounds, procs)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        _dump_logs(procs)  # the lobby's (a round's nodes were dumped by the round)
        for leaf in _leaves(exc):
            print(f"bench_ladder FAILED: {type(leaf).__name__}: {leaf}", file=sys.stderr)
        return 1
    finally:
        stop_all(list(reversed(procs)))
        shutil.rmtree(root, ignore_errors=True)

    res = summarize(samples)
    rtt = [s["lobby_rtt_ms"] for ss in samples.values() for s in ss]
    rtt_med = _median(list(rtt))
    print(f"hd fabric join-ladder bench: lobby join_room -> open session on loopback, "
          f"{args.rounds} round(s), a fresh host/guest pair per join")
    print("  rung     via      median ms   min ms   max ms  x direct   rung start  rung dial"
          "   cpu used  cpu wait")
    for rung in RUNGS:
        r = res[rung]
        print(f"  {rung:7s}  {r['via']:7s}  {_fmt(r['median_ms'], 9)} {_fmt(r['min_ms'])} "
              f"{_fmt(r['max_ms'])}  {r['to_direct']:8.2f}  {_fmt(r['start_ms_median'], 11)}"
              f"  {_fmt(r['dial_ms_median'], 9)}  {_fmt(r['cpu_ms_median'], 9)}"
              f"  {_fmt(r['cpu_wait_ms_median'])}")
    print(f"  lobby round trip (list_rooms from the guest)  median {rtt_med:.1f} ms, "
          f"min {min(rtt):.1f}, max {max(rtt):.1f}: every join pays one before any rung")
    print("  (all ms; rung start / dial: medians of when the winning rung's first ladder "
          "step reached\n   the tab, and of start -> won; cpu used / cpu wait: CPU time host, "
          "guest and lobby\n   used during the join, and time they sat runnable without a "
          "CPU (other load), summed)")
    for rung in RUNGS:
        if res[rung]["also_tried"]:
            print(f"  note: the {rung} joins also started {', '.join(res[rung]['also_tried'])}"
                  " (a slower rung ran past another's start offset)")
    print(json.dumps({"bench": "ladder", "rounds": args.rounds, "rungs": res,
                      "lobby_rtt_ms": {"median": rtt_med, "min": min(rtt), "max": max(rtt)},
                      "reference": "direct"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
