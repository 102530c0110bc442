"""A binary's data directory: created 0700, one process per directory, private files.

The directory is created 0700 and every file in it 0600, whatever the umask. Files are
written atomically with mode 0600 from birth: the content goes to a temporary file
opened 0600, then is renamed into place (never chmod-ed after writing). Only a file
that already exists with a looser mode (an older version, a copy, a restore) is
tightened, with a warning, at start.

What is generic lives here; each binary passes its own file names and its own words
(what a new identity costs it, who "another ... is running" is), so a relay's error
names the relay's files. A file that cannot be used as it is raises
:class:`DataError` with one line saying which file and what to do; nothing here ever
replaces or deletes a key that is already there.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from hd_protocol import Identity

KEY_FILE = "identity.key"
LOCK_FILE = "lock"


class DataError(Exception):
    """A file in the data directory cannot be used as it is; the message names the file
    and what to do. The process refuses to start rather than guess (exit code 2)."""


class DataDirBusy(DataError):
    """Another process owns this data directory."""


def fsync_dir(path: Path) -> None:
    """Make a rename or a new name in ``path`` survive an OS crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """A unique hidden name next to ``path`` (``tidy`` knows the pattern)."""
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


def check_modes(data_dir: Path, names: Iterable[str], log: logging.Logger) -> None:
    """Warn about a data directory that others can enter, and tighten (with a warning)
    each of ``names`` that others can read. The directory itself is the owner's
    choice, so it only gets the fix in the warning."""
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


def tidy(data_dir: Path, names: Iterable[str], log: logging.Logger) -> None:
    """Remove the temporary files of ``names`` a crash left behind (one may hold a copy
    of a key). Call it with the directory lock held, so no live writer owns them."""
    for name in names:
        for tmp in data_dir.glob(f".{name}.*.tmp*"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                log.info("removed a temporary file left by a crash path=%s", tmp)


def lock_data_dir(data_dir: Path, holder: str) -> int:
    """Hold an exclusive lock on DIR/lock for the process's life; :class:`DataDirBusy`
    ("another ``holder`` is running ...") when another process holds it."""
    ensure_data_dir(data_dir)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(f"another {holder} is running with data directory "
                          f"{data_dir}") from None
    return fd


# --- identity ---------------------------------------------------------------------------


def load_identity(data_dir: Path, cost: str) -> Identity | None:
    """The stored identity, or None if there is none. A key file that exists but cannot
    be read or parsed is never replaced: that would silently change the id. ``cost``
    says what a new identity costs this binary (it ends the error line)."""
    path = data_dir / KEY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"cannot read the identity key {path} ({exc.strerror}); fix it or "
                        f"restore it from a backup, or move it aside to start a new "
                        f"identity ({cost})") from None
    try:
        return Identity.from_private_bytes(raw)
    except ValueError as exc:
        raise DataError(f"the identity key {path} is corrupt ({exc}); restore it from a "
                        f"backup, or move it aside to start a new identity "
                        f"({cost})") from None


def create_identity(data_dir: Path) -> Identity:
    ensure_data_dir(data_dir)
    ident = Identity.generate()
    write_private(data_dir / KEY_FILE, ident.private_bytes())
    return ident
