"""The HTTP face of a server binary: ``/healthz``, ``/metrics`` and its WebSocket paths."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from hd_shell.http.server import Request, Response
from hd_shell.ws.link import WsLink


def _json(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj).encode())


class ServerApp:
    """/healthz, /metrics and the WebSocket paths of one server (no token: these
    servers hold nothing private; every WebSocket peer proves who it is)."""

    def __init__(self, server_id: str, registry: CollectorRegistry,
                 routes: dict[str, Callable[[WsLink], Awaitable[None]]],
                 cluster: Callable[[], dict[str, Any]] | None = None) -> None:
        """``cluster``: the bus's health (``Bus.health``) when the server is one of
        several instances; ``/healthz`` then says ``degraded`` while the bus is gone (the
        server still serves its own connections)."""
        self.server_id = server_id
        self.registry = registry
        self.routes = routes
        self.cluster = cluster

    async def http(self, req: Request) -> Response:
        if req.path == "/healthz":
            body: dict[str, Any] = {"ok": True, "server_id": self.server_id,
                                    "status": "ok"}
            if self.cluster is not None:
                body["cluster"] = bus = self.cluster()
                if not bus.get("connected"):
                    body["status"] = "degraded"
            return _json(200, body)
        if req.path == "/metrics":
            return Response(200, generate_latest(self.registry), "text/plain; version=0.0.4")
        return _json(404, {"error": "not_found", "message": f"no route {req.path}"})

    def websocket_check(self, req: Request) -> Response | None:
        if req.path not in self.routes:
            return _json(403, {"error": "not_found", "message": f"no route {req.path}"})
        return None

    async def websocket(self, req: Request, link: WsLink) -> None:
        await self.routes[req.path](link)


