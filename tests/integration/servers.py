"""Real ``hd-lobby`` and ``hd-relay`` processes for the integration tests.

Like ``NodeProcess``: each runs as ``python -m hd_lobby run`` / ``python -m hd_relay run``
with its own data directory; it counts as started once its info file names the new
process's pid; it is stopped (SIGINT, then SIGKILL at a deadline) by whoever started it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import _clean_env

START_TIMEOUT = 20.0


class ServerProcess:
    def __init__(self, root: Path, name: str, module: str, info_file: str,
                 extra_args: list[str] | None = None, port: int = 0) -> None:
        self.name = name
        self.module = module
        self.data_dir = root / name
        self.info_path = self.data_dir / info_file
        self.log_path = root / f"{name}.log"
        self.extra_args = extra_args or []
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._log: Any = None

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> ServerProcess:
        if self._log is not None:  # a restart after a kill
            self._log.close()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        cmd = [sys.executable, "-m", self.module, "run", "--data-dir", str(self.data_dir),
               "--port", str(self.port), *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=_clean_env())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n"
                                     f"{self.log_text()[-2000:]}")
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(self.info_path.read_text())
                if info.get("pid") == self.proc.pid:
                    self.info = info
                    if not self.port:
                        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
                    return self
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"{self.name} did not start:\n{self.log_text()[-2000:]}")

    async def astart(self) -> ServerProcess:
        return await trio.to_thread.run_sync(self.start)

    def stop(self, sig: int = signal.SIGINT) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


class Servers:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[ServerProcess] = []

    def lobby(self, name: str = "lobby", extra_args: list[str] | None = None) -> ServerProcess:
        p = ServerProcess(self.root, name, "hd_lobby", "lobby.json", extra_args)
        self.procs.append(p)
        return p

    def relay(self, name: str = "relay", port: int = 0) -> ServerProcess:
        p = ServerProcess(self.root, name, "hd_relay", "relay.json", port=port)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    try:
        yield s
    finally:
        s.stop_all()
