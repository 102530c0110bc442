"""What the HTTP listener and an app agree on: the request it gets, the response it
gives, the interface it implements, and the limits the server enforces for it.

Why a module of its own: both :mod:`hd_shell.http.server` (the listener) and
:mod:`hd_shell.http.connection` (one connection) need these types, and the listener imports the
connection; keeping them here avoids an import cycle. Import them from
``hd_shell.http.server``, which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hd_shell.ws.inbound import WsBudget
from hd_shell.ws.link import WsLink


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string, percent-encoding kept as sent
    query: dict[str, list[str]]  # urllib.parse.parse_qs of the query string
    headers: tuple[tuple[str, str], ...]  # names lowercased, values latin-1, in order
    remote_addr: str | None  # peer IP as text
    body: bytes  # b"" for GET and for WebSocket upgrades
    websocket: bool  # an Upgrade: websocket request

    def header(self, name: str) -> str | None:
        """The value if the header appears exactly once, else None (a repeated security
        header is ambiguous: refuse to pick one)."""
        name = name.lower()
        found: str | None = None
        for k, v in self.headers:
            if k == name:
                if found is not None:
                    return None
                found = v
        return found


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class App(Protocol):
    async def http(self, request: Request) -> Response: ...

    def websocket_check(self, request: Request) -> Response | None:
        """None accepts the upgrade; a Response is sent instead (e.g. 403)."""
        ...

    async def websocket(self, request: Request, link: WsLink) -> None:
        """Owns ``link`` until it returns; the server then closes it."""
        ...


@dataclass(frozen=True)
class ServerLimits:
    max_head_bytes: int = 16 * 1024  # request line + headers (h11 max_incomplete_event_size)
    head_timeout_s: float = 10.0  # to receive a complete request head
    max_body_bytes: int = 64 * 1024  # 413 beyond
    body_timeout_s: float = 10.0
    keepalive_timeout_s: float = 30.0  # idle time between requests on one connection
    max_connections: int = 512  # open connections on this listener
    max_connections_per_address: int = 64  # open connections from one remote IP
    ws_max_message_bytes: int = 1 << 20
    ws_max_fragments: int = 1024
    ws_max_pings: int = 20  # per 10 s
    response_timeout_s: float = 10.0  # to write a response
    # New connections one remote IP may open per second (token bucket; 0 = no limit).
    new_connections_per_address_per_s: float = 0.0
    new_connections_per_address_burst: int = 0
    # What an upgraded WebSocket may send before the app calls link.authenticated()
    # (None: the app authenticated it before the upgrade, as /ws does with its token).
    ws_preauth: WsBudget | None = None


DEFAULT_LIMITS = ServerLimits()


__all__ = ["DEFAULT_LIMITS", "App", "Request", "Response", "ServerLimits"]
