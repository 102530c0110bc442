"""The two listeners as ASGI apps served by hypercorn on trio.

Local listener (default 127.0.0.1:8765): ``/`` (the page), ``/ws`` (tabs), ``/api/...``
(the CLI), ``/healthz``, ``/metrics``. Peer listener (default 0.0.0.0:8766): only
``/peer-ws``. ``/ws`` and ``/api`` need the local access token; a browser ``Origin``
other than our own, or a ``Host`` that is not us (DNS rebinding), is refused with 403.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import trio

from .hub import HubError, PeerHub
from .links import ServerLink
from .metrics import NodeMetrics
from .tabs import TabSession

log = logging.getLogger("hd_node.web")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_BODY = 64 * 1024


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None


def _remote(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send: Send, status: int, body: bytes, ctype: str = "application/json",
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", ctype.encode()), (b"cache-control", b"no-store"),
               (b"x-content-type-options", b"nosniff")] + (extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, obj: Any) -> None:
    await _respond(send, status, json.dumps(obj).encode())


async def _read_body(receive: Receive) -> bytes | None:
    body = b""
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return None
        body += bytes(msg.get("body", b""))
        if len(body) > MAX_BODY:
            return None
        if not msg.get("more_body"):
            return body


class LocalApp:
    def __init__(self, hub: PeerHub, token: str, metrics: NodeMetrics) -> None:
        self.hub = hub
        self.token = token
        self.metrics = metrics
        self.allowed_hosts: set[str] = set()

    def set_bound(self, host: str, port: int) -> None:
        names = {host, "127.0.0.1", "localhost", "[::1]"}
        self.allowed_hosts = {f"{h}:{port}" for h in names}

    # --- checks -----------------------------------------------------------------------

    def _host_ok(self, scope: Scope) -> bool:
        host = _header(scope, b"host")
        return host is not None and host in self.allowed_hosts

    def _origin_ok(self, scope: Scope) -> bool:
        # Browsers always send Origin on WebSocket and cross-site requests; a missing
        # Origin is a non-browser client, which still needs the token.
        origin = _header(scope, b"origin")
        if origin is None:
            return True
        return origin in {f"http://{h}" for h in self.allowed_hosts}

    def _token_ok(self, scope: Scope) -> bool:
        presented = ""
        auth = _header(scope, b"authorization")
        if auth and auth.lower().startswith("bearer "):
            presented = auth[7:].strip()
        else:
            qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            presented = (qs.get("token") or [""])[0]
        return bool(presented) and hmac.compare_digest(presented.encode(), self.token.encode())

    # --- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        path = scope.get("path", "")
        why = None
        if path != "/ws":
            why = "not_found"
        elif not self._host_ok(scope):
            why = "host"
        elif not self._origin_ok(scope):
            why = "origin"
        elif not self._token_ok(scope):
            why = "token"
        if why is not None:
            self.metrics.refused.labels(f"ws_{why}").inc()
            log.info("tab refused from=%s why=%s", _remote(scope), why)
            await send({"type": "websocket.close", "code": 1008})  # before accept: 403
            return
        await send({"type": "websocket.accept"})
        await TabSession(self.hub, receive, send).run()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        if not self._host_ok(scope):
            await _json(send, 403, {"error": "host", "message": "unexpected Host header"})
            return
        if path in ("/", "/index.html") and method == "GET":
            page = resources.files("hd_node").joinpath("static/index.html").read_bytes()
            await _respond(send, 200, page, "text/html; charset=utf-8",
                           [(b"content-security-policy",
                             b"default-src 'self'; connect-src 'self'; "
                             b"style-src 'self' 'unsafe-inline'; script-src 'self' "
                             b"'unsafe-inline'; frame-ancestors 'none'")])
            return
        if path == "/healthz":
            await _json(send, 200, {"ok": True, "node_id": self.hub.identity.node_id,
                                    "sessions": len(self.hub.sessions)})
            return
        if path == "/metrics":
            await _respond(send, 200, self.metrics.render(), "text/plain; version=0.0.4")
            return
        if path.startswith("/api/"):
            if not self._origin_ok(scope) or not self._token_ok(scope):
                self.metrics.refused.labels("api_auth").inc()
                await _json(send, 403, {"error": "auth", "message": "token or origin refused"})
                return
            body = b""
            if method in ("POST", "PUT", "DELETE"):
                got = await _read_body(receive)
                if got is None:
                    await _json(send, 413, {"error": "too_large", "message": "body too large"})
                    return
                body = got
            await self._api(method, path, body, send)
            return
        await _json(send, 404, {"error": "not_found", "message": f"no route {path}"})

    async def _api(self, method: str, path: str, body: bytes, send: Send) -> None:
        try:
            data = json.loads(body) if body else {}
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            await _json(send, 400, {"error": "bad_json", "message": "body must be a JSON object"})
            return
        hub = self.hub
        try:
            if method == "GET" and path == "/api/self":
                await _json(send, 200, hub.self_info())
            elif method == "GET" and path == "/api/peers":
                await _json(send, 200, hub.list_peers())
            elif method == "GET" and path == "/api/invites":
                await _json(send, 200, hub.pairing.list_invites())
            elif method == "POST" and path == "/api/invites":
                ttl = data.get("ttl_s")
                if ttl is not None and (type(ttl) is not int or ttl <= 0):
                    raise HubError("bad_request", "ttl_s must be a positive integer")
                await _json(send, 200,
                            hub.pairing.create_invite(None if ttl is None else ttl * 1000))
            elif method == "POST" and path == "/api/invites/revoke":
                tid = data.get("token_id")
                if type(tid) is not str:
                    raise HubError("bad_request", "token_id must be a string")
                hub.pairing.revoke_invite(tid)
                await _json(send, 200, {"ok": True})
            elif method == "POST" and path == "/api/pair":
                inv = data.get("invite")
                if type(inv) is not str:
                    raise HubError("bad_request", "invite must be a string")
                peer = await hub.pairing.pair_redeem(inv)
                await _json(send, 200, {"ok": True, "peer": peer})
            elif method == "POST" and path == "/api/connect":
                addr = data.get("address")
                nid = data.get("node_id")
                if type(addr) is not str or (nid is not None and type(nid) is not str):
                    raise HubError("bad_request", "address must be a string")
                conn = await hub.dial(addr, expected_node_id=nid)
                await _json(send, 200, {"ok": True, "peer": hub.peer_info(conn.peer_id)})
            elif method == "GET" and path == "/api/metrics":
                await _json(send, 200, hub.metrics_view())
            else:
                await _json(send, 404, {"error": "not_found", "message": f"no route {path}"})
        except HubError as exc:
            status = 404 if exc.code == "not_found" else 400
            await _json(send, status, {"ok": False, "error": exc.code, "message": exc.message})


class PeerApp:
    """The peer listener: ``/peer-ws`` and nothing else."""

    def __init__(self, hub: PeerHub, metrics: NodeMetrics) -> None:
        self.hub = hub
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "http":
            await _json(send, 404, {"error": "not_found", "message": "only /peer-ws is served"})
        elif kind == "websocket":
            await receive()
            if scope.get("path") != "/peer-ws":
                self.metrics.refused.labels("peer_path").inc()
                await send({"type": "websocket.close", "code": 1008})
                return
            if not self.hub.can_accept():
                # SPEC 4: more than 64 handshakes in flight -> refuse the connection.
                self.metrics.refused.labels("busy").inc()
                log.info("peer link refused from=%s why=busy", _remote(scope))
                await send({"type": "websocket.close", "code": 1013})
                return
            await send({"type": "websocket.accept"})
            link = ServerLink(receive, send, _remote(scope))
            try:
                await self.hub.accept(link)
            finally:
                with trio.CancelScope(shield=True):
                    await link.close()
