"""``hd-relay``: the standalone relay broker (SPEC 7.7).

    hd-relay run --data-dir DIR [--host H] [--port P] [--config FILE]
                 [--cluster nats://H:P[,nats://H2:P2...]] [--instance NAME]

Serves ``/relay-ws`` (attach, routing, store and forward), ``/healthz`` and
``/metrics``; its queue is SQLite in DIR. Once listening it writes ``DIR/relay.json``
(0600) ``{pid, url, server_id, server_key}`` and removes it on exit. ``--config FILE``: a
TOML file whose ``[relay]`` table may set ``host``, ``port``, ``logLevel``, ``maxConnections`` and
``maxConnectionsPerAddress`` (``--max-connections``, ``--max-per-address``); a flag on
the command line wins over the file. SIGINT/SIGTERM stop it with exit 0; a bad setting
or a damaged data directory is one line and exit 2, a busy port one line and exit 1.

Several instances (issue 19): ``--cluster`` (or ``url`` in the file's ``[cluster]``
table, or ``$HD_CLUSTER_URL``) names the NATS servers they share; the mailbox is then the
JetStream stream ``HD_MAILBOX`` (replicated on min(3, the number of URLs given) servers)
instead of SQLite, and any instance delivers what another queued. ``--instance NAME``
names this instance on the bus (default: a random one). While the bus is away the relay
keeps routing between the nodes attached to it, answers queueing with ``unavailable``,
and says ``degraded`` in ``/healthz`` (``hd_cluster_*`` in ``/metrics``); it never exits
for it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from prometheus_client import CollectorRegistry

from hd_protocol.limits import DEFAULT_LIMITS
from hd_shell.cluster import Bus, keep_running
from hd_shell.logs import configure as configure_logging
from hd_shell.server.app import ServerApp
from hd_shell.server.process import ServerProcess, run_main
from hd_shell.server.settings import ServerSettings, common_parser, load_settings, server_limits

from .mailbox import ClusterMailbox
from .queue import QueueStore
from .service import PATH, RelayService, relay_frame_limit

PROG = "hd-relay"
log = logging.getLogger("hd_relay")


async def run(settings: ServerSettings) -> None:
    proc = ServerProcess(settings, "relay.json", log)
    registry = CollectorRegistry(auto_describe=True)
    limits = server_limits(relay_frame_limit(DEFAULT_LIMITS), settings)
    info: Callable[[str], dict[str, str]] = lambda base: {"url": f"{base}{PATH}"}  # noqa: E731
    if settings.cluster:
        name = settings.instance or f"relay-{secrets.token_hex(4)}"
        bus = Bus(settings.cluster, name=name)  # connected once listening: its lines are ours
        bus.register_metrics(registry)
        mailbox = ClusterMailbox(bus, servers=len(settings.cluster), limits=DEFAULT_LIMITS)
        service = RelayService(proc.identity, mailbox, DEFAULT_LIMITS, registry)
        app = ServerApp(proc.identity.node_id, registry, {PATH: service.serve},
                        cluster=bus.health)
        background: list[Callable[[], Awaitable[None]]] = [
            partial(keep_running, bus), service.run, bus.monitor]
        await proc.run(app, limits, info, background, "relay",
                       {"instance": name, "cluster": len(settings.cluster)})
        return
    store = QueueStore(settings.data_dir / "queue.db")
    with contextlib.closing(store):
        service = RelayService(proc.identity, store, DEFAULT_LIMITS, registry)
        app = ServerApp(proc.identity.node_id, registry, {PATH: service.serve})
        await proc.run(app, limits, info, [service.run], "relay")


def main(argv: list[str] | None = None) -> int:
    parser, _ = common_parser(PROG, "hd fabric relay broker")
    args: argparse.Namespace = parser.parse_args(argv)

    def go() -> None:
        settings = load_settings(args, "relay")
        configure_logging(settings.log_level)
        trio.run(run, settings)

    return run_main(go, PROG)
