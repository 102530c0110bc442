"""``make run`` as a person uses it: ``NAME=`` names the node, its data lives in a private
directory (0700, missing parents too), it prints the UI URL once the node it started
answers, a second ``make run`` on the same directory touches nothing, and Ctrl-C (a
SIGINT to the terminal's process group) stops the node gracefully with no
"make: *** ... Error" line.

``make -o .venv/.installed`` treats the venv as up to date: the test is about the
``run`` recipe, not about installing (which needs the network and a minute)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HD_NODE = Path(sys.executable).with_name("hd-node")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(shutil.which("make") is None or not HD_NODE.exists(),
                                reason="needs make and the venv's hd-node")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HD_") and k != "NAME"}
    # Any free ports: the defaults (8765/8766) may be a person's own node.
    env.update(HD_UI_PORT="0", HD_PEER_PORT="0", HD_PEER_HOST="127.0.0.1",
               PYTHONUNBUFFERED="1")
    return env


def _make_run(data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "run",
         f"DATA_DIR={data_dir}", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL, env=_env(), start_new_session=True)  # its own group


class Output:
    """Collects a process's output in a thread, so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout} s:\n{self.text}"
            time.sleep(0.05)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Whatever happened: nothing of the run outlives the test."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)
    else:
        try:  # the node (same group) may outlive a make that already died
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_make_run_names_the_node_keeps_its_data_private_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path,
) -> None:
    data = tmp_path / "new" / "parents" / "node"
    proc = _make_run(data, "NAME=alice smith")
    out = Output(proc)
    try:
        out.wait_for("(Ctrl-C stops it)", START_TIMEOUT)
        info = json.loads((data / "node.json").read_text())
        assert f"{info['ui_url']}?token={info['token']}" in out.text
        ident = subprocess.run([str(HD_NODE), "id", "--data-dir", str(data)], env=_env(),
                               capture_output=True, text=True, timeout=30, check=True)
        assert json.loads(ident.stdout)["name"] == "alice smith"
        for d in (tmp_path / "new", tmp_path / "new" / "parents", data):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d

        # A second `make run` on the same directory: the node's one line, nothing touched.
        before = (data / "node.json").read_bytes()
        second = _make_run(data)
        try:
            rest, _ = second.communicate(timeout=START_TIMEOUT)
        finally:
            _stop(second)
        assert second.returncode != 0
        assert f"another node (pid {info['pid']}) is running" in rest
        assert "hd fabric node is running" not in rest
        assert (data / "node.json").read_bytes() == before

        # Ctrl-C: the terminal signals the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=STOP_TIMEOUT)
        out.join(STOP_TIMEOUT)
    finally:
        _stop(proc)
        out.join(STOP_TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()
    # The recipe ended 0, so make reports no error; GNU make itself then dies of the
    # SIGINT it got (how its caller learns of the interrupt): either code is a clean stop.
    assert proc.returncode in (0, -signal.SIGINT), out.text
    assert "Error" not in out.text and "Traceback" not in out.text, out.text
    assert "signal received signal=SIGINT: shutting down" in out.text
    assert not (data / "node.json").exists()  # the node tidied up: a graceful stop
    # The name is kept for the next `make run` without NAME.
    ident = subprocess.run([str(HD_NODE), "id", "--data-dir", str(data)], env=_env(),
                           capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(ident.stdout)["name"] == "alice smith"


def _hold(port: int) -> socket.socket | None:
    """Take 127.0.0.1:``port`` for the test (None: something else has it already)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    s.listen()
    return s


def test_two_make_runs_where_the_default_ports_are_taken_give_two_nodes_that_pair(
    tmp_path: Path,
) -> None:
    """As a newcomer tries it: a second node on the same machine (the README's three
    lines). The default ports are taken (held here): each run says so and takes free
    ones, and the two nodes pair with ``hd-node invite`` / ``hd-node pair``."""
    held = [_hold(8765), _hold(8766)]
    env = {k: v for k, v in _env().items() if k not in ("HD_UI_PORT", "HD_PEER_PORT")}
    runs: list[tuple[subprocess.Popen[str], Output]] = []
    try:
        for name in ("alice", "bob"):
            proc = subprocess.Popen(
                ["make", "--no-print-directory", "-o", ".venv/.installed", "run",
                 f"NAME={name}", f"DATA_DIR={tmp_path / name}"],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            runs.append((proc, Output(proc)))
        infos = []
        for (_, out), name in zip(runs, ("alice", "bob"), strict=True):
            out.wait_for("(Ctrl-C stops it)", START_TIMEOUT)
            assert "port 8765 is in use: this node's UI takes a free port" in out.text
            assert "port 8766 is in use: this node's peer listener takes a free port" in out.text
            info = json.loads((tmp_path / name / "node.json").read_text())
            assert ":8765/" not in info["ui_url"] and ":8766/" not in info["peer_url"]
            assert f"peers dial it at {info['peer_url']}" in out.text
            infos.append(info)

        def cli(*args: str) -> str:
            return subprocess.run([str(HD_NODE), *args], env=env, capture_output=True,
                                  text=True, timeout=30, check=True).stdout

        invite = cli("invite", "--data-dir", str(tmp_path / "alice")).strip()
        paired = json.loads(cli("pair", "--data-dir", str(tmp_path / "bob"), invite))
        assert paired["ok"] and paired["peer"]["node_id"] == infos[0]["node_id"]
        deadline = time.monotonic() + 10
        while True:
            peers = json.loads(cli("peers", "--data-dir", str(tmp_path / "alice")))
            if [(p["node_id"], p["status"]) for p in peers] == [
                    (infos[1]["node_id"], "connected")]:
                break
            assert time.monotonic() < deadline, peers
            time.sleep(0.1)
        for proc, out in runs:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=STOP_TIMEOUT)
            out.join(STOP_TIMEOUT)
            assert proc.returncode in (0, -signal.SIGINT), out.text
            assert "Error" not in out.text and "Traceback" not in out.text, out.text
    finally:
        for proc, out in runs:
            _stop(proc)
            out.join(STOP_TIMEOUT)
            assert proc.stdout is not None
            proc.stdout.close()
        for s in held:
            if s is not None:
                s.close()
