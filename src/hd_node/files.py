"""Files in the data directory: identity key, local access token, node.json, the lock.

The directory is created 0700 and every file in it 0600, whatever the umask. Secrets are
created atomically with mode 0600: the content is written to a temporary file opened
with 0600 from the start, then renamed into place (never chmod-ed after writing). Only
a file that already exists with a looser mode (an older version, a copy, a restore) is
tightened, with a warning, at start.

A file that cannot be used as it is raises :class:`DataError` with one line saying which
file and what to do; nothing here ever replaces or deletes a key or a database that is
already there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hd_protocol import Identity

log = logging.getLogger("hd_node.files")

KEY_FILE = "identity.key"
TOKEN_FILE = "local.token"  # noqa: S105 - a file name, not a secret
NODE_JSON = "node.json"
LOCK_FILE = "lock"
DB_FILE = "node.db"
# Every file the node creates in the data directory (SQLite adds the last two).
OWNED_FILES = (KEY_FILE, TOKEN_FILE, NODE_JSON, LOCK_FILE, DB_FILE, f"{DB_FILE}-wal",
               f"{DB_FILE}-shm", f"{DB_FILE}-journal")

NEW_IDENTITY_COST = "a new node id: every pairing is lost and peers must pair again"


class DataError(Exception):
    """A file in the data directory cannot be used as it is; the message names the file
    and what to do. The node refuses to start rather than guess (exit code 2)."""


def fsync_dir(path: Path) -> None:
    """Make a rename or a new name in ``path`` survive an OS crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """A unique hidden name next to ``path`` (``tidy_data_dir`` knows the pattern)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_private(path: Path, data: bytes) -> None:
    """Atomically create/replace ``path`` with ``data``, mode 0600 from birth."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def ensure_data_dir(data_dir: Path) -> None:
    """Create the directory (and any missing parent) 0700: under umask 000 a plain
    ``mkdir -p`` would leave world-writable parents, where anyone could swap the
    directory for their own. An existing directory is left as it is (see check_modes)."""
    missing: list[Path] = []
    d = data_dir.absolute()
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise DataError(f"cannot create the data directory {d}: {exc.strerror}") from None
    if not data_dir.is_dir():
        raise DataError(f"the data directory {data_dir} is not a directory")


def check_modes(data_dir: Path, names: Iterable[str] = OWNED_FILES) -> None:
    """Warn about a data directory that others can enter, and tighten (with a warning)
    any file of ours that others can read: node.db holds chats and pairings, the key
    and the token are secrets. The directory itself is the owner's choice, so it only
    gets the fix in the warning."""
    mode = stat.S_IMODE(os.stat(data_dir).st_mode)
    if mode & 0o077:
        log.warning("data directory is open to other users path=%s mode=%03o fix='chmod 700 %s'",
                    data_dir, mode, data_dir)
    for name in names:
        path = data_dir / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode) or not mode & 0o077:
            continue
        os.chmod(path, 0o600)
        log.warning("file was open to other users path=%s mode=%03o: tightened to 600",
                    path, mode)


def tidy_data_dir(data_dir: Path) -> None:
    """Remove temporary files a crash left behind (one may hold a copy of the key).
    Called with the directory lock held, so no live writer owns them."""
    for name in (KEY_FILE, TOKEN_FILE, NODE_JSON, DB_FILE):
        for tmp in data_dir.glob(f".{name}.*.tmp*"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                log.info("removed a temporary file left by a crash path=%s", tmp)


# --- identity ---------------------------------------------------------------------------


def load_identity(data_dir: Path) -> Identity | None:
    """The stored identity, or None if there is none. A key file that exists but cannot
    be read or parsed is never replaced: that would silently change the node id."""
    path = data_dir / KEY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"cannot read the identity key {path} ({exc.strerror}); fix it or "
                        f"restore it from a backup, or move it aside to start a new "
                        f"identity ({NEW_IDENTITY_COST})") from None
    try:
        return Identity.from_private_bytes(raw)
    except ValueError as exc:
        raise DataError(f"the identity key {path} is corrupt ({exc}); restore it from a "
                        f"backup, or move it aside to start a new identity "
                        f"({NEW_IDENTITY_COST})") from None


def create_identity(data_dir: Path) -> Identity:
    ensure_data_dir(data_dir)
    ident = Identity.generate()
    write_private(data_dir / KEY_FILE, ident.private_bytes())
    log.debug("new identity created node_id=%s", ident.node_id)
    return ident


def load_or_create_token(data_dir: Path) -> str:
    """The local access token for /ws and /api (generated once, 256 bits). An empty
    token file is replaced: the token is no identity, a new one costs nothing."""
    path = data_dir / TOKEN_FILE
    try:
        tok = path.read_text().strip()
    except FileNotFoundError:
        tok = ""
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not text"
        raise DataError(f"cannot read the access token {path} ({why}); move it aside "
                        f"and a new token is made at start") from None
    if tok:
        return tok
    ensure_data_dir(data_dir)
    tok = secrets.token_urlsafe(32)
    write_private(path, tok.encode() + b"\n")
    return tok


# --- node.json ---------------------------------------------------------------------------


def write_node_json(data_dir: Path, info: dict[str, Any]) -> None:
    write_private(data_dir / NODE_JSON, json.dumps(info, indent=2).encode() + b"\n")


def read_node_json(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / NODE_JSON
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def remove_node_json(data_dir: Path) -> None:
    (data_dir / NODE_JSON).unlink(missing_ok=True)


# --- the lock ----------------------------------------------------------------------------


class DataDirBusy(Exception):
    """Another node process owns this data directory."""


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on DIR/lock for the process's life (one node per directory)."""
    ensure_data_dir(data_dir)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(f"another node is running with data directory {data_dir}") from None
    return fd


def start_new_identity(data_dir: Path, *, stored_peers: int, allowed: bool) -> Identity:
    """Create the identity for a directory that has none. If its database holds peers,
    they pinned the old key: a new one changes the node id and they will refuse it, so
    that takes an explicit ``hd-node run --new-identity`` (``allowed``)."""
    key = data_dir / KEY_FILE
    if stored_peers and not allowed:
        raise DataError(f"the identity key {key} is missing but {data_dir / DB_FILE} holds "
                        f"{stored_peers} peer(s) that know this node by it; restore it from a "
                        f"backup, or start a new identity with `hd-node run --new-identity` "
                        f"({NEW_IDENTITY_COST})")
    ident = create_identity(data_dir)
    if stored_peers:
        log.warning("new identity while stored peers pinned the old one node_id=%s peers=%d:"
                    " they must pair again", ident.node_id, stored_peers)
    return ident


def healthz_proof(token: str, node_id: str, nonce: str, challenge: str) -> str:
    """The node's answer to a /healthz ``challenge``: HMAC-SHA256 keyed with the local
    token over the node id, the per-start nonce and the caller's random challenge. The
    CLI computes it too, so it can tell the node that wrote node.json from an impostor
    on the same port without the token ever leaving the CLI."""
    msg = f"hd-node healthz v1\n{node_id}\n{nonce}\n{challenge}".encode()
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()
