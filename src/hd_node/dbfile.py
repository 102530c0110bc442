"""``node.db`` on disk: created, checked, or refused, before ``store.NodeStore`` opens it.

The file holds pairings and chats. A new database is built under a temporary name
(created 0600 and checked, so SQLite gives its -wal/-shm files 0600 too) and linked
into place only once it holds the schema: a crash never leaves an empty ``node.db``,
so an empty one next to an identity key is a truncation. An existing one must pass
``PRAGMA integrity_check`` on a read-only connection before anything writes to it. A
damaged file is refused (:class:`StoreError`, one line saying what to do) and kept
byte for byte: never repaired, replaced or deleted.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .files import DataError, fsync_dir, temp_path


class StoreError(DataError):
    """``node.db`` is damaged, truncated or not a database: it is kept as it is."""


_START_EMPTY = "peers, panes and chats are lost"


def damaged(path: Path, why: str) -> StoreError:
    why = " ".join(why.split())[:160]  # integrity_check rows can span lines
    return StoreError(f"the database {path} is damaged ({why}); it is kept as is: restore it "
                      f"from a backup, or move {path.name} and any {path.name}-wal/-shm aside "
                      f"to start with an empty database ({_START_EMPTY})")


def _sidecars(path: Path) -> tuple[Path, Path]:
    return path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection that cannot write ``path`` (no checkpoint, no recovery written
    back), so a look at a damaged file leaves it byte for byte. It still reads a WAL
    left by a crash. The empty -wal/-shm such a look creates are removed again; call
    it with the data directory locked (no other connection may be using them)."""
    created = [p for p in _sidecars(path) if not p.exists()]
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True,
                         isolation_level=None, check_same_thread=False)
    try:
        yield db
    finally:
        db.close()
        wal, _ = _sidecars(path)
        if wal not in created or not wal.exists() or wal.stat().st_size == 0:
            for p in created:
                p.unlink(missing_ok=True)


def check_database(path: Path) -> None:
    """``PRAGMA integrity_check`` on a read-only connection; :class:`StoreError` if the
    file is not a database or is damaged (a truncated file is one or the other)."""
    try:
        with _read_only(path) as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as exc:
        raise damaged(path, str(exc)) from None
    if rows != [("ok",)]:
        more = f" and {len(rows) - 1} more" if len(rows) > 1 else ""
        raise damaged(path, f"integrity_check: {rows[0][0]}{more}")


def stored_peer_count(path: Path) -> int:
    """How many peers ``path`` holds, read-only; 0 when there is no database yet. For
    the "identity.key is missing but peers pinned it" check (the data dir locked)."""
    try:
        if os.stat(path).st_size == 0:
            return 0
    except FileNotFoundError:
        return 0
    try:
        with _read_only(path) as db:
            table = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'peers'"
            ).fetchone()
            return int(db.execute("SELECT count(*) FROM peers").fetchone()[0]) if table else 0
    except sqlite3.Error as exc:
        raise damaged(path, str(exc)) from None


def _create(path: Path, schema: str) -> None:
    """A new database with the schema, built under a temporary name (0600, checked)
    and linked into place: ``node.db`` never exists empty, so an empty one next to an
    identity can only be a truncation. Never replaces an existing file."""
    wal, _ = _sidecars(path)
    if wal.exists() and wal.stat().st_size > 0:
        # SQLite would replay it into the new database.
        raise StoreError(f"{wal} is left without {path.name}; move it (and {path.name}-shm) "
                         f"aside too to start with an empty database")
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:  # nothing written yet
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")  # rollback journal: fsynced on commit
            db.executescript(f"BEGIN;\n{schema}\nCOMMIT;")
        finally:
            db.close()
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(f"{tmp.name}-journal").unlink(missing_ok=True)
    fsync_dir(path.parent)


def open_checked(path: Path, schema: str, *, empty_is_damage: bool) -> float | None:
    """Create or check ``path``: None if it is new, else the check's duration (ms)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _create(path, schema)
        return None
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"the database {path} is not a regular file; move it aside to start "
                         f"with an empty database ({_START_EMPTY})")
    if st.st_size == 0:
        if empty_is_damage:
            raise StoreError(
                f"the database {path} is empty (0 bytes) while identity.key exists, so it was "
                f"truncated; it is kept as is: restore it from a backup, or move it aside to "
                f"start with an empty database ({_START_EMPTY})")
        return None  # an empty file made by hand: SQLite initialises it in place
    t0 = time.monotonic()
    check_database(path)
    return (time.monotonic() - t0) * 1000
