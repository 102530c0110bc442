"""Files in the data directory: identity key, local access token, node.json.

Secrets are created atomically with mode 0600: the content is written to a temporary
file opened with 0600 from the start, then renamed into place (never chmod-ed after).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import Any

from hd_protocol import Identity

KEY_FILE = "identity.key"
TOKEN_FILE = "local.token"  # noqa: S105 - a file name, not a secret
NODE_JSON = "node.json"


def write_private(path: Path, data: bytes) -> None:
    """Atomically create/replace ``path`` with ``data``, mode 0600 from birth."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
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


def ensure_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def load_or_create_identity(data_dir: Path) -> Identity:
    path = data_dir / KEY_FILE
    if path.exists():
        return Identity.from_private_bytes(path.read_bytes())
    ensure_data_dir(data_dir)
    ident = Identity.generate()
    write_private(path, ident.private_bytes())
    return ident


def load_identity(data_dir: Path) -> Identity | None:
    path = data_dir / KEY_FILE
    if not path.exists():
        return None
    return Identity.from_private_bytes(path.read_bytes())


def load_or_create_token(data_dir: Path) -> str:
    """The local access token for /ws and /api (generated once, 256 bits)."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        tok = path.read_text().strip()
        if tok:
            return tok
    ensure_data_dir(data_dir)
    tok = secrets.token_urlsafe(32)
    write_private(path, tok.encode() + b"\n")
    return tok


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


class DataDirBusy(Exception):
    """Another node process owns this data directory."""


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on DIR/lock for the process's life (one node per directory)."""
    ensure_data_dir(data_dir)
    fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(f"another node is running with data directory {data_dir}") from None
    return fd
