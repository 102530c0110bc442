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

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hd_protocol import Identity
from hd_shell import datadir
from hd_shell.datadir import (
    KEY_FILE,
    LOCK_FILE,
    DataDirBusy,
    DataError,
    ensure_data_dir,
    write_private,
)

log = logging.getLogger("hd_node.files")

__all__ = ["KEY_FILE", "LOCK_FILE", "DataDirBusy", "DataError", "ensure_data_dir", "write_private"]

TOKEN_FILE = "local.token"  # noqa: S105 - a file name, not a secret
NODE_JSON = "node.json"
DB_FILE = "node.db"
# Every file the node creates in the data directory (SQLite adds the last two).
OWNED_FILES = (KEY_FILE, TOKEN_FILE, NODE_JSON, LOCK_FILE, DB_FILE, f"{DB_FILE}-wal",
               f"{DB_FILE}-shm", f"{DB_FILE}-journal")

NEW_IDENTITY_COST = "a new node id: every pairing is lost and peers must pair again"


def check_modes(data_dir: Path, names: Iterable[str] = OWNED_FILES) -> None:
    """Warn about a data directory that others can enter, and tighten (with a warning)
    any file of ours that others can read: node.db holds chats and pairings, the key
    and the token are secrets."""
    datadir.check_modes(data_dir, names, log)


def tidy_data_dir(data_dir: Path) -> None:
    """Remove temporary files a crash left behind (one may hold a copy of the key)."""
    datadir.tidy(data_dir, (KEY_FILE, TOKEN_FILE, NODE_JSON, DB_FILE), log)


# --- identity ---------------------------------------------------------------------------


def load_identity(data_dir: Path) -> Identity | None:
    """The stored identity, or None if there is none (a damaged key is never replaced)."""
    return datadir.load_identity(data_dir, NEW_IDENTITY_COST)


def create_identity(data_dir: Path) -> Identity:
    ident = datadir.create_identity(data_dir)
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


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on DIR/lock for the process's life (one node per directory)."""
    return datadir.lock_data_dir(data_dir, "node")


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
