"""The ``hd-node`` command line: ``id`` offline, one-line errors, private files
(SPEC 2 key storage, 9 token, 10 settings)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from hd_protocol import node_id_for

from .conftest import CliResult, Cluster, NodeProcess, arun_cli, free_port


@pytest.fixture(scope="module")
def alice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One running node for the tests that only look at it or collide with it."""
    n = NodeProcess(tmp_path_factory.mktemp("cli"), "alice")
    n.start()
    try:
        yield n
    finally:
        n.stop()


def _one_line_error(res: CliResult, code: int = 1) -> str:
    assert res.returncode == code, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr should be one line: {res.stderr!r}"
    assert lines[0].startswith("hd-node: "), lines[0]
    assert "Traceback" not in res.stderr
    return lines[0]


async def test_id_works_offline_and_prints_node_id_public_key_and_name(
    tmp_path: Path, cluster: Cluster
) -> None:
    d = tmp_path / "fresh"
    first = (await arun_cli("id", "--data-dir", str(d))).check().json()
    assert set(first) == {"node_id", "public_key", "name"}
    assert first["node_id"] == node_id_for(first["public_key"])
    assert first["name"] == f"node-{first['node_id'][:6]}"
    assert not (d / "node.json").exists()  # nothing was started
    again = (await arun_cli("id", "--data-dir", str(d))).check().json()
    assert again == first  # the identity was stored, not regenerated
    # A node later run on that directory is that identity.
    node = cluster.new("fresh")
    await node.astart()
    assert node.node_id == first["node_id"]
    while_running = (await node.cli("id")).check().json()
    assert while_running["node_id"] == first["node_id"]


async def test_commands_without_a_running_node_fail_with_one_line(tmp_path: Path) -> None:
    d = str(tmp_path / "idle")
    for args in (("invite",), ("pair", "hd1:abc"), ("peers",), ("ui",)):
        res = await arun_cli(args[0], "--data-dir", d, *args[1:])
        assert "no running node" in _one_line_error(res), args


async def test_commands_against_a_dead_node_fail_with_one_line(cluster: Cluster) -> None:
    (node,) = await cluster.spawn("alice")
    node.kill()  # SIGKILL: node.json stays behind, naming a dead process
    assert (node.data_dir / "node.json").exists()
    for args in (("invite",), ("peers",)):
        res = await node.cli(*args)
        assert "cannot reach the node" in _one_line_error(res), args


async def test_missing_data_dir_is_a_usage_error(tmp_path: Path) -> None:
    res = await arun_cli("peers")
    assert "data directory" in _one_line_error(res, code=2)


async def test_unreadable_config_fails_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[network\nnodeName = ")
    res = await arun_cli("run", "--data-dir", str(tmp_path / "n"), "--config", str(bad),
                         "--ui-port", "0", "--peer-port", "0", "--peer-host", "127.0.0.1")
    assert "config" in _one_line_error(res, code=2)


async def test_run_fails_with_one_line_when_its_port_is_taken(
    alice: NodeProcess, tmp_path: Path
) -> None:
    res = await arun_cli("run", "--data-dir", str(tmp_path / "other"), "--ui-port",
                         str(alice.ui_port), "--peer-port", str(free_port()),
                         "--peer-host", "127.0.0.1", timeout=20)
    assert "cannot start" in _one_line_error(res)


async def test_second_node_on_the_same_data_dir_is_refused(
    alice: NodeProcess, tmp_path: Path
) -> None:
    res = await arun_cli("run", "--data-dir", str(alice.data_dir), "--ui-port", "0",
                         "--peer-port", "0", "--peer-host", "127.0.0.1", timeout=20)
    assert "data directory" in _one_line_error(res)
    # The running node is untouched.
    assert json.loads((alice.data_dir / "node.json").read_text())["pid"] == alice.proc.pid  # type: ignore[union-attr]
    assert (await alice.http("GET", "/healthz", token=False)).status_code == 200


async def test_secrets_and_node_json_are_private_files(
    alice: NodeProcess, tmp_path: Path
) -> None:
    d = alice.data_dir
    for name in ("node.json", "identity.key", "local.token"):
        mode = stat.S_IMODE(os.stat(d / name).st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE(os.stat(d).st_mode) & 0o077 == 0
    info = json.loads((d / "node.json").read_text())
    assert set(info) >= {"pid", "node_id", "ui_url", "ws_url", "peer_url", "token"}
    assert info["token"] == (d / "local.token").read_text().strip()
    # No secret shows up in the log.
    await trio.sleep(0)
    assert info["token"] not in alice.log_text()


async def test_ui_prints_the_page_url_with_the_token(
    alice: NodeProcess, tmp_path: Path
) -> None:
    url = (await alice.cli("ui")).check().stdout.strip()
    assert url == f"{alice.ui_url}/?token={alice.token}"
    r = await alice.http("GET", "/", token=False)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
