"""The direct transport: WebSocket (``ws://…/peer-ws``) between two nodes' peer listeners.

Dialling is ``hd_shell.ws.link.dial_ws``; accepting is the peer listener, an HTTP server that
serves ``/peer-ws`` and nothing else (SPEC 9). The LAN transport is the same thing with
another ``kind`` (its candidates come from mDNS instead of invites and presence).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio

from hd_protocol import DialCandidate
from hd_shell.http.server import Request, Response, ServerLimits, serve
from hd_shell.listener import PREAUTH, peer_listener_limits
from hd_shell.ws.link import DialError, WsLink, dial_ws

from ..metrics import NodeMetrics
from .seam import DialFailed, InboundGate, Link, Ticket

log = logging.getLogger("hd_node.direct")

PATH = "/peer-ws"


class DirectTransport:
    remembers_addresses = True

    def __init__(self, *, host: str, port: int, max_message_bytes: int, metrics: NodeMetrics,
                 kind: str = "direct", server_limits: ServerLimits | None = None) -> None:
        self.kind = kind
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics
        self.server_limits = server_limits or peer_listener_limits(max_message_bytes)

    async def open(self, candidate: DialCandidate, *, timeout_s: float,
                   peer_id: str | None = None) -> Link:
        try:
            return await dial_ws(candidate.address, timeout_s=timeout_s,
                                 max_message_size=self.max_message_bytes, kind=self.kind,
                                 preauth=PREAUTH)
        except DialError as exc:
            code = {"http_status": "refused_http", "bad_url": "bad_address"}.get(
                exc.code, exc.code)
            raise DialFailed(code, exc.message) from None

    async def serve(self, gate: InboundGate, *,
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        app = PeerApp(gate, self.metrics, self.kind)
        await serve(app, self.host, self.port, limits=self.server_limits,
                    count=lambda why: self.metrics.listener.labels("peer", why).inc(),
                    name="peer", task_status=task_status)


def _json(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj).encode())


class PeerApp:
    """The peer listener: ``/peer-ws`` and nothing else. A handshake slot is taken in
    ``websocket_check`` — before the 101 goes out, so the cap is exact — and handed to
    the gate with the link (or given back if the upgrade never completes)."""

    def __init__(self, gate: InboundGate, metrics: NodeMetrics, kind: str) -> None:
        self.gate = gate
        self.metrics = metrics
        self.kind = kind
        self._tickets: dict[int, Ticket] = {}

    async def http(self, req: Request) -> Response:
        return _json(404, {"error": "not_found", "message": f"only {PATH} is served"})

    def websocket_check(self, req: Request) -> Response | None:
        if req.path != PATH:
            self.metrics.refused.labels("peer_path").inc()
            return _json(403, {"error": "not_found", "message": f"only {PATH} is served"})
        ticket = self.gate.reserve(req.remote_addr)
        if ticket is None:
            # SPEC 4: past the handshakes in flight (in total, or from this address).
            self.metrics.refused.labels("busy").inc()
            log.info("peer link refused from=%s why=busy", req.remote_addr)
            return _json(503, {"error": "busy", "message": "too many handshakes, try later"})
        self._tickets[id(req)] = ticket
        return None

    def websocket_abandoned(self, req: Request) -> None:
        ticket = self._tickets.pop(id(req), None)
        if ticket is not None:
            ticket.release()

    async def websocket(self, req: Request, link: WsLink) -> None:
        ticket = self._tickets.pop(id(req), None)
        if ticket is None:  # cannot happen: the server checks before it upgrades
            return
        link.kind = self.kind
        await self.gate.accept(link, ticket)
