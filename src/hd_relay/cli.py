"""``hd-relay``: the standalone relay broker (SPEC 7.7).

    hd-relay run --data-dir DIR [--host H] [--port P] [--config FILE]

Serves ``/relay-ws`` (attach, routing, store and forward), ``/healthz`` and
``/metrics``; its queue is SQLite in DIR. Once listening it writes ``DIR/relay.json``
(0600) ``{pid, url, server_id, server_key}`` and removes it on exit. ``--config FILE``: a
TOML file whose ``[relay]`` table may set ``host``, ``port``, ``logLevel``, ``maxConnections`` and
``maxConnectionsPerAddress`` (``--max-connections``, ``--max-per-address``); a flag on
the command line wins over the file. SIGINT/SIGTERM stop it with exit 0; a bad setting
or a damaged data directory is one line and exit 2, a busy port one line and exit 1.
"""

from __future__ import annotations

import argparse
import logging

import trio
from prometheus_client import CollectorRegistry

from hd_protocol.limits import DEFAULT_LIMITS
from hd_shell.server.app import ServerApp
from hd_shell.server.process import ServerProcess, run_main
from hd_shell.server.settings import ServerSettings, common_parser, load_settings, server_limits

from .queue import QueueStore
from .service import PATH, RelayService, relay_frame_limit

PROG = "hd-relay"
log = logging.getLogger("hd_relay")


async def run(settings: ServerSettings) -> None:
    proc = ServerProcess(settings, "relay.json", log)
    store = QueueStore(settings.data_dir / "queue.db")
    try:
        registry = CollectorRegistry(auto_describe=True)
        service = RelayService(proc.identity, store, DEFAULT_LIMITS, registry)
        app = ServerApp(proc.identity.node_id, registry, {PATH: service.serve})
        await proc.run(app, server_limits(relay_frame_limit(DEFAULT_LIMITS), settings),
                       lambda base: {"url": f"{base}{PATH}"}, [service.run], "relay")
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser, _ = common_parser(PROG, "hd fabric relay broker")
    args: argparse.Namespace = parser.parse_args(argv)

    def go() -> None:
        settings = load_settings(args, "relay")
        logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        trio.run(run, settings)

    return run_main(go, PROG)
