"""A real STUN/TURN server for the tests: Debian's coturn (``turnserver``, ENV.md).

Started directly (the Popen's pid is coturn's own), on 127.0.0.1 and a free port, with
its log, user database and pid file in the test's tmp directory; it counts as started
once it answers a STUN Binding; it is stopped by that pid (SIGTERM, SIGKILL at a
deadline). Without ``turnserver`` the test fails, never skips: ``make test`` installs
it first (the Makefile's ``coturn`` step).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from hd_protocol.stun import decode_message, encode_binding_request

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def free_udp_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 a moment ago (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port for coturn")


def stun_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Whether a STUN server answers a Binding request on ``host``:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        txid = os.urandom(12)
        s.sendto(encode_binding_request(txid), (host, port))
        try:
            data, _ = s.recvfrom(4096)
        except OSError:  # a timeout, or ICMP port unreachable
            return False
    with contextlib.suppress(Exception):
        return decode_message(data).txid == txid
    return False


class Coturn:
    USER, PASSWORD, REALM = "u", "p", "test"

    def __init__(self, root: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.extra_args = extra_args  # e.g. ("-v",): log each allocation (TURN tests)
        self.dir = root / "coturn"
        self.log_path = self.dir / "turnserver.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def stun_server(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def turn_url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log_text(self) -> str:
        parts = []
        for p in (self.log_path, self.dir / "stdout.log"):
            with contextlib.suppress(OSError):
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    def start(self) -> Coturn:
        binary = shutil.which("turnserver")
        if binary is None:
            pytest.fail("turnserver is not installed (Debian package coturn): run `make "
                        "coturn`, or `apt-get install coturn`", pytrace=False)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_udp_port()
        cmd = [binary, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
               f"--listening-port={self.port}", "--allow-loopback-peers", "--no-cli",
               "--no-tls", "--no-dtls", "--lt-cred-mech", "--user",
               f"{self.USER}:{self.PASSWORD}", "--realm", self.REALM, "--simple-log",
               f"--log-file={self.log_path}", f"--userdb={self.dir / 'turndb'}",
               f"--pidfile={self.dir / 'turnserver.pid'}", *self.extra_args]
        out = open(self.dir / "stdout.log", "ab")  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not stun_answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"coturn did not start on port {self.port}:\n"
                                     f"{self.log_text()[-2000:]}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        if self._out is not None:
            self._out.close()
            self._out = None


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    server = Coturn(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()
