"""Settings of a server binary (``hd-relay``, ``hd-lobby``): the command line and the
TOML file (a flag wins over the file), and the budgets of its listener."""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

from hd_shell.http.server import ServerLimits
from hd_shell.listener import peer_listener_limits


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
    # Several instances sharing state over NATS (docs/cluster.md): the bus URLs, and this
    # instance's name (unique in the cluster; a random one when not given).
    cluster: list[str] = field(default_factory=list)
    instance: str | None = None


CLUSTER_ENV = "HD_CLUSTER_URL"
_INSTANCE = re.compile(r"[A-Za-z0-9_-]{1,64}")


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
    run.add_argument("--cluster", default=None, metavar="URLS",
                     help="share state with other instances over NATS: nats://H:P[,nats://H2:P2] "
                          f"(also [cluster] url in the config file, or ${CLUSTER_ENV})")
    run.add_argument("--instance", default=None, metavar="NAME",
                     help="this instance's name in the cluster (default: a random one)")
    return p, run


def cluster_urls(value: object, where: str) -> list[str]:
    """``nats://H:P[,nats://H2:P2...]`` (or a TOML list of them) as a checked list."""
    if isinstance(value, str):
        items = [u.strip() for u in value.split(",") if u.strip()]
    elif isinstance(value, list) and all(isinstance(u, str) for u in value):
        items = [u.strip() for u in value]
    else:
        raise UsageError(f"{where}: the cluster url is nats://HOST:PORT[,nats://HOST:PORT...]")
    for u in items:
        if not re.fullmatch(r"(nats|tls)://[^\s/,]+:\d{1,5}", u):
            raise UsageError(f"{where}: {u!r} is not nats://HOST:PORT")
    if not items:
        raise UsageError(f"{where}: no cluster url")
    return items


def load_settings(args: argparse.Namespace, table: str,
                  extra_keys: tuple[str, ...] = ()) -> ServerSettings:
    doc: dict[str, Any] = {}
    cluster_doc: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as f:
                whole = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config file {args.config}: {exc}") from None
        doc, cluster_doc = whole.get(table, {}), whole.get("cluster", {})
        if not isinstance(doc, dict):
            raise UsageError(f"[{table}] must be a table")
        if not isinstance(cluster_doc, dict):
            raise UsageError("[cluster] must be a table")
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
    _cluster_settings(s, args, cluster_doc)
    return s


def _cluster_settings(s: ServerSettings, args: argparse.Namespace,
                      doc: dict[str, Any]) -> None:
    """The flag, else the ``[cluster]`` table, else ``$HD_CLUSTER_URL``."""
    flag = getattr(args, "cluster", None)
    env = os.environ.get(CLUSTER_ENV)
    if flag:
        s.cluster = cluster_urls(flag, "--cluster")
    elif doc.get("url") is not None:
        s.cluster = cluster_urls(doc["url"], "[cluster] url")
    elif env:
        s.cluster = cluster_urls(env, CLUSTER_ENV)
    name = getattr(args, "instance", None) or doc.get("instance")
    if name is not None:
        if type(name) is not str or not _INSTANCE.fullmatch(name):
            raise UsageError("instance is 1..64 letters, digits, '-' or '_'")
        if not s.cluster:
            raise UsageError("--instance names this instance in a cluster: give --cluster too")
        s.instance = name


def server_limits(max_message: int, settings: ServerSettings) -> ServerLimits:
    """The budgets of a listener that faces the internet (those of a node's peer
    listener, with the connection caps of ``settings``), without the WebSocket
    pre-authentication budget: these servers check every frame of a connection that
    has not proved who it is themselves."""
    return replace(peer_listener_limits(max_message), ws_preauth=None,
                   max_connections=settings.max_connections,
                   max_connections_per_address=settings.max_per_address)


