"""The local listener (default 127.0.0.1:8765): ``/`` (the page), ``/ws`` (tabs),
``/api/...`` (the CLI), ``/healthz``, ``/metrics``.

``/ws`` and ``/api`` need the local access token; a browser ``Origin`` other than our
own, or a ``Host`` that is not us (DNS rebinding), is refused with 403. ``/api`` is a
thin HTTP face of the same command layer ``/ws`` uses (``commands.Commands``).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from importlib import resources
from typing import Any

from hd_protocol import ProtocolError
from hd_shell.http.server import Request, Response
from hd_shell.ws.link import WsLink

from .. import __version__
from ..errors import HubError
from ..files import healthz_proof
from ..hub.sessions import SessionRegistry
from ..hub.tabbus import TabBus
from ..metrics import NodeMetrics
from .commands import Commands
from .tabs import TabSession

log = logging.getLogger("hd_node.web")

# The page is static files only (no inline script or style): data from peers can never
# run as code, even if a bug put it into markup.
PAGE_CSP = ("default-src 'self'; connect-src 'self'; style-src 'self'; script-src 'self'; "
            "img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
PAGE_HEADERS = (("content-security-policy", PAGE_CSP), ("referrer-policy", "no-referrer"))

# What /static/ serves: exactly these files of the package's static/ folder, by name
# (no path is ever built from the request, so nothing else can be reached).
_JS = "text/javascript; charset=utf-8"
STATIC_FILES: dict[str, str] = {
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
    **{f"{name}.js": _JS for name in (
        "app", "ws", "dom", "store", "peers", "chat", "panes", "rebase", "pairing",
        "monitor", "lobby", "agent", "tasks", "qrcode")},
}

# /api routes -> (channel, event, what the body becomes, what the answer becomes)
_API: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", "/api/self"): ("network", "self"),
    ("GET", "/api/peers"): ("network", "list_peers"),
    ("GET", "/api/invites"): ("network", "invite_list"),
    ("POST", "/api/invites"): ("network", "invite_create"),
    ("POST", "/api/invites/revoke"): ("network", "invite_revoke"),
    ("POST", "/api/pair"): ("network", "pair_redeem"),
    ("POST", "/api/connect"): ("network", "connect"),
    ("GET", "/api/metrics"): ("network", "list_metrics"),
    ("GET", "/api/lobby"): ("lobby", "state"),
}


def json_response(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj).encode())


class LocalApp:
    def __init__(self, *, commands: Commands, bus: TabBus, sessions: SessionRegistry,
                 metrics: NodeMetrics, token: str, node_id: str, max_frame_bytes: int,
                 nonce: str = "") -> None:
        self.commands = commands
        self.bus = bus
        self.sessions = sessions
        self.metrics = metrics
        self.token = token
        self.node_id = node_id
        self.nonce = nonce
        self.max_frame_bytes = max_frame_bytes
        self.allowed_hosts: set[str] = set()

    def set_bound(self, host: str, port: int) -> None:
        names = {host, "127.0.0.1", "localhost", "[::1]"}
        self.allowed_hosts = {f"{h}:{port}" for h in names}

    # --- checks -----------------------------------------------------------------------

    def _host_ok(self, req: Request) -> bool:
        host = req.header("host")
        return host is not None and host in self.allowed_hosts

    def _origin_ok(self, req: Request) -> bool:
        # Browsers always send Origin on WebSocket and cross-site requests; a missing
        # Origin is a non-browser client, which still needs the token.
        origin = req.header("origin")
        if origin is None:
            return not any(k == "origin" for k, _ in req.headers)  # two Origins: no
        return origin in {f"http://{h}" for h in self.allowed_hosts}

    def _token_ok(self, req: Request) -> bool:
        presented = ""
        auth = req.header("authorization")
        if auth and auth.lower().startswith("bearer "):
            presented = auth[7:].strip()
        else:
            presented = (req.query.get("token") or [""])[0]
        return bool(presented) and hmac.compare_digest(presented.encode(), self.token.encode())

    # --- WebSocket (App) ----------------------------------------------------------------

    def websocket_check(self, req: Request) -> Response | None:
        why = None
        if req.path != "/ws":
            why = "not_found"
        elif not self._host_ok(req):
            why = "host"
        elif not self._origin_ok(req):
            why = "origin"
        elif not self._token_ok(req):
            why = "token"
        if why is None:
            return None
        self.metrics.refused.labels(f"ws_{why}").inc()
        log.info("tab refused from=%s why=%s", req.remote_addr, why)
        return json_response(403, {"error": why, "message": "refused"})

    async def websocket(self, req: Request, link: WsLink) -> None:
        await TabSession(self.bus, self.commands, self.metrics, link,
                         max_frame_bytes=self.max_frame_bytes, node_id=self.node_id,
                         version=__version__).run()

    # --- HTTP (App) -----------------------------------------------------------------------

    async def http(self, req: Request) -> Response:
        if not self._host_ok(req):
            return json_response(403, {"error": "host", "message": "unexpected Host header"})
        path, method = req.path, req.method
        if path in ("/", "/index.html") and method in ("GET", "HEAD"):
            page = resources.files("hd_node").joinpath("static/index.html").read_bytes()
            return Response(200, page, "text/html; charset=utf-8", PAGE_HEADERS)
        if path.startswith("/static/") and method in ("GET", "HEAD"):
            return _static(path[len("/static/"):])
        if path == "/healthz":
            return json_response(200, self._healthz(req))
        if path == "/metrics":  # per-peer series only with the token: they name peers
            return Response(200, self.metrics.render(with_peers=self._token_ok(req)),
                            "text/plain; version=0.0.4")
        if path.startswith("/api/"):
            if not self._origin_ok(req) or not self._token_ok(req):
                self.metrics.refused.labels("api_auth").inc()
                return json_response(403, {"error": "auth",
                                           "message": "token or origin refused"})
            return await self._api(req)
        return json_response(404, {"error": "not_found", "message": f"no route {path}"})

    def _healthz(self, req: Request) -> dict[str, Any]:
        """No token needed. ``node_id`` and the per-start ``nonce`` let the CLI check that
        the process on the port of node.json is the one that wrote it before it sends the
        token. The nonce is public (anyone may ask), so a process that asked before the
        node died could repeat it: for that, ``?challenge=HEX`` (32..128 hex digits, the
        caller's fresh random) adds ``proof``, an HMAC keyed with the token that only the
        holder of the token can compute, and that reveals nothing about it."""
        out: dict[str, Any] = {"ok": True, "node_id": self.node_id, "nonce": self.nonce,
                               "sessions": len(self.sessions.sessions)}
        challenge = (req.query.get("challenge") or [""])[0]
        if _CHALLENGE.fullmatch(challenge):
            out["proof"] = healthz_proof(self.token, self.node_id, self.nonce, challenge)
        return out

    async def _api(self, req: Request) -> Response:
        route = _API.get((req.method, req.path))
        if route is None:
            return json_response(404, {"error": "not_found", "message": f"no route {req.path}"})
        try:
            data = json.loads(req.body) if req.body else {}
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            return json_response(400, {"error": "bad_json",
                                       "message": "body must be a JSON object"})
        channel, event = route
        if event == "invite_create" and "ttl_s" in data:
            data["ttl"] = data.pop("ttl_s")
        try:
            answer = await self.commands.run(channel, event, data)
        except (HubError, ProtocolError) as exc:
            status = 404 if exc.code == "not_found" else 400
            return json_response(status, {"ok": False, "error": exc.code,
                                          "message": exc.message})
        assert answer is not None
        out = answer.data
        if event == "pair_redeem" and not out.get("ok"):
            return json_response(400, out)
        return json_response(200, _api_view(event, out))


_CHALLENGE = re.compile(r"[0-9a-f]{32,128}")


def _static(name: str) -> Response:
    content_type = STATIC_FILES.get(name)
    if content_type is None:
        return json_response(404, {"error": "not_found", "message": "no such file"})
    body = resources.files("hd_node").joinpath("static").joinpath(name).read_bytes()
    return Response(200, body, content_type, PAGE_HEADERS)


def _api_view(event: str, data: dict[str, Any]) -> Any:
    """What the CLI's API returns for each command (kept from before the command layer)."""
    if event == "list_peers":
        return data["peers"]
    if event == "invite_list":
        return data["invites"]
    if event == "list_metrics":
        return data["metrics"]
    if event == "invite_revoke":
        return {"ok": True}
    if event == "connect":
        return {"ok": True, "peer": data["peer"]}
    return data
