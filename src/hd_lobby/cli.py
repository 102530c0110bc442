"""``hd-lobby``: the lobby server (SPEC 7) with its bundled relay.

    hd-lobby run --data-dir DIR [--host H] [--port P] [--directory FILE] [--config FILE]

Serves ``/lobby-ws`` (registration, presence, rooms, signaling), a bundled relay at
``/relay-ws`` (store and forward in DIR), ``/healthz`` and ``/metrics``. Once listening
it writes ``DIR/lobby.json`` (0600) ``{pid, url, relay_url, server_id, server_key}`` and
removes it on exit. ``--directory FILE``: the nodes this lobby vouches for (SPEC 7.6), a
JSON list of ``{"node_id", "public_key"}``; they get attestations and may join
``directory`` rooms. ``--heartbeat S`` (default 15): how often nodes send presence;
three missed and a node is gone. ``--config FILE``: a TOML file whose ``[lobby]`` table
may set ``host``, ``port``, ``logLevel``, ``directory``, ``heartbeat``, ``maxConnections``
and ``maxConnectionsPerAddress`` (``--max-connections``, ``--max-per-address``); a flag on the
command line wins over the file. SIGINT/SIGTERM stop it with exit 0; a bad setting or a
damaged data directory is one line and exit 2, a busy port one line and exit 1.

Several instances share one directory and room list over NATS (docs/cluster.md):
``--cluster nats://H:P[,nats://H2:P2...]`` (or ``[cluster] url`` in the config file, or
``$HD_CLUSTER_URL``) and ``--instance NAME`` (unique in the cluster; random if not
given). Without it the lobby is the only one, as before. While the bus is gone the
lobby keeps serving its own nodes and ``/healthz`` says ``degraded``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry, Gauge

import hd_relay
from hd_protocol import node_id_for
from hd_protocol.brokers.lobby import LobbyServer
from hd_protocol.brokers.lobby_cluster import ClusteredLobby
from hd_protocol.errors import ProtocolError
from hd_protocol.limits import DEFAULT_LIMITS
from hd_shell.cluster import Bus, keep_running
from hd_shell.logs import configure as configure_logging
from hd_shell.server.app import ServerApp
from hd_shell.server.frames import FrameServer
from hd_shell.server.process import ServerProcess, run_main
from hd_shell.server.settings import (
    ServerSettings,
    UsageError,
    common_parser,
    load_settings,
    server_limits,
)

from .cluster import LobbyCluster

PROG = "hd-lobby"
PATH = "/lobby-ws"
RELAY_PATH = hd_relay.PATH
log = logging.getLogger("hd_lobby")


def load_directory(path: str | None) -> dict[str, str]:
    """node id -> public key, each id checked against its key."""
    if not path:
        return {}
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read directory file {path}: {exc}") from None
    if not isinstance(doc, list):
        raise UsageError(f"{path}: a directory is a JSON list of {{node_id, public_key}}")
    out: dict[str, str] = {}
    for i, entry in enumerate(doc):
        try:
            if not isinstance(entry, dict) or node_id_for(entry["public_key"]) != entry["node_id"]:
                raise ValueError
        except (KeyError, ValueError, ProtocolError):
            raise UsageError(f"{path}: entry {i} is not a node id with its key") from None
        out[entry["node_id"]] = entry["public_key"]
    return out


async def run(settings: ServerSettings) -> None:
    directory = load_directory(settings.extra.get("directory"))
    proc = ServerProcess(settings, "lobby.json", log)
    heartbeat = settings.extra.get("heartbeat")
    if heartbeat is None:  # not `or 15`: --heartbeat 0 is a mistake, not the default
        heartbeat = 15
    if type(heartbeat) is not int or not 1 <= heartbeat <= 3600:
        raise UsageError("heartbeat must be 1..3600 seconds")
    if settings.cluster:  # the bundled relay's mailbox is the cluster's stream
        await _serve(settings, proc, None, directory, heartbeat)
        return
    store = hd_relay.QueueStore(settings.data_dir / "relay-queue.db")
    try:
        await _serve(settings, proc, store, directory, heartbeat)
    finally:
        store.close()


async def _serve(settings: ServerSettings, proc: ServerProcess,
                 store: hd_relay.QueueStore | None, directory: dict[str, str],
                 heartbeat: int) -> None:
    registry = CollectorRegistry(auto_describe=True)
    bus = (Bus(settings.cluster, name=settings.instance or os.urandom(4).hex())
           if settings.cluster else None)
    mailbox: hd_relay.QueueStore | hd_relay.ClusterMailbox
    if store is not None:
        mailbox = store
    else:
        assert bus is not None
        mailbox = hd_relay.ClusterMailbox(bus, servers=len(settings.cluster),
                                          limits=DEFAULT_LIMITS)
    relay = hd_relay.RelayService(proc.identity, mailbox, DEFAULT_LIMITS, registry,
                                  log.getChild("relay"))
    machine: LobbyServer
    cluster: LobbyCluster | None = None
    if bus is None:
        machine = LobbyServer(proc.identity, rng=os.urandom, limits=DEFAULT_LIMITS,
                              directory=directory, heartbeat_s=heartbeat)
    else:
        machine = clustered = ClusteredLobby(proc.identity, instance=bus.name, rng=os.urandom,
                                             limits=DEFAULT_LIMITS, directory=directory,
                                             heartbeat_s=heartbeat)
        cluster = LobbyCluster(bus, clustered, lambda outs: lobby.apply(outs),
                               log.getChild("cluster"))
    lobby = FrameServer(machine, "lobby", timer=machine.on_timer,
                        next_deadline=machine.next_deadline, log=log,
                        effect=cluster.effect if cluster is not None else None)
    Gauge("hd_lobby_nodes", "Registered nodes", registry=registry).set_function(
        lambda: machine.registered)
    Gauge("hd_lobby_rooms", "Open rooms", registry=registry).set_function(
        lambda: machine.rooms)
    Gauge("hd_lobby_connections", "Open /lobby-ws connections",
          registry=registry).set_function(lambda: lobby.connections)
    background: list[Callable[[], Awaitable[None]]] = [relay.run, lobby.run_timer]
    fields: dict[str, object] = {"directory_entries": len(directory)}
    if bus is not None and cluster is not None:
        bus.register_metrics(registry)
        background += [partial(keep_running, bus), cluster.run, bus.monitor]
        fields["instance"] = bus.name
    app = ServerApp(proc.identity.node_id, registry,
                    {PATH: lobby.serve, RELAY_PATH: relay.serve},
                    cluster=bus.health if bus is not None else None)
    await proc.run(app, server_limits(hd_relay.relay_frame_limit(DEFAULT_LIMITS), settings),
                   lambda base: {"url": f"{base}{PATH}", "relay_url": f"{base}{RELAY_PATH}"},
                   background, "lobby", log_fields=fields)


def main(argv: list[str] | None = None) -> int:
    parser, run_p = common_parser(PROG, "hd fabric lobby (with its bundled relay)")
    run_p.add_argument("--directory", help="JSON list of {node_id, public_key} to vouch for")
    run_p.add_argument("--heartbeat", type=int,
                       help="seconds between node heartbeats (default 15; silent for 3 = gone)")
    args: argparse.Namespace = parser.parse_args(argv)

    def go() -> None:
        settings = load_settings(args, "lobby", ("directory", "heartbeat"))
        configure_logging(settings.log_level)
        trio.run(run, settings)

    return run_main(go, PROG)
