"""``hd-lobby`` and ``hd-relay`` as processes: what an operator relies on.

Each binary runs for real (``python -m hd_lobby run`` / ``python -m hd_relay run``) on
127.0.0.1. Checked for both: the info file (exact fields, 0600, removed on exit), the
data directory (0700, files 0600), the identity kept across a restart, ``/healthz``,
``/metrics`` (Prometheus text), the WebSocket paths, ``--help``, the TOML config (its
host and port used, flags winning over it), SIGTERM and SIGINT → exit 0, and every bad
start as one line on stderr with exit 2 (a bad setting) or 1 (a busy port).

Running servers come from ``servers.ServerProcess`` and are stopped by whoever started
them; a start that must fail runs under ``subprocess.run`` with a timeout, which kills
the process if it starts after all.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets import exceptions as wse
from websockets.sync.client import connect as ws_connect

from hd_protocol import node_id_for

from .conftest import HTTP_TIMEOUT, _clean_env, free_port
from .servers import START_TIMEOUT, ServerProcess, Servers, servers  # noqa: F401 - fixture

KINDS = ("lobby", "relay")
PROG = {"lobby": "hd-lobby", "relay": "hd-relay"}
MODULE = {"lobby": "hd_lobby", "relay": "hd_relay"}
PATH = {"lobby": "/lobby-ws", "relay": "/relay-ws"}
INFO_KEYS = {
    "lobby": {"pid", "url", "relay_url", "server_id", "server_key"},
    "relay": {"pid", "url", "server_id", "server_key"},
}
# A start that must fail exits within a second; one that starts anyway is killed here.
EXIT_TIMEOUT = 20.0


def _kind(p: ServerProcess) -> str:
    return p.module.removeprefix("hd_")


def _server(group: Servers, kind: str, extra_args: list[str] | None = None) -> ServerProcess:
    """A ServerProcess that ``group`` stops (``Servers.relay`` takes no extra arguments)."""
    p = ServerProcess(group.root, kind, MODULE[kind], f"{kind}.json", extra_args)
    group.procs.append(p)
    return p


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _http(p: ServerProcess, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{p.port}{path}", timeout=HTTP_TIMEOUT)


def _run(kind: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``hd-lobby ARGS`` / ``hd-relay ARGS`` that is expected to exit by itself."""
    return subprocess.run([sys.executable, "-m", MODULE[kind], *args], capture_output=True,
                          text=True, timeout=EXIT_TIMEOUT, env=_clean_env(),
                          stdin=subprocess.DEVNULL, check=False)


def _one_line_error(kind: str, res: subprocess.CompletedProcess[str], code: int) -> str:
    assert res.returncode == code, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, f"stderr should be one line: {res.stderr!r}"
    assert lines[0].startswith(PROG[kind]), lines[0]
    return lines[0]


@contextlib.contextmanager
def _busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 held by a listening socket of ours."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@contextlib.contextmanager
def _started_without_port_flag(kind: str, root: Path, *args: str) -> Iterator[dict[str, Any]]:
    """The server run with ``args`` and no ``--port`` (``ServerProcess`` always passes
    one); yields its info file and stops it (SIGINT, then SIGKILL) however the test ends."""
    data_dir = root / kind
    info_path = data_dir / f"{kind}.json"
    log_path = root / f"{kind}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", MODULE[kind], "run", "--data-dir",
                                 str(data_dir), *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_clean_env())
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                assert proc.poll() is None, f"exited {proc.returncode}: {log_path.read_text()}"
                assert time.monotonic() < deadline, f"did not start: {log_path.read_text()}"
                with contextlib.suppress(OSError, ValueError):
                    info = json.loads(info_path.read_text())
                    if info.get("pid") == proc.pid:
                        break
                time.sleep(0.02)
            yield info
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


# --- one running server of each kind, only looked at --------------------------------------


@pytest.fixture(scope="module", params=KINDS)
def running(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = Servers(tmp_path_factory.mktemp(f"binary-{request.param}"))
    try:
        yield _server(s, request.param).start()  # --port 0, no --host
    finally:
        s.stop_all()


def test_info_file_is_0600_and_holds_exactly_pid_urls_and_the_server_identity(
    running: ServerProcess,
) -> None:
    kind = _kind(running)
    assert _mode(running.info_path) == 0o600
    info = json.loads(running.info_path.read_text())
    assert set(info) == INFO_KEYS[kind]
    assert info["pid"] == running.proc.pid  # type: ignore[union-attr]
    assert info["server_id"] == node_id_for(info["server_key"])
    url = urlsplit(info["url"])
    # port 0 became a real port, on the default host
    assert (url.scheme, url.hostname, url.path) == ("ws", "127.0.0.1", PATH[kind])
    assert url.port is not None and url.port > 0
    if kind == "lobby":
        assert info["relay_url"] == f"ws://127.0.0.1:{url.port}/relay-ws"


def test_data_dir_is_0700_and_every_file_in_it_0600(running: ServerProcess) -> None:
    assert _mode(running.data_dir) == 0o700
    names = sorted(f.name for f in running.data_dir.iterdir())
    assert "identity.key" in names and running.info_path.name in names, names
    loose = {n: oct(_mode(running.data_dir / n)) for n in names
             if not (running.data_dir / n).is_file() or _mode(running.data_dir / n) != 0o600}
    assert loose == {}


def test_healthz_is_json_naming_the_server(running: ServerProcess) -> None:
    r = _http(running, "/healthz")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"ok": True, "server_id": running.info["server_id"], "status": "ok"}


def test_metrics_are_prometheus_text_with_hd_metrics(running: ServerProcess) -> None:
    r = _http(running, "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert any(n.startswith("hd_relay_") for n in names), names  # the lobby bundles one
    if _kind(running) == "lobby":
        assert any(n.startswith("hd_lobby_") for n in names), names


def test_websocket_paths_are_served_and_any_other_path_is_refused(
    running: ServerProcess,
) -> None:
    urls = [running.url] + ([running.info["relay_url"]] if _kind(running) == "lobby" else [])
    for url in urls:
        with ws_connect(url, open_timeout=5, close_timeout=5) as ws:
            assert ws.response is not None and ws.response.status_code == 101
    with pytest.raises(wse.InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{running.port}/elsewhere-ws", open_timeout=5)
    assert refused.value.response.status_code == 403


def test_a_second_server_on_the_same_data_dir_is_refused_and_leaves_the_first_alone(
    running: ServerProcess,
) -> None:
    kind = _kind(running)
    res = _run(kind, "run", "--data-dir", str(running.data_dir), "--port", "0")
    assert "another server is running" in _one_line_error(kind, res, 2)
    assert running.running
    assert json.loads(running.info_path.read_text())["pid"] == running.proc.pid  # type: ignore[union-attr]


# --- lifecycle --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_and_sigint_exit_0_remove_the_info_file_and_a_restart_keeps_the_identity(
    servers: Servers, kind: str,  # noqa: F811
) -> None:
    p = _server(servers, kind)
    first = dict(p.start().info)
    assert p.stop(signal.SIGTERM) == 0
    assert not p.info_path.exists()
    second = p.start().info
    assert second["pid"] != first["pid"]
    assert (second["server_id"], second["server_key"]) == (first["server_id"],
                                                           first["server_key"])
    assert p.stop(signal.SIGINT) == 0
    assert not p.info_path.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_a_loose_data_dir_is_warned_about_and_its_loose_files_are_tightened(
    servers: Servers, kind: str,  # noqa: F811
) -> None:
    p = _server(servers, kind)
    p.start()
    assert p.stop(signal.SIGTERM) == 0
    os.chmod(p.data_dir, 0o755)  # as `mkdir -p` leaves it under umask 022
    os.chmod(p.data_dir / "identity.key", 0o644)  # e.g. restored from a backup
    p.start()
    log = p.log_text()
    assert "data directory is open to other users" in log and "chmod 700" in log, log
    assert "file was open to other users" in log and "identity.key" in log, log
    assert _mode(p.data_dir / "identity.key") == 0o600
    assert _mode(p.data_dir) == 0o755  # the directory is the owner's choice: only warned


@pytest.mark.parametrize("kind", KINDS)
def test_the_per_address_connection_cap_is_a_setting(
    servers: Servers, kind: str, tmp_path: Path,  # noqa: F811
) -> None:
    cfg = tmp_path / "caps.toml"
    cfg.write_text(f"[{kind}]\nmaxConnectionsPerAddress = 2\n")
    p = _server(servers, kind, ["--config", str(cfg)])
    p.start()
    holders = [socket.create_connection(("127.0.0.1", p.port), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)  # both accepted and counted
        with pytest.raises(httpx.HTTPError):  # a third from 127.0.0.1 is closed unread
            _http(p, "/healthz")
        other = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=other, timeout=HTTP_TIMEOUT) as c:
            assert c.get(f"http://127.0.0.1:{p.port}/healthz").status_code == 200
    finally:
        for h in holders:
            h.close()
    def healthy() -> bool:
        try:
            return _http(p, "/healthz").status_code == 200
        except httpx.HTTPError:
            return False
    deadline = time.monotonic() + 5
    while not healthy():  # the slots come back when the holders leave
        assert time.monotonic() < deadline, "127.0.0.1 still refused after its holders left"
        time.sleep(0.05)


# --- help -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_help_names_run_and_its_data_dir(kind: str) -> None:
    res = _run(kind, "--help")
    assert res.returncode == 0, res.stderr
    assert "run" in res.stdout and "--data-dir" in res.stdout, res.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_run_help_lists_the_options_of_run(kind: str) -> None:
    res = _run(kind, "run", "--help")
    assert res.returncode == 0, res.stderr
    expected = ["--data-dir", "--host", "--port", "--config"]
    if kind == "lobby":
        expected.append("--directory")
    assert [o for o in expected if o not in res.stdout] == [], res.stdout


# --- the TOML config --------------------------------------------------------------------


# "127.1" is 127.0.0.1 spelled differently, so the info file shows which setting won
# while everything still listens on 127.0.0.1 only.
@pytest.mark.parametrize("kind", KINDS)
def test_host_and_port_from_the_config_file_table_are_used(tmp_path: Path, kind: str) -> None:
    port = free_port()
    config = tmp_path / "server.toml"
    config.write_text(f'[{kind}]\nhost = "127.1"\nport = {port}\n')
    with _started_without_port_flag(kind, tmp_path, "--config", str(config)) as info:
        assert urlsplit(info["url"]).netloc == f"127.1:{port}"
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=HTTP_TIMEOUT)
        assert r.json()["server_id"] == info["server_id"]


@pytest.mark.parametrize("kind", KINDS)
def test_host_and_port_flags_win_over_the_config_file(
    servers: Servers, tmp_path: Path, kind: str,  # noqa: F811
) -> None:
    with _busy_port() as taken:  # were the file's port used, the start would fail
        config = tmp_path / "server.toml"
        config.write_text(f'[{kind}]\nhost = "127.1"\nport = {taken}\n')
        p = _server(servers, kind, ["--config", str(config), "--host", "127.0.0.1"]).start()
        url = urlsplit(p.url)
        assert url.hostname == "127.0.0.1" and url.port not in (None, 0, taken)


# --- starts that must fail ----------------------------------------------------------------


# (id, arguments after `run --data-dir DIR`, files to write first); {tmp} is the test's
# directory, {table} the binary's config table.
BAD_SETTINGS: list[tuple[str, list[str], dict[str, str]]] = [
    ("unknown-flag", ["--bogus"], {}),
    ("negative-port", ["--port", "-1"], {}),
    ("port-not-a-number", ["--port", "abc"], {}),
    ("port-too-big", ["--port", "65536"], {}),
    ("config-not-toml", ["--config", "{tmp}/bad.toml"], {"bad.toml": "port = = 1\n"}),
    ("config-missing", ["--config", "{tmp}/missing.toml"], {}),
    ("config-port-a-string", ["--config", "{tmp}/bad.toml"],
     {"bad.toml": '[{table}]\nport = "8080"\n'}),
    ("config-table-not-a-table", ["--config", "{tmp}/bad.toml"], {"bad.toml": "{table} = 1\n"}),
    ("max-connections-zero", ["--max-connections", "0"], {}),
    ("per-address-over-total", ["--max-connections", "4", "--max-per-address", "5"], {}),
    ("config-per-address-a-string", ["--config", "{tmp}/bad.toml"],
     {"bad.toml": '[{table}]\nmaxConnectionsPerAddress = "9"\n'}),
]
LOBBY_BAD_SETTINGS: list[tuple[str, list[str], dict[str, str]]] = [
    ("directory-not-json", ["--directory", "{tmp}/dir.json"], {"dir.json": "[{nope\n"}),
    ("directory-missing", ["--directory", "{tmp}/missing.json"], {}),
    ("directory-id-not-of-its-key", ["--directory", "{tmp}/dir.json"],
     {"dir.json": '[{"node_id": "aaaaaaaaaaaaaaaa", "public_key": "'
                  + "A" * 43 + '="}]'}),
    ("heartbeat-zero", ["--heartbeat", "0"], {}),
]


@pytest.mark.parametrize(
    ("kind", "args", "files"),
    [pytest.param(k, a, f, id=f"{k}-{i}") for k in KINDS for i, a, f in BAD_SETTINGS]
    + [pytest.param("lobby", a, f, id=f"lobby-{i}") for i, a, f in LOBBY_BAD_SETTINGS],
)
def test_a_bad_setting_is_one_line_on_stderr_and_exit_2(
    tmp_path: Path, kind: str, args: list[str], files: dict[str, str],
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text.replace("{table}", kind))
    data_dir = tmp_path / "data"
    res = _run(kind, "run", "--data-dir", str(data_dir),
               *(a.replace("{tmp}", str(tmp_path)) for a in args))
    _one_line_error(kind, res, 2)
    assert not (data_dir / f"{kind}.json").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_a_busy_port_is_one_line_exit_1_and_leaves_no_info_file(
    tmp_path: Path, kind: str,
) -> None:
    data_dir = tmp_path / "data"
    with _busy_port() as taken:
        res = _run(kind, "run", "--data-dir", str(data_dir), "--port", str(taken))
    line = _one_line_error(kind, res, 1)
    assert "in use" in line, line
    assert not (data_dir / f"{kind}.json").exists()


# --- its own words: files, errors and loggers ------------------------------------------

QUEUE_FILE = {"lobby": "relay-queue.db", "relay": "queue.db"}


def _data_dir_holding(tmp_path: Path, name: str, content: bytes) -> Path:
    """A private data directory holding one private file ``name``; returns the file."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    path = data_dir / name
    path.write_bytes(content)
    os.chmod(path, 0o600)
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_mailbox_is_one_line_naming_the_servers_file_and_loss_and_is_kept(
    tmp_path: Path, kind: str,
) -> None:
    # A header, then garbage.
    queue = _data_dir_holding(tmp_path, QUEUE_FILE[kind], b"SQLite format 3\x00" + b"\xff" * 4000)
    data_dir = queue.parent
    before = queue.read_bytes()
    line = _one_line_error(kind, _run(kind, "run", "--data-dir", str(data_dir)), 2)
    assert str(queue) in line and "queued for offline nodes are lost" in line, line
    assert "peers, panes and chats" not in line and "node" not in line.split("(")[0], line
    assert queue.read_bytes() == before  # kept byte for byte
    assert not (data_dir / f"{kind}.json").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_server_key_is_one_line_in_the_servers_words_and_is_kept(
    tmp_path: Path, kind: str,
) -> None:
    key = _data_dir_holding(tmp_path, "identity.key", b"\x01" * 5)
    data_dir = key.parent
    line = _one_line_error(kind, _run(kind, "run", "--data-dir", str(data_dir)), 2)
    assert str(key) in line and "a new server key" in line, line
    assert "pairing" not in line and "node id" not in line, line
    assert key.read_bytes() == b"\x01" * 5


@pytest.mark.parametrize("kind", KINDS)
def test_every_log_line_names_the_servers_own_logger(
    servers: Servers, kind: str,  # noqa: F811
) -> None:
    p = _server(servers, kind, ["--log-level", "DEBUG"])
    p.data_dir.mkdir(mode=0o755)  # warned about at start, by the data directory kit
    p.start()
    with ws_connect(p.url, open_timeout=5, close_timeout=5) as ws:  # a frame it refuses
        ws.send("{not json")
        with contextlib.suppress(wse.ConnectionClosed, TimeoutError):
            ws.recv(timeout=5)
    with contextlib.suppress(httpx.HTTPError):
        _http(p, "/nowhere")
    assert p.stop(signal.SIGTERM) == 0
    lines = [ln for ln in p.log_text().splitlines() if ln[:2] == "20"]  # our format
    names = {ln.split()[3] for ln in lines}
    own = MODULE[kind]
    assert own in names or any(n.startswith(own + ".") for n in names), names
    text = p.log_text()
    assert "listening" in text and "shutting down" in text and "open to other" in text, text
    assert f"{own}.http" in names, names  # the HTTP kit's lines, in our name
    foreign = {n for n in names if n != own and not n.startswith(own + ".")}
    assert not foreign, f"lines under other loggers: {foreign}"
