"""A SQLite file of a binary: created, checked, or refused before its store opens it,
and the batched transactions every store runs on it.

A new database is built under a temporary name (created 0600 and checked, so SQLite
gives its -wal/-shm files 0600 too) and linked into place only once it holds the
schema: a crash never leaves an empty file, so an empty one where the binary knows a
database belongs is a truncation. An existing one must pass ``PRAGMA integrity_check``
on a read-only connection before anything writes to it. A damaged file is refused
(:class:`DatabaseError`, one line saying what to do and what starting empty loses,
in the binary's words) and kept byte for byte: never repaired, replaced or deleted.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .datadir import DataError, fsync_dir, temp_path


class DatabaseError(DataError):
    """A database is damaged, truncated or not a database: it is kept as it is."""


def damaged(path: Path, why: str, lost: str) -> DatabaseError:
    """The one-line refusal of a damaged ``path``; ``lost`` is what an empty database
    loses ("queued envelopes are lost")."""
    why = " ".join(why.split())[:160]  # integrity_check rows can span lines
    return DatabaseError(f"the database {path} is damaged ({why}); it is kept as is: restore "
                         f"it from a backup, or move {path.name} and any {path.name}-wal/-shm "
                         f"aside to start with an empty database ({lost})")


def _sidecars(path: Path) -> tuple[Path, Path]:
    return path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")


@contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
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


def check_database(path: Path, lost: str) -> None:
    """``PRAGMA integrity_check`` on a read-only connection; :class:`DatabaseError` if
    the file is not a database or is damaged (a truncated file is one or the other)."""
    try:
        with read_only(path) as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as exc:
        raise damaged(path, str(exc), lost) from None
    if rows != [("ok",)]:
        more = f" and {len(rows) - 1} more" if len(rows) > 1 else ""
        raise damaged(path, f"integrity_check: {rows[0][0]}{more}", lost)


def _create(path: Path, schema: str) -> None:
    """A new database with the schema, built under a temporary name (0600, checked)
    and linked into place. Never replaces an existing file."""
    wal, _ = _sidecars(path)
    if wal.exists() and wal.stat().st_size > 0:
        # SQLite would replay it into the new database.
        raise DatabaseError(f"{wal} is left without {path.name}; move it (and "
                            f"{path.name}-shm) aside too to start with an empty database")
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


def open_checked(path: Path, schema: str, *, lost: str,
                 empty_is_damage: str | None = None) -> float | None:
    """Create or check ``path``: None if it is new, else the check's duration (ms).
    ``empty_is_damage``: why a 0-byte file can only be a truncation here ("identity.key
    exists"); without it, an empty file made by hand is initialised in place."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _create(path, schema)
        return None
    if not stat.S_ISREG(st.st_mode):
        raise DatabaseError(f"the database {path} is not a regular file; move it aside to "
                            f"start with an empty database ({lost})")
    if st.st_size == 0:
        if empty_is_damage:
            raise DatabaseError(
                f"the database {path} is empty (0 bytes) while {empty_is_damage}, so it was "
                f"truncated; it is kept as is: restore it from a backup, or move it aside to "
                f"start with an empty database ({lost})")
        return None
    t0 = time.monotonic()
    check_database(path, lost)
    return (time.monotonic() - t0) * 1000


def connect(path: Path, schema: str, lost: str, pragmas: tuple[str, ...]) -> sqlite3.Connection:
    """The store's own connection to a checked ``path`` (WAL, then ``pragmas``, then the
    schema); a file SQLite refuses now is reported as damaged."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        for pragma in pragmas:
            db.execute(f"PRAGMA {pragma}")
        db.executescript(schema)
    except sqlite3.Error as exc:
        db.close()
        raise damaged(path, str(exc), lost) from None
    return db


class Transactions:
    """Batched writes on one connection: each logical write (``tx``) is its own
    transaction, or a part of the open ``batch``, committed when the outermost batch
    ends. A batch must never span an ``await``: what is sent after a write inside it
    reaches the wire only after the commit ("stored before sent").

    ``full``: every commit is fsynced (``synchronous=FULL``). Otherwise commits survive
    a crash of the process (WAL, ``synchronous=NORMAL``), and ``batch(durable=True)``
    makes that one commit survive an OS crash too, for what we answer a peer about."""

    def __init__(self, db: sqlite3.Connection, *, full: bool) -> None:
        self._db = db
        self._always_full = full
        self._full_sync = full
        db.execute("PRAGMA synchronous=FULL" if full else "PRAGMA synchronous=NORMAL")
        self._depth = 0
        self._in_tx = False
        self._durable = False

    @contextmanager
    def batch(self, *, durable: bool = False) -> Iterator[None]:
        self._durable = durable if self._depth == 0 else self._durable or durable
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0 and self._in_tx:
                self._in_tx = False
                self._db.execute("ROLLBACK")
                self._sync(False)
            raise
        self._depth -= 1
        if self._depth == 0 and self._in_tx:
            self._in_tx = False
            self._db.execute("COMMIT")
            self._sync(False)

    def _sync(self, full: bool) -> None:
        """Set the fsync policy for the next commit (never inside a transaction)."""
        full = full or self._always_full
        if full != self._full_sync:
            self._db.execute("PRAGMA synchronous=FULL" if full else "PRAGMA synchronous=NORMAL")
            self._full_sync = full

    @contextmanager
    def tx(self) -> Iterator[None]:
        """One logical write: its own transaction, or a part of the open batch."""
        if self._depth > 0:
            if not self._in_tx:
                self._sync(self._durable)
                self._db.execute("BEGIN IMMEDIATE")
                self._in_tx = True
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
