"""Harness for the integration tests: real ``hd-node`` processes on loopback.

Every node a test starts runs as ``python -m hd_node run`` in its own process with its
own data directory under ``tmp_path``. A node counts as started once its
``node.json`` (written only after both listeners are bound) names the new process's
pid; if the process dies first, the start fails with the tail of its log. Every
process is stopped by the fixture that started it (SIGINT, then SIGKILL after a
deadline, always waited for), so a failing test leaves nothing behind.

The process-level operations are synchronous and run in worker threads from the trio
tests (``await node.astart()``), which lets several nodes start in parallel.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from hd_node.client import NodeClient
from hd_protocol import Decision, Dialer, Identity, Session
from hd_protocol import handshake as hs
from hd_protocol import session as ss

PYTHON = sys.executable
START_TIMEOUT = 20.0  # generous: two cold interpreters on a loaded 2-core machine
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0

T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (for restart tests that need
    the same port twice; everything else binds port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env() -> dict[str, str]:
    # The node reads HD_* settings from the environment (SPEC 10): none may leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class NodeStartError(AssertionError):
    pass


@dataclass(frozen=True)
class CliResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def check(self) -> CliResult:
        assert self.returncode == 0, (
            f"{' '.join(self.args)} exited {self.returncode}\nstdout: {self.stdout}\n"
            f"stderr: {self.stderr}"
        )
        return self


def run_cli(*args: str, timeout: float = CLI_TIMEOUT) -> CliResult:
    """``hd-node ARGS`` as a real subprocess (killed at the deadline)."""
    cmd = [PYTHON, "-m", "hd_node", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=_clean_env(), stdin=subprocess.DEVNULL, check=False)
    return CliResult(list(args), proc.returncode, proc.stdout, proc.stderr)


async def arun_cli(*args: str, timeout: float = CLI_TIMEOUT) -> CliResult:
    return await trio.to_thread.run_sync(lambda: run_cli(*args, timeout=timeout))


class NodeProcess:
    """One ``hd-node run`` process and its data directory (survives restarts)."""

    def __init__(
        self,
        root: Path,
        name: str,
        *,
        ui_port: int = 0,
        peer_port: int = 0,
        config: str | None = None,
        extra_args: Sequence[str] = (),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.extra_env = dict(extra_env or {})
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self.ui_port_arg = ui_port
        self.peer_port_arg = peer_port
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = root / f"{name}.toml"
            self.config_path.write_text(config)
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.info: dict[str, Any] = {}
        self.returncode: int | None = None
        self._stopping = False

    def __repr__(self) -> str:
        return f"<NodeProcess {self.name} pid={self.proc.pid if self.proc else None}>"

    # --- what a test needs -------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return str(self.info["node_id"])

    @property
    def ws_url(self) -> str:
        return str(self.info["ws_url"])

    @property
    def ui_url(self) -> str:
        return str(self.info["ui_url"]).rstrip("/")

    @property
    def peer_url(self) -> str:
        return str(self.info["peer_url"])

    @property
    def token(self) -> str:
        return str(self.info["token"])

    @property
    def ui_port(self) -> int:
        return int(self.ui_url.rsplit(":", 1)[1])

    @property
    def peer_port(self) -> int:
        return int(self.peer_url.rsplit(":", 1)[1].split("/", 1)[0])

    @property
    def origin(self) -> str:
        return self.ui_url

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # --- lifecycle (sync; run in threads from trio) --------------------------------------

    def command(self) -> list[str]:
        cmd = [PYTHON, "-m", "hd_node", "run", "--data-dir", str(self.data_dir),
               "--ui-port", str(self.ui_port_arg), "--peer-port", str(self.peer_port_arg),
               "--peer-host", "127.0.0.1", "--name", self.name]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        return cmd + self.extra_args

    def start(self, timeout: float = START_TIMEOUT) -> NodeProcess:
        assert not self.running, f"{self.name} is already running"
        self._close_log()
        self.returncode = None
        self._stopping = False
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     env={**_clean_env(), **self.extra_env})
        node_json = self.data_dir / "node.json"
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self._reap()
                raise NodeStartError(f"{self.name} exited with {rc} before listening:\n"
                                     f"{self._log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(node_json.read_text())
                # A stale node.json (a SIGKILLed earlier run) names another pid.
                if isinstance(info, dict) and info.get("pid") == self.proc.pid:
                    self.info = info
                    return self
            if time.monotonic() > deadline:
                self.kill()
                raise NodeStartError(f"{self.name} wrote no node.json within {timeout} s:\n"
                                     f"{self._log_tail()}")
            time.sleep(0.02)

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGINT, signal.SIGTERM):
                self._stopping = True

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if the process still runs at the deadline."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reap()
        return rc

    def stop(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> int:
        """Graceful stop; SIGKILL if it outlives ``timeout``. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            if not self._stopping:  # a second SIGINT would interrupt the graceful stop
                self.send_signal(sig)
            rc = self.wait(timeout)
            if rc is not None:
                return rc
            self.proc.kill()
        rc = self.proc.wait(timeout=timeout)
        self._reap()
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=STOP_TIMEOUT)
            self._reap()

    def _reap(self) -> None:
        assert self.proc is not None
        self.returncode = self.proc.returncode
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- async wrappers --------------------------------------------------------------

    async def astart(self, timeout: float = START_TIMEOUT) -> NodeProcess:
        return await trio.to_thread.run_sync(lambda: self.start(timeout))

    async def astop(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> int:
        return await trio.to_thread.run_sync(lambda: self.stop(sig, timeout))

    async def await_exit(self, timeout: float) -> int | None:
        return await trio.to_thread.run_sync(lambda: self.wait(timeout))

    # --- talking to the node ---------------------------------------------------------

    async def cli(self, command: str, *args: str, timeout: float = CLI_TIMEOUT) -> CliResult:
        """``hd-node COMMAND --data-dir DIR ARGS`` against this node."""
        return await arun_cli(command, "--data-dir", str(self.data_dir), *args, timeout=timeout)

    def client(self, **kw: Any) -> Any:
        """``async with node.client() as tab:`` — a /ws tab (hd_node.client.NodeClient)."""
        return NodeClient.open(self.ws_url, self.token, **kw)

    async def http(self, method: str, path: str, *, token: bool = True,
                   **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.ui_url + path

        def go() -> httpx.Response:
            with httpx.Client(timeout=HTTP_TIMEOUT) as c:
                return c.request(method, url, headers=headers, **kw)

        try:
            return await trio.to_thread.run_sync(go)
        except httpx.TransportError as exc:
            state = "running" if self.running else f"exited with {self.returncode}"
            raise AssertionError(f"{self.name} ({state}) did not answer {method} {path}: "
                                 f"{exc!r}\n{self._log_tail()}") from exc

    async def peers(self) -> list[dict[str, Any]]:
        r = await self.http("GET", "/api/peers")
        assert r.status_code == 200, r.text
        return list(r.json())

    async def peer(self, node_id: str) -> dict[str, Any] | None:
        for p in await self.peers():
            if p["node_id"] == node_id:
                return p
        return None

    async def metric(self, name: str, **labels: str) -> float | None:
        """One sample from /metrics (Prometheus text format, with the token: the
        per-peer series too); None if absent."""
        r = await self.http("GET", "/metrics")
        assert r.status_code == 200
        return sample(r.text, name, **labels)

    async def metric_sum(self, name: str, **labels: str) -> float:
        """The sum of every sample of ``name`` whose labels include ``labels``."""
        r = await self.http("GET", "/metrics")
        return sum(v for lab, v in samples(r.text, name) if labels.items() <= lab.items())

    async def invite(self, *args: str) -> str:
        res = (await self.cli("invite", *args)).check()
        inv = res.stdout.strip()
        assert inv.startswith("hd1:"), res
        return inv


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or m.group(1) != name:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((labels, float(m.group(3))))
    return out


def sample(text: str, name: str, **labels: str) -> float | None:
    for lab, value in samples(text, name):
        if lab == labels:
            return value
    return None


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy, or fail at the deadline."""
    last: Any = None
    with trio.move_on_after(timeout):
        while True:
            last = await check()
            if last:
                return last
            await trio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {last!r}")


async def connected(node: NodeProcess, other: NodeProcess) -> dict[str, Any] | None:
    p = await node.peer(other.node_id)
    return p if p is not None and p["status"] == "connected" else None


class Cluster:
    """Creates nodes under one directory and stops every one of them at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[NodeProcess] = []

    def new(self, name: str, **kw: Any) -> NodeProcess:
        node = NodeProcess(self.root, name, **kw)
        self.nodes.append(node)
        return node

    async def start(self, *nodes: NodeProcess) -> None:
        """Start several nodes in parallel (each a cold interpreter: ~0.5 s of CPU)."""
        async with trio.open_nursery() as n:
            for node in nodes:
                n.start_soon(node.astart)

    async def spawn(self, *names: str, **kw: Any) -> list[NodeProcess]:
        nodes = [self.new(name, **kw) for name in names]
        await self.start(*nodes)
        return nodes

    async def stop(self, *nodes: NodeProcess) -> None:
        async with trio.open_nursery() as n:
            for node in nodes:
                n.start_soon(node.astop)

    async def pair(self, inviter: NodeProcess, redeemer: NodeProcess,
                   timeout: float = 10.0) -> None:
        """Pair through the nodes' HTTP API (what ``hd-node invite``/``pair`` call, minus
        two interpreter start-ups; the CLI itself is tested in test_pairing) and wait
        until both sides show the session."""
        r = await inviter.http("POST", "/api/invites", json={})
        assert r.status_code == 200, r.text
        r = await redeemer.http("POST", "/api/pair", json={"invite": r.json()["invite"]})
        assert r.status_code == 200 and r.json()["ok"] is True, r.text
        await eventually(lambda: connected(inviter, redeemer), timeout=timeout,
                         what=f"{inviter.name} to list {redeemer.name} as connected")
        await eventually(lambda: connected(redeemer, inviter), timeout=timeout,
                         what=f"{redeemer.name} to list {inviter.name} as connected")

    def stop_all(self) -> None:
        """Signal every node at once, then wait for each (SIGKILL at the deadline)."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                if node.running:
                    node.send_signal(signal.SIGINT)
        errors = []
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
                with contextlib.suppress(Exception):
                    node.kill()
        if errors:
            raise errors[0]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


def _api_sync(node: NodeProcess, method: str, path: str, **kw: Any) -> Any:
    with httpx.Client(timeout=HTTP_TIMEOUT) as c:
        r = c.request(method, node.ui_url + path,
                      headers={"Authorization": f"Bearer {node.token}"}, **kw)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def shared_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess,
                                                                            NodeProcess]]:
    """alice and bob, paired, shared by the tests of one module. Only for tests that
    leave the pair as they found it (each checks the session is still up at its end)."""
    c = Cluster(tmp_path_factory.mktemp("shared"))
    try:
        alice, bob = c.new("alice"), c.new("bob")
        for node in (alice, bob):
            node.start()
        inv = _api_sync(alice, "POST", "/api/invites", json={})["invite"]
        assert _api_sync(bob, "POST", "/api/pair", json={"invite": inv})["ok"] is True
        deadline = time.monotonic() + 10
        while not all(any(p["node_id"] == other.node_id and p["status"] == "connected"
                          for p in _api_sync(node, "GET", "/api/peers"))
                      for node, other in ((alice, bob), (bob, alice))):
            assert time.monotonic() < deadline, "the shared pair did not connect"
            time.sleep(0.05)
        yield alice, bob
    finally:
        c.stop_all()


@pytest.fixture
async def paired(cluster: Cluster) -> AsyncIterator[tuple[NodeProcess, NodeProcess]]:
    """Two running nodes, alice and bob, paired (bob redeemed alice's invite)."""
    alice, bob = await cluster.spawn("alice", "bob")
    await cluster.pair(alice, bob)
    yield alice, bob


# --- a hand-driven peer ----------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


class HandshakeRefused(Exception):
    def __init__(self, reason: str, remote: bool) -> None:
        super().__init__(f"{reason} (remote={remote})")
        self.reason = reason
        self.remote = remote


class RawPeer:
    """A peer driven by hand from the test: hd_protocol's Dialer and Session over the
    third-party ``websockets`` sync client. It lets a test present exactly what it
    wants (an expired token, junk inside a live session) to a real node.

    Synchronous (the websockets sync client); call it through ``trio.to_thread``.
    """

    def __init__(self, url: str, identity: Identity | None = None, *,
                 expected_node_id: str | None = None, token: str | None = None) -> None:
        self.url = url
        self.identity = identity or Identity.generate()
        self.expected_node_id = expected_node_id
        self.token = token
        self.ws: ClientConnection | None = None
        self.session: Session | None = None
        self.result: hs.HandshakeResult | None = None
        self.received: list[Any] = []  # session outputs seen while waiting

    def __enter__(self) -> RawPeer:
        self.ws = ws_connect(self.url, compression=None, ping_interval=None,
                             open_timeout=5, close_timeout=2, max_size=None,
                             proxy=None).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ws is not None:
            self.ws.__exit__(None, None, None)

    def handshake(self, timeout: float = 5.0) -> Session:
        assert self.ws is not None
        machine = Dialer(self.identity, rng=os.urandom, now=now_ms(),
                         expected_node_id=self.expected_node_id, token=self.token,
                         node_name="raw", timeout_ms=int(timeout * 1000))
        work = list(machine.start(now_ms()))
        deadline = time.monotonic() + timeout
        while True:
            while work:
                out = work.pop(0)
                if isinstance(out, hs.Send):
                    self.ws.send(out.wire)
                elif isinstance(out, hs.NeedAdmission):
                    work.extend(machine.admit(Decision("trusted"), now_ms()))
                elif isinstance(out, hs.Established):
                    self.result = out.result
                    self.session = Session(self.identity, out.result, rng=os.urandom,
                                           now=now_ms())
                    return self.session
                elif isinstance(out, hs.Failed):
                    raise HandshakeRefused(out.reason, out.remote)
            try:
                frame = self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise HandshakeRefused("timeout", False) from None
            except ConnectionClosed:
                raise HandshakeRefused("closed", True) from None
            work.extend(machine.receive(frame, now_ms()))

    def send_raw(self, frame: str | bytes) -> None:
        assert self.ws is not None
        self.ws.send(frame)

    def send(self, type: str, data: dict[str, Any]) -> str:
        assert self.ws is not None and self.session is not None
        msg_id, outs = self.session.send(type, data, now_ms())
        for o in outs:
            if isinstance(o, ss.Send):
                self.ws.send(o.wire)
        return msg_id

    def wait_output(self, pred: Callable[[Any], bool], timeout: float = 5.0) -> Any:
        """Feed inbound frames to the session until one of its outputs matches."""
        assert self.ws is not None and self.session is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching output within {timeout} s: {self.received}")
            frame = self.ws.recv(timeout=left)
            for out in self.session.receive(frame, now_ms()):
                self.received.append(out)
                if isinstance(out, ss.Send):  # e.g. our pong to the node's ping
                    self.ws.send(out.wire)
                elif pred(out):
                    return out

    def ping(self, timeout: float = 5.0) -> int:
        assert self.ws is not None and self.session is not None
        mid, outs = self.session.ping(now_ms())
        for o in outs:
            if isinstance(o, ss.Send):
                self.ws.send(o.wire)
        pong = self.wait_output(lambda o: isinstance(o, ss.Pong) and o.request_id == mid,
                                timeout)
        return int(pong.rtt_ms)
