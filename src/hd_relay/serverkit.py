"""What ``hd-relay`` and ``hd-lobby`` share as processes: settings (TOML < command
line), the data directory (0700, one process per directory, the server's own Ed25519
identity kept across restarts), the info file written once listening (0600) and removed
on exit, ``/healthz`` and ``/metrics``, and SIGINT/SIGTERM → a clean exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import trio
from prometheus_client import CollectorRegistry, generate_latest

from hd_node import files
from hd_protocol import Identity
from hd_shell.http.server import Request, Response, ServerLimits, serve
from hd_shell.listener import peer_listener_limits
from hd_shell.rlimits import raise_open_file_limit
from hd_shell.ws.link import WsLink

log = logging.getLogger("hd_relay.server")


class UsageError(Exception):
    """A bad setting: one line, exit 2."""


@dataclass
class ServerSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    log_level: str = "INFO"
    # Connection budgets: a lobby serves whole offices behind one NAT address, so a
    # source address may hold more than a node's peer listener allows (32).
    max_connections: int = 2048
    max_per_address: int = 128
    extra: dict[str, Any] = field(default_factory=dict)


class _OneLineParser(argparse.ArgumentParser):
    """A usage mistake is one line on stderr and exit 2, like every other bad setting
    (argparse's own ``error`` prints the whole usage first). Subparsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def common_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser,
                                                        argparse.ArgumentParser]:
    p = _OneLineParser(prog=prog, description=description,
                       epilog=f"{prog} run --data-dir DIR starts it; "
                              f"{prog} run --help lists the options of run")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the server in the foreground")
    run.add_argument("--data-dir", required=True, help="its data directory (created 0700)")
    run.add_argument("--host", help="listen address (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="listen port (default 0: any free port)")
    run.add_argument("--config", help="TOML file (keys of its table: host, port, ...)")
    run.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default INFO)")
    run.add_argument("--max-connections", type=int, default=None,
                     help="open connections at most (default 2048)")
    run.add_argument("--max-per-address", type=int, default=None,
                     help="open connections from one source address at most (default 128)")
    return p, run


def load_settings(args: argparse.Namespace, table: str,
                  extra_keys: tuple[str, ...] = ()) -> ServerSettings:
    doc: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as f:
                doc = tomllib.load(f).get(table, {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config file {args.config}: {exc}") from None
        if not isinstance(doc, dict):
            raise UsageError(f"[{table}] must be a table")
    s = ServerSettings(Path(args.data_dir).expanduser().resolve())
    s.host = str(args.host or doc.get("host", s.host))
    port = args.port if args.port is not None else doc.get("port", s.port)
    if type(port) is not int or not 0 <= port <= 65535:
        raise UsageError("port must be 0..65535")
    s.port = port
    s.log_level = str(args.log_level or doc.get("logLevel", s.log_level))
    for attr, key in (("max_connections", "maxConnections"),
                      ("max_per_address", "maxConnectionsPerAddress")):
        value = getattr(args, attr, None)
        value = value if value is not None else doc.get(key, getattr(s, attr))
        if type(value) is not int or not 1 <= value <= 1_000_000:
            raise UsageError(f"{key} must be 1..1000000")
        setattr(s, attr, value)
    if s.max_per_address > s.max_connections:
        raise UsageError("maxConnectionsPerAddress cannot exceed maxConnections")
    for key in extra_keys:
        value = getattr(args, key, None)
        s.extra[key] = value if value is not None else doc.get(key)
    return s


def server_limits(max_message: int, settings: ServerSettings) -> ServerLimits:
    """The budgets of a listener that faces the internet (those of a node's peer
    listener, with the connection caps of ``settings``), without the WebSocket
    pre-authentication budget: these servers check every frame of a connection that
    has not proved who it is themselves."""
    from dataclasses import replace

    return replace(peer_listener_limits(max_message), ws_preauth=None,
                   max_connections=settings.max_connections,
                   max_connections_per_address=settings.max_per_address)


def _json(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj).encode())


class ServerApp:
    """/healthz, /metrics and the WebSocket paths of one server (no token: these
    servers hold nothing private; every WebSocket peer proves who it is)."""

    def __init__(self, server_id: str, registry: CollectorRegistry,
                 routes: dict[str, Callable[[WsLink], Awaitable[None]]]) -> None:
        self.server_id = server_id
        self.registry = registry
        self.routes = routes

    async def http(self, req: Request) -> Response:
        if req.path == "/healthz":
            return _json(200, {"ok": True, "server_id": self.server_id})
        if req.path == "/metrics":
            return Response(200, generate_latest(self.registry), "text/plain; version=0.0.4")
        return _json(404, {"error": "not_found", "message": f"no route {req.path}"})

    def websocket_check(self, req: Request) -> Response | None:
        if req.path not in self.routes:
            return _json(403, {"error": "not_found", "message": f"no route {req.path}"})
        return None

    async def websocket(self, req: Request, link: WsLink) -> None:
        await self.routes[req.path](link)


class ServerProcess:
    """The data directory side of a server: lock, identity, the info file."""

    def __init__(self, settings: ServerSettings, info_name: str) -> None:
        self.settings = settings
        self.info_path = settings.data_dir / info_name
        try:
            files.ensure_data_dir(settings.data_dir)
            self._lock = files.lock_data_dir(settings.data_dir)
        except files.DataDirBusy:
            raise files.DataError(f"another server is running with data directory "
                                  f"{settings.data_dir}") from None
        # Everything in a server's directory is the server's: key, queue, info file.
        files.check_modes(settings.data_dir, [p.name for p in settings.data_dir.iterdir()])
        self.identity: Identity = (files.load_identity(settings.data_dir)
                                   or files.create_identity(settings.data_dir))

    async def run(self, app: ServerApp, limits: ServerLimits,
                  info: Callable[[str], dict[str, Any]],
                  background: list[Callable[[], Awaitable[None]]], name: str,
                  log_fields: dict[str, Any] | None = None) -> None:
        """``log_fields`` go on the one "listening" line: a server logs nothing before it
        listens, so a start that fails is exactly its one error line on stderr."""
        s = self.settings
        stop = trio.Event()
        nofile, _, nofile_max = raise_open_file_limit()
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
                    host = f"[{s.host}]" if ":" in s.host else s.host
                    base = f"ws://{host}:{port}"
                    data = {"pid": os.getpid(), **info(base),
                            "server_id": self.identity.node_id,
                            "server_key": self.identity.public_key}
                    files.write_private(self.info_path,
                                        json.dumps(data, indent=2).encode() + b"\n")
                    extra = "".join(f" {k}={v}" for k, v in (log_fields or {}).items())
                    log.info("%s listening url=%s server_id=%s%s", name, data.get("url"),
                             self.identity.node_id, extra)
                    for task in background:
                        n.start_soon(task)
                    n.start_soon(_watch_signals, signals, stop)
                    await stop.wait()
                    n.cancel_scope.cancel()
            finally:
                self.info_path.unlink(missing_ok=True)
                os.close(self._lock)


async def _watch_signals(signals: AsyncIterator[int], stop: trio.Event) -> None:
    async for signum in signals:
        log.info("signal received signal=%s: shutting down", signal.Signals(signum).name)
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
    except files.DataError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except (OSError, ExceptionGroup) as exc:
        err = _os_error(exc)
        if err is None:
            raise
        print(f"{prog}: cannot start: {err}", file=sys.stderr)
        return 1
    return 0


def _os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _os_error(sub)
            if found is not None:
                return found
    return None
