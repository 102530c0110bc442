"""What ``hd-relay`` and ``hd-lobby`` share as processes: the data directory (0700, one
process per directory, the server's own Ed25519 identity kept across restarts), the info
file written once listening (0600) and removed on exit, and SIGINT/SIGTERM → a clean
exit 0; ``run_main`` turns what stops a start into one line and an exit code.

Each binary passes its own logger, so its lines carry its own name.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

from hd_protocol import Identity
from hd_shell import datadir
from hd_shell.errors import find, url_host
from hd_shell.http.server import ServerLimits, serve
from hd_shell.logs import own_logs
from hd_shell.rlimits import raise_open_file_limit, tune_collector

from .app import ServerApp
from .settings import ServerSettings, UsageError

# What a new server identity costs (the end of a "damaged identity key" error line).
NEW_IDENTITY_COST = ("a new server key: nodes that pin it, such as a directoryKey, must be "
                     "given the new one")


class ServerProcess:
    """The data directory side of a server: lock, identity, the info file."""

    def __init__(self, settings: ServerSettings, info_name: str, log: logging.Logger) -> None:
        self.settings = settings
        self.info_path = settings.data_dir / info_name
        self.log = log
        datadir.ensure_data_dir(settings.data_dir)
        self._lock = datadir.lock_data_dir(settings.data_dir, "server")
        # Everything in a server's directory is the server's: key, queue, info file.
        datadir.check_modes(settings.data_dir, [p.name for p in settings.data_dir.iterdir()],
                            log)
        datadir.tidy(settings.data_dir, [datadir.KEY_FILE, info_name], log)
        identity = datadir.load_identity(settings.data_dir, NEW_IDENTITY_COST)
        if identity is None:
            identity = datadir.create_identity(settings.data_dir)
            log.debug("new server identity created server_id=%s", identity.node_id)
        self.identity: Identity = identity

    async def run(self, app: ServerApp, limits: ServerLimits,
                  info: Callable[[str], dict[str, Any]],
                  background: list[Callable[[], Awaitable[None]]], name: str,
                  log_fields: dict[str, Any] | None = None) -> None:
        """``log_fields`` go on the one "listening" line: a server logs nothing before it
        listens, so a start that fails is exactly its one error line on stderr. The kit's
        lines (HTTP, WebSocket) go under this server's logger too (``hd_relay.http``)."""
        own_logs(self.log.name)
        s = self.settings
        stop = trio.Event()
        nofile, _, nofile_max = raise_open_file_limit()
        tune_collector()
        if not nofile_max or nofile < s.max_connections + 64:
            log_fields = {**(log_fields or {}), "nofile": nofile}  # said on the one line
        # Signals are caught from before the info file exists: whoever sees the file may
        # signal at once, and that is still exit 0 with the file removed. The receiver
        # closes (and re-raises any second signal) only after that clean-up.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            try:
                async with trio.open_nursery() as n:
                    _, port = await n.start(lambda task_status: serve(
                        app, s.host, s.port, limits=limits, name=name,
                        task_status=task_status))
                    base = f"ws://{url_host(s.host)}:{port}"
                    data = {"pid": os.getpid(), **info(base),
                            "server_id": self.identity.node_id,
                            "server_key": self.identity.public_key}
                    datadir.write_private(self.info_path,
                                        json.dumps(data, indent=2).encode() + b"\n")
                    extra = "".join(f" {k}={v}" for k, v in (log_fields or {}).items())
                    self.log.info("%s listening url=%s server_id=%s%s", name, data.get("url"),
                             self.identity.node_id, extra)
                    for task in background:
                        n.start_soon(task)
                    n.start_soon(self._watch_signals, signals, stop)
                    await stop.wait()
                    n.cancel_scope.cancel()
            finally:
                self.info_path.unlink(missing_ok=True)
                os.close(self._lock)

    async def _watch_signals(self, signals: AsyncIterator[int], stop: trio.Event) -> None:
        async for signum in signals:
            self.log.info("signal received signal=%s: shutting down",
                          signal.Signals(signum).name)
            stop.set()
            return


def run_main(go: Callable[[], None], prog: str) -> int:
    """Run ``go`` (which calls ``trio.run``) with one-line errors and exit codes:
    2 for settings and data directory problems, 1 for a port that cannot be bound."""
    import sys

    try:
        go()
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except datadir.DataError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except (OSError, ExceptionGroup) as exc:
        err = find(exc, OSError)
        if err is None:
            raise
        print(f"{prog}: cannot start: {err}", file=sys.stderr)
        return 1
    return 0


