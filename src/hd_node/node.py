"""Running a node: open the store, bind both listeners, run the hub, write node.json."""

from __future__ import annotations

import logging
import os
import signal
from functools import partial
from typing import Any

import trio

from hd_protocol.limits import Limits

from . import files
from .config import Settings, limits_for
from .direct import DirectTransport
from .httpserver import ServerLimits, serve
from .hub import PeerHub
from .metrics import NodeMetrics
from .store import NodeStore
from .web import LocalApp

log = logging.getLogger("hd_node")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Node:
    def __init__(self, settings: Settings, limits: Limits | None = None) -> None:
        self.settings = settings
        self.limits = limits_for(settings) if limits is None else limits
        files.ensure_data_dir(settings.data_dir)
        self._lock_fd = files.lock_data_dir(settings.data_dir)
        self.identity = files.load_or_create_identity(settings.data_dir)
        self.token = files.load_or_create_token(settings.data_dir)
        self.store = NodeStore(settings.data_dir / "node.db")
        self.metrics = NodeMetrics()
        self.hub = PeerHub(self.identity, settings, self.store, self.metrics,
                           limits=self.limits)
        self.direct = DirectTransport(
            host=settings.peer_host, port=settings.peer_port,
            max_message_bytes=self.limits.max_envelope_bytes, metrics=self.metrics,
            can_accept=self.hub.can_accept,
        )
        self.hub.transports.add(self.direct)
        self.info: dict[str, Any] = {}

    async def run(self, *, task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        s = self.settings
        hub = self.hub
        local_app = LocalApp(commands=hub.commands, bus=hub.bus, sessions=hub.sessions,
                             metrics=self.metrics, token=self.token,
                             node_id=self.identity.node_id,
                             max_frame_bytes=self.limits.max_ws_frame_bytes)
        stop = trio.Event()
        try:
            async with trio.open_nursery() as n:
                await n.start(hub.run)
                ui_limits = ServerLimits(ws_max_message_bytes=self.limits.max_ws_frame_bytes)
                _, ui_port = await n.start(partial(
                    serve, local_app, s.ui_host, s.ui_port, limits=ui_limits, name="ui",
                    count=lambda why: self.metrics.listener.labels("ui", why).inc()))
                local_app.set_bound(s.ui_host, ui_port)
                if s.enable_direct:
                    _, peer_port = await n.start(partial(self.direct.serve, hub.accept))
                    host = s.peer_host
                    url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
                    hub.set_peer_url(f"ws://{_url_host(url_host)}:{peer_port}/peer-ws", host)
                ui_host = _url_host(s.ui_host)
                self.info = {
                    "pid": os.getpid(),
                    "node_id": self.identity.node_id,
                    "ui_url": f"http://{ui_host}:{ui_port}/",
                    "ws_url": f"ws://{ui_host}:{ui_port}/ws",
                    "peer_url": hub.peers.peer_url,
                    "token": self.token,
                }
                files.write_node_json(s.data_dir, self.info)
                log.info("node listening node_id=%s ui=%s peer=%s", self.identity.node_id,
                         self.info["ui_url"], hub.peers.peer_url or "-")
                task_status.started(self.info)
                n.start_soon(self._watch_signals, stop)
                await stop.wait()
                await hub.shutdown()
                n.cancel_scope.cancel()
        finally:
            files.remove_node_json(s.data_dir)
            self.store.close()
            os.close(self._lock_fd)

    async def _watch_signals(self, stop: trio.Event) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("signal received signal=%s: shutting down", signal.Signals(signum).name)
                stop.set()
                return
