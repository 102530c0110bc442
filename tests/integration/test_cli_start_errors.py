"""``hd-node run`` refusing to start says why in one line and leaves what it found as it
was (SPEC 10): a data directory another node runs on (node.json untouched, the CLI
still finds that node), a port in use (which one, and ``--ui-port 0`` /
``--peer-port 0``), a data directory that is a file (exit 2, for every command)."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import CliResult, NodeProcess, arun_cli


@pytest.fixture(scope="module")
def alice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    n = NodeProcess(tmp_path_factory.mktemp("start-errors"), "alice")
    n.start()
    try:
        yield n
    finally:
        n.stop()


def one_line(res: CliResult, code: int) -> str:
    assert res.returncode == code, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr should be one line: {res.stderr!r}"
    assert lines[0].startswith("hd-node: ") and "Traceback" not in res.stderr
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_args(data_dir: Path, ui_port: int = 0, peer_port: int = 0) -> list[str]:
    return ["run", "--data-dir", str(data_dir), "--ui-port", str(ui_port),
            "--peer-port", str(peer_port), "--peer-host", "127.0.0.1"]


async def test_a_second_run_on_a_data_dir_in_use_touches_nothing_and_names_the_node(
    alice: NodeProcess,
) -> None:
    node_json = alice.data_dir / "node.json"
    before = digest(node_json), node_json.stat().st_mtime_ns
    line = one_line(await arun_cli(*run_args(alice.data_dir), timeout=20), 1)
    assert f"pid {alice.proc.pid}" in line  # type: ignore[union-attr]
    assert str(alice.data_dir) in line and "hd-node ui" in line
    assert (digest(node_json), node_json.stat().st_mtime_ns) == before
    # The CLI still finds the running node through it.
    url = (await alice.cli("ui")).check().stdout.strip()
    assert url == f"{alice.ui_url}/?token={alice.token}"
    assert (await alice.cli("peers")).check().json() == []


async def test_a_busy_ui_port_is_named_with_the_way_out(
    alice: NodeProcess, tmp_path: Path
) -> None:
    d = tmp_path / "other"
    line = one_line(await arun_cli(*run_args(d, ui_port=alice.ui_port), timeout=20), 1)
    assert f"port {alice.ui_port}" in line and "--ui-port 0" in line and "in use" in line
    assert not (d / "node.json").exists()


async def test_a_busy_peer_port_is_named_with_the_way_out(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(await arun_cli(*run_args(tmp_path / "n", peer_port=port), timeout=20),
                        1)
    assert f"port {port}" in line and "--peer-port 0" in line and "in use" in line
    assert not (tmp_path / "n" / "node.json").exists()


@pytest.mark.parametrize("command", [["run", "--ui-port", "0", "--peer-port", "0"], ["id"],
                                     ["ui"], ["peers"], ["invite"]])
async def test_a_data_dir_that_is_a_file_is_one_line_and_exit_2(
    tmp_path: Path, command: list[str]
) -> None:
    f = tmp_path / "not-a-dir"
    f.write_text("mine\n")
    res = await arun_cli(command[0], "--data-dir", str(f), *command[1:], timeout=20)
    assert "not a directory" in one_line(res, 2)
    assert f.read_text() == "mine\n"


async def test_a_name_given_at_start_is_kept_for_the_starts_without_one(
    tmp_path: Path,
) -> None:
    node = NodeProcess(tmp_path, "carol")
    node.start()
    try:
        assert (await node.cli("id")).check().json()["name"] == "carol"
    finally:
        assert node.stop() == 0
    assert (await node.cli("id")).check().json()["name"] == "carol"  # offline
    assert json.loads((await node.cli("id")).stdout)["node_id"] == node.node_id
