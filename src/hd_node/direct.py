"""The direct transport: WebSocket (``ws://…/peer-ws``) between two nodes' peer listeners.

Dialling is ``wslink.dial_ws``; accepting is the peer listener, an ``httpserver`` that
serves ``/peer-ws`` and nothing else (SPEC 9). The LAN transport is the same thing with
another ``kind`` (its candidates come from mDNS instead of invites and presence).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import trio

from hd_protocol import DialCandidate

from .httpserver import Request, Response, ServerLimits, serve
from .metrics import NodeMetrics
from .transport import Accept, DialFailed, Link
from .wslink import DialError, WsLink, dial_ws

log = logging.getLogger("hd_node.direct")

PATH = "/peer-ws"


class DirectTransport:
    remembers_addresses = True

    def __init__(self, *, host: str, port: int, max_message_bytes: int, metrics: NodeMetrics,
                 can_accept: Callable[[], bool], kind: str = "direct",
                 server_limits: ServerLimits | None = None) -> None:
        self.kind = kind
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics
        self.can_accept = can_accept
        self.server_limits = server_limits or ServerLimits(
            ws_max_message_bytes=max_message_bytes)

    async def open(self, candidate: DialCandidate, *, timeout_s: float) -> Link:
        try:
            return await dial_ws(candidate.address, timeout_s=timeout_s,
                                 max_message_size=self.max_message_bytes, kind=self.kind)
        except DialError as exc:
            code = {"http_status": "refused_http", "bad_url": "bad_address"}.get(
                exc.code, exc.code)
            raise DialFailed(code, exc.message) from None

    async def serve(self, accept: Accept, *,
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        app = PeerApp(accept, self.can_accept, self.metrics)
        await serve(app, self.host, self.port, limits=self.server_limits,
                    count=lambda why: self.metrics.listener.labels("peer", why).inc(),
                    name="peer", task_status=task_status)


def _json(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj).encode())


class PeerApp:
    """The peer listener: ``/peer-ws`` and nothing else."""

    def __init__(self, accept: Accept, can_accept: Callable[[], bool],
                 metrics: NodeMetrics) -> None:
        self.accept = accept
        self.can_accept = can_accept
        self.metrics = metrics

    async def http(self, req: Request) -> Response:
        return _json(404, {"error": "not_found", "message": f"only {PATH} is served"})

    def websocket_check(self, req: Request) -> Response | None:
        if req.path != PATH:
            self.metrics.refused.labels("peer_path").inc()
            return _json(403, {"error": "not_found", "message": f"only {PATH} is served"})
        if not self.can_accept():
            # SPEC 4: more than 64 handshakes in flight -> refuse the connection.
            self.metrics.refused.labels("busy").inc()
            log.info("peer link refused from=%s why=busy", req.remote_addr)
            return _json(503, {"error": "busy", "message": "too many handshakes, try later"})
        return None

    async def websocket(self, req: Request, link: WsLink) -> None:
        await self.accept(link)
