"""The data directory against a hostile or damaged environment: modes under any umask,
a stale node.json with an impostor on its port, a damaged key or database, a missing
key that stored peers pinned (SPEC 2 key storage, 9 token). Real ``hd-node`` processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from hd_node.files import healthz_proof

from .conftest import CliResult, Cluster, NodeProcess, arun_cli, free_port

PRIVATE_FILES = ("identity.key", "local.token", "node.json", "lock", "node.db",
                 "node.db-wal", "node.db-shm")


class UmaskNode(NodeProcess):
    """A node started under a chosen umask (``sh`` sets it, then ``exec``s the node, so
    the pid the harness waits for in node.json is still the node's)."""

    def __init__(self, root: Path, name: str, *, umask: int, **kw: Any) -> None:
        super().__init__(root, name, **kw)
        self.umask = umask

    def command(self) -> list[str]:
        return ["/bin/sh", "-c", f'umask {self.umask:03o} && exec "$@"', "sh",
                *super().command()]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def one_line_error(res: CliResult, code: int) -> str:
    assert res.returncode == code, res
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr should be one line: {res.stderr!r}"
    assert lines[0].startswith("hd-node: "), lines[0]
    return lines[0]


async def run_refused(data_dir: Path, *extra: str) -> str:
    """``hd-node run`` on ``data_dir`` must refuse to start: exit 2, one line."""
    res = await arun_cli("run", "--data-dir", str(data_dir), "--ui-port", "0",
                         "--peer-port", "0", "--peer-host", "127.0.0.1", *extra, timeout=20)
    return one_line_error(res, 2)


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


# --- modes ----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000])
async def test_data_dir_is_0700_and_every_file_0600_under_any_umask(
    cluster: Cluster, tmp_path: Path, umask: int
) -> None:
    node = UmaskNode(tmp_path, "alice", umask=umask)
    cluster.nodes.append(node)
    await node.astart()
    d = node.data_dir
    assert mode(d) == 0o700
    # While the node runs SQLite keeps node.db-wal and node.db-shm next to node.db.
    assert {p.name for p in d.iterdir()} >= set(PRIVATE_FILES)
    assert {name: oct(mode(d / name)) for name in PRIVATE_FILES} == {
        name: "0o600" for name in PRIVATE_FILES}
    # Nothing else lies around (no temporary file left from creating node.db).
    assert sorted(p.name for p in d.iterdir()) == sorted(PRIVATE_FILES)
    assert "open to other users" not in node.log_text()
    rc = await node.astop()
    assert rc == 0, node.log_text()[-4000:]
    assert not (d / "node.json").exists()
    assert {oct(mode(p)) for p in d.iterdir()} == {"0o600"}

    # The CLI creates the directory (and missing parents) 0700 too.
    nested = tmp_path / "a" / "b" / "c"

    def cli_id() -> None:
        import subprocess
        import sys
        subprocess.run([sys.executable, "-m", "hd_node", "id", "--data-dir", str(nested)],
                       check=True, capture_output=True, umask=umask, timeout=30,
                       env={k: v for k, v in os.environ.items() if not k.startswith("HD_")})

    await trio.to_thread.run_sync(cli_id)
    for p in (tmp_path / "a", tmp_path / "a" / "b", nested):
        assert mode(p) == 0o700, p
    assert mode(nested / "identity.key") == 0o600


async def test_a_loose_existing_dir_gets_a_warning_and_loose_files_are_tightened(
    cluster: Cluster, tmp_path: Path
) -> None:
    node = cluster.new("alice")
    node.data_dir.mkdir()
    os.chmod(node.data_dir, 0o755)  # as `mkdir -p` makes it under umask 022
    await node.astart()
    warnings = [line for line in node.log_text().splitlines() if "WARNING" in line]
    assert len(warnings) == 1, warnings
    assert f"path={node.data_dir}" in warnings[0]
    assert f"chmod 700 {node.data_dir}" in warnings[0]
    # The directory is the owner's choice (only the fix is suggested); files are ours.
    assert mode(node.data_dir) == 0o755
    for name in PRIVATE_FILES:
        assert mode(node.data_dir / name) == 0o600, name
    await node.astop()

    # Files left world-readable (a copy, a restore, an older version) are tightened.
    for name in ("identity.key", "local.token", "node.db"):
        os.chmod(node.data_dir / name, 0o644)
    os.chmod(node.data_dir, 0o700)
    await node.astart()
    log = node.log_text().split("node listening")[-2]  # the second start's lines
    for name in ("identity.key", "local.token", "node.db"):
        assert re.search(rf"WARNING .*path={re.escape(str(node.data_dir / name))} "
                         rf"mode=644: tightened to 600", log), (name, log)
        assert mode(node.data_dir / name) == 0o600
    assert "chmod 700" not in log
    for name in PRIVATE_FILES:
        assert mode(node.data_dir / name) == 0o600, name


# --- /healthz and the stale node.json --------------------------------------------------


async def test_healthz_answers_a_nonce_that_is_new_at_every_start(cluster: Cluster) -> None:
    (node,) = await cluster.spawn("alice")
    health = (await node.http("GET", "/healthz", token=False)).json()
    assert set(health) == {"ok", "node_id", "nonce", "sessions"}
    assert health["ok"] is True and health["node_id"] == node.node_id
    assert health["nonce"] == node.info["nonce"] and len(health["nonce"]) >= 32
    # Asked with a challenge it proves it holds the token, without showing it.
    challenge = secrets.token_hex(32)
    r = await node.http("GET", f"/healthz?challenge={challenge}", token=False)
    proof = r.json()["proof"]
    assert proof == healthz_proof(node.token, node.node_id, health["nonce"], challenge)
    assert node.token not in r.text
    await node.astop()
    await node.astart()
    again = (await node.http("GET", "/healthz", token=False)).json()
    assert again["node_id"] == health["node_id"]
    assert again["nonce"] != health["nonce"] and again["nonce"] == node.info["nonce"]


class Impostor:
    """Whatever listens on the port of a stale node.json: records every byte sent to
    it. ``answer`` is the /healthz body it gives (None: it accepts and never answers)."""

    def __init__(self, port: int, answer: bytes | None) -> None:
        self.answer = answer
        self.received: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.done = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        data = b""
        with contextlib.suppress(OSError):
            while not self.done.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    if b"\r\n\r\n" in data:
                        break  # whatever body there was has had its chance
                    continue
                if not chunk:
                    break
                data += chunk
            self.received.append(data)
            if self.answer is None:
                self.done.wait(10)
                return
            head = (f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(self.answer)}\r\nconnection: close\r\n\r\n")
            conn.sendall(head.encode() + self.answer)
        conn.close()

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


@contextlib.contextmanager
def impostor(port: int, answer: bytes | None) -> Iterator[Impostor]:
    imp = Impostor(port, answer)
    try:
        yield imp
    finally:
        imp.close()


@pytest.fixture
async def stale(cluster: Cluster) -> tuple[NodeProcess, dict[str, Any], dict[str, Any]]:
    """A node SIGKILLed on a known port: its node.json stays behind. Also returns what
    its /healthz said to a challenge while alive (what a patient impostor would replay)."""
    node = cluster.new("alice", ui_port=free_port())
    await node.astart()
    challenge = secrets.token_hex(32)
    seen = (await node.http("GET", f"/healthz?challenge={challenge}", token=False)).json()
    node.kill()
    info = json.loads((node.data_dir / "node.json").read_text())
    assert info["pid"] == node.info["pid"] and info["nonce"] == seen["nonce"]
    return node, info, seen


COMMANDS = (("peers",), ("invite",), ("pair", "hd1:abc"), ("ui",))


@pytest.mark.parametrize("kind", ["replays_the_real_answer", "another_node", "not_a_node"])
async def test_stale_node_json_with_an_impostor_on_its_port_never_gets_the_token(
    stale: tuple[NodeProcess, dict[str, Any], dict[str, Any]], kind: str
) -> None:
    node, info, seen = stale
    answer = {
        # Asked /healthz before the node died: right node id, right nonce, an old proof.
        "replays_the_real_answer": json.dumps(seen),
        "another_node": json.dumps({"ok": True, "node_id": "zzzzzzzzzzzzzzzz",
                                    "nonce": secrets.token_hex(16), "sessions": 0}),
        "not_a_node": "<html>hello</html>",
    }[kind].encode()
    with impostor(node.ui_port, answer) as imp:
        for args in COMMANDS:
            res = await node.cli(*args)
            line = one_line_error(res, 1)
            assert line == (f"hd-node: no running node for {node.data_dir} (node.json is stale:"
                            f" another process answers on port {node.ui_port})"), (args, line)
            assert info["token"] not in res.stdout
    assert len(imp.received) == len(COMMANDS)
    for raw in imp.received:
        assert raw.startswith(b"GET /healthz?challenge="), raw
        assert info["token"].encode() not in raw
        assert b"authorization" not in raw.lower()


async def test_stale_node_json_with_a_silent_port_fails_quickly_without_the_token(
    stale: tuple[NodeProcess, dict[str, Any], dict[str, Any]],
) -> None:
    node, info, _ = stale
    with impostor(node.ui_port, None) as imp:
        t0 = time.monotonic()
        res = await node.cli("peers")
        took = time.monotonic() - t0
    line = one_line_error(res, 1)
    assert f"no running node for {node.data_dir} (node.json is stale: cannot reach" in line
    assert took < 10, took
    assert len(imp.received) == 1 and info["token"].encode() not in imp.received[0]


# --- damaged key ------------------------------------------------------------------------


@pytest.fixture
async def stopped(cluster: Cluster) -> NodeProcess:
    """A node that ran once (identity, token, a database with an invite) and stopped."""
    (node,) = await cluster.spawn("alice")
    assert (await node.http("POST", "/api/invites", json={})).status_code == 200
    assert await node.astop() == 0
    return node


def overwrite(path: Path, data: bytes) -> None:
    """Change the bytes of ``path`` in place (its mode stays, so no warning is due)."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


@pytest.mark.parametrize("damage", ["garbage", "bad_base64", "short_seed", "directory"])
async def test_a_damaged_identity_key_stops_the_start_with_one_line(
    stopped: NodeProcess, damage: str
) -> None:
    d = stopped.data_dir
    key = d / "identity.key"
    if damage == "directory":
        key.unlink()
        key.mkdir()
    else:
        overwrite(key, {"garbage": os.urandom(62),
                        "bad_base64": b"hd1-ed25519-seed:!!!!\n",
                        "short_seed": b"hd1-ed25519-seed:AAAA\n"}[damage])
    before = snapshot(d)
    line = await run_refused(d)
    assert str(key) in line and "move it aside to start a new identity" in line, line
    assert "node id" in line
    assert snapshot(d) == before  # nothing replaced, nothing created
    res = await arun_cli("id", "--data-dir", str(d))
    assert str(key) in one_line_error(res, 2)
    assert snapshot(d) == before


# --- damaged database -------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
async def test_a_damaged_database_is_refused_and_kept_byte_for_byte(
    stopped: NodeProcess, damage: str
) -> None:
    d = stopped.data_dir
    db = d / "node.db"
    data = db.read_bytes()
    assert len(data) > 8192 and not (d / "node.db-wal").exists()
    overwrite(db, {"truncated": data[: len(data) // 2],
                   "garbage": os.urandom(len(data)),
                   "empty": b""}[damage])
    before = snapshot(d)
    line = await run_refused(d)
    assert str(db) in line and "kept as is" in line, line
    assert "restore it from a backup" in line and "aside to start with an empty" in line
    if damage == "empty":
        assert "0 bytes" in line
    assert snapshot(d) == before  # same bytes, and no -wal/-shm left next to it
    assert sorted(before) == sorted(p.name for p in d.iterdir())

    # The documented way out: move it aside, start empty, same identity.
    db.rename(d / "node.db.broken")
    await stopped.astart()
    assert stopped.node_id == json.loads((d / "node.json").read_text())["node_id"]
    assert (d / "node.db.broken").read_bytes() == before["node.db"]
    assert (await stopped.http("GET", "/api/invites")).json() == []


async def test_after_kill_9_the_node_restarts_with_what_it_had_committed(
    cluster: Cluster,
) -> None:
    """The WAL a SIGKILL leaves behind passes the read-only check and is replayed."""
    (node,) = await cluster.spawn("alice")
    r = await node.http("POST", "/api/invites", json={})
    assert r.status_code == 200
    node.kill()
    assert (node.data_dir / "node.db-wal").stat().st_size > 0
    await node.astart()
    assert len((await node.http("GET", "/api/invites")).json()) == 1
    assert "WARNING" not in node.log_text()


# --- missing key with stored peers -----------------------------------------------------


async def test_a_missing_identity_key_is_not_replaced_while_peers_pinned_it(
    cluster: Cluster,
) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    await cluster.pair(alice, bob)
    old_id = alice.node_id
    await cluster.stop(alice, bob)
    d = alice.data_dir
    (d / "identity.key").unlink()
    before = snapshot(d)

    line = await run_refused(d)
    assert f"identity key {d / 'identity.key'} is missing" in line, line
    assert "1 peer(s)" in line and "hd-node run --new-identity" in line
    assert snapshot(d) == before  # no key was made
    assert str(d / "identity.key") in one_line_error(await arun_cli("id", "--data-dir", str(d)), 2)
    assert snapshot(d) == before

    alice.extra_args = ["--new-identity"]
    await alice.astart()
    assert alice.node_id != old_id
    assert mode(d / "identity.key") == 0o600
    assert re.search(rf"WARNING .*new identity while stored peers pinned the old one "
                     rf"node_id={alice.node_id} peers=1", alice.log_text())
    assert [p["node_id"] for p in await alice.peers()] == [bob.node_id]  # kept, to re-pair
    await alice.astop()

    # --new-identity never replaces a key that is there.
    line = await run_refused(d, "--new-identity")
    assert "--new-identity" in line and str(d / "identity.key") in line
    alice.extra_args = []
    await alice.astart()
    assert alice.node_id == json.loads((d / "node.json").read_text())["node_id"]


async def test_without_stored_peers_a_missing_key_is_simply_created(
    stopped: NodeProcess,
) -> None:
    old_id = stopped.node_id
    (stopped.data_dir / "identity.key").unlink()
    await stopped.astart()
    assert stopped.node_id != old_id


# --- resources ---------------------------------------------------------------------------


async def test_run_raises_the_open_file_limit_to_the_hard_limit(cluster: Cluster) -> None:
    (node,) = await cluster.spawn("alice")
    assert node.proc is not None
    limits = Path(f"/proc/{node.proc.pid}/limits").read_text()
    soft, hard = re.search(r"Max open files\s+(\S+)\s+(\S+)", limits).groups()  # type: ignore[union-attr]
    assert soft == hard, limits
    assert f"open file limit nofile={soft} hard={hard}" in node.log_text()
