"""Running a node: open the store, bind both listeners, run the hub, write node.json."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import repr_socket_addr, wrap_app

from hd_protocol.limits import Limits

from . import files
from .config import Settings, limits_for
from .hub import PeerHub
from .metrics import NodeMetrics
from .store import NodeStore
from .web import LocalApp, PeerApp

log = logging.getLogger("hd_node")


def _hypercorn_config(host: str, port: int, max_message: int) -> Config:
    cfg = Config()
    h = f"[{host}]" if ":" in host else host
    cfg.bind = [f"{h}:{port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")
    cfg.websocket_max_message_size = max_message
    cfg.max_app_queue_size = 16
    cfg.graceful_timeout = 2
    cfg.keep_alive_timeout = 30
    cfg.h11_max_incomplete_size = 64 * 1024
    cfg.websocket_ping_interval = None
    return cfg


def _port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])


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
        self.info: dict[str, Any] = {}

    async def run(self, *, task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        s = self.settings
        local_app = LocalApp(self.hub, self.token, self.metrics)
        peer_app = PeerApp(self.hub, self.metrics)
        stop = trio.Event()
        try:
            async with trio.open_nursery() as n:
                await n.start(self.hub.run)
                ui_binds = await n.start(
                    _serve, local_app,
                    _hypercorn_config(s.ui_host, s.ui_port, self.limits.max_ws_frame_bytes),
                    stop, self.metrics,
                )
                ui_port = _port_of(ui_binds[0])
                local_app.set_bound(s.ui_host, ui_port)
                if s.enable_direct:
                    peer_binds = await n.start(
                        _serve, peer_app,
                        _hypercorn_config(s.peer_host, s.peer_port,
                                          self.limits.max_envelope_bytes),
                        stop, self.metrics,
                    )
                    peer_port = _port_of(peer_binds[0])
                    host = s.peer_host
                    url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
                    url_host = f"[{url_host}]" if ":" in url_host else url_host
                    self.hub.set_peer_url(f"ws://{url_host}:{peer_port}/peer-ws", host)
                ui_host = f"[{s.ui_host}]" if ":" in s.ui_host else s.ui_host
                self.info = {
                    "pid": os.getpid(),
                    "node_id": self.identity.node_id,
                    "ui_url": f"http://{ui_host}:{ui_port}/",
                    "ws_url": f"ws://{ui_host}:{ui_port}/ws",
                    "peer_url": self.hub.peer_url,
                    "token": self.token,
                }
                files.write_node_json(s.data_dir, self.info)
                log.info("node listening node_id=%s ui=%s peer=%s", self.identity.node_id,
                         self.info["ui_url"], self.hub.peer_url or "-")
                task_status.started(self.info)
                n.start_soon(self._watch_signals, stop)
                await stop.wait()
                await self.hub.shutdown()
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


async def _serve(app: Any, cfg: Config, stop: trio.Event, metrics: NodeMetrics,
                 task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` until ``stop``; a crash of the HTTP server restarts it.

    hypercorn lets an exception in one connection's task end the whole server; a
    node must outlive that (one bad link must not take every peer and tab down). The
    listening socket is bound once and survives restarts: each run gets a duplicate.
    """
    sockets = cfg.create_sockets()
    for sock in sockets.insecure_sockets:
        sock.listen(cfg.backlog)
    try:
        binds = [f"http://{repr_socket_addr(s.family, s.getsockname())}"
                 for s in sockets.insecure_sockets]
        task_status.started(binds)
        wrapped = wrap_app(app, cfg.wsgi_max_body_size, "asgi")
        while not stop.is_set():
            run = Sockets([], [s.dup() for s in sockets.insecure_sockets], [])
            try:
                await worker_serve(wrapped, cfg, sockets=run, shutdown_trigger=stop.wait)
                return
            except Exception:
                metrics.listener_restarts.inc()
                log.exception("listener crashed; restarting it on %s", binds[0])
                await trio.sleep(0.1)
            finally:
                for s in run.insecure_sockets:
                    s.close()
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()
