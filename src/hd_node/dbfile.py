"""``node.db`` on disk: created, checked, or refused (``hd_shell.sqlitefile``), in the
node's words: a damaged file is kept as is, and starting empty loses peers, panes and
chats. Also the one read the CLI makes without opening the store."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from hd_shell.sqlitefile import DatabaseError, read_only
from hd_shell.sqlitefile import damaged as _damaged

StoreError = DatabaseError

LOST = "peers, panes and chats are lost"
EMPTY_IS_DAMAGE = "identity.key exists"


def damaged(path: Path, why: str) -> DatabaseError:
    return _damaged(path, why, LOST)


def stored_peer_count(path: Path) -> int:
    """How many peers ``path`` holds, read-only; 0 when there is no database yet. For
    the "identity.key is missing but peers pinned it" check (the data dir locked)."""
    try:
        if os.stat(path).st_size == 0:
            return 0
    except FileNotFoundError:
        return 0
    try:
        with read_only(path) as db:
            table = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'peers'"
            ).fetchone()
            return int(db.execute("SELECT count(*) FROM peers").fetchone()[0]) if table else 0
    except sqlite3.Error as exc:
        raise damaged(path, str(exc)) from None
