"""Node settings (SPEC 10): config file (TOML) < environment < command line.

Names follow the spec's ``network.*`` keys. No default ever reaches a public server.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hd_protocol.limits import DEFAULT_LIMITS, Limits
from hd_protocol.reach.webrtc import IceConfig, ice_config

TRUST_MODES = ("manual", "open-lan", "directory")


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    node_name: str = ""
    ui_host: str = "127.0.0.1"
    ui_port: int = 8765
    peer_host: str = "0.0.0.0"  # noqa: S104 - the peer listener is meant to be reachable
    peer_port: int = 8766
    advertise: str = ""
    trust_mode: str = "manual"
    directory_key: str = ""
    lobby_url: str = ""
    relay_url: str = ""
    enable_direct: bool = True
    enable_lan_discovery: bool = False  # SPEC 8.5: mDNS announce, browse, LAN dials
    allow_loopback_candidates: bool = False
    ice_enabled: bool = False  # SPEC 8.1: learn and offer our server-reflexive address
    stun_server: str = ""  # host:port; none by default (SPEC 10: nothing public)
    # SPEC 8.4: the WebRTC transport (the `webrtc` extra); TURN only when configured.
    enable_webrtc: bool = False
    turn_urls: str = ""  # comma-separated turn:host:port URLs (a TOML list also works)
    turn_username: str = ""
    turn_credential: str = field(default="", repr=False)  # a secret: never in a repr
    ice_policy: str = "all"  # all | relay (relay: only through TURN)
    handshake_timeout_s: float = 10.0
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 5.0
    write_timeout_s: float = 10.0
    chat_ack_timeout_s: float = 30.0
    agent_backend: str = ""  # demo | openai:URL[#model] | command:CMD (SPEC 6.3)
    allow_remote_agent: bool = False
    remote_agent_mode: str = "plan"  # plan | acceptEdits | autonomous; others mean plan
    agent_timeout_s: float = 120.0
    agent_task_retention_s: float = 24 * 3600.0  # finished agent tasks are kept this long
    log_level: str = "INFO"
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> Settings:
        if self.trust_mode not in TRUST_MODES:
            raise ConfigError(f"trustMode must be one of {', '.join(TRUST_MODES)}")
        if self.trust_mode == "directory" and not self.directory_key:
            raise ConfigError("trustMode directory needs directoryKey (the lobby's server_key)")
        if len(self.node_name) > 64:
            raise ConfigError("nodeName is at most 64 characters")
        for name in ("ui_port", "peer_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be 0..65535")
        for name in ("handshake_timeout_s", "ping_interval_s", "ping_timeout_s",
                     "write_timeout_s", "chat_ack_timeout_s", "agent_timeout_s"):
            if not 0.05 <= getattr(self, name) <= 3600:
                raise ConfigError(f"{name} must be between 0.05 and 3600 seconds")
        if not 1 <= self.agent_task_retention_s <= 30 * 86400:
            raise ConfigError("agentTaskRetention must be between 1 s and 30 days (in s)")
        for name, key in (("lobby_url", "lobbyUrl"), ("relay_url", "relayUrl")):
            url_list(getattr(self, name), key)
        if self.agent_backend:
            try:
                parse_backend_spec(self.agent_backend)
            except ValueError as exc:
                raise ConfigError(f"agentBackend: {exc}") from None
        elif self.allow_remote_agent:
            raise ConfigError("allowRemoteAgent needs an agent: set agentBackend "
                              "(--agent-backend demo | openai:URL | command:CMD)")
        if self.advertise and not self.advertise.startswith(("ws://", "wss://")):
            raise ConfigError("advertise must be a ws:// or wss:// URL of /peer-ws")
        if self.stun_server:
            from hd_protocol.stun import parse_server

            try:
                parse_server(self.stun_server)
            except ValueError as exc:
                raise ConfigError(f"stunServer {self.stun_server!r}: {exc}") from None
        if self.enable_webrtc or self.turn_urls or self.ice_policy != "all":
            try:
                self.ice()
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.ice_enabled and not self.stun_server:
            raise ConfigError("iceEnabled needs stunServer (host:port of a STUN server; "
                              "none is built in)")
        return self

    @property
    def lobby_urls(self) -> tuple[str, ...]:
        """``lobbyUrl``: instances of one lobby, in the order the node tries them."""
        return url_list(self.lobby_url, "lobbyUrl")

    @property
    def relay_urls(self) -> tuple[str, ...]:
        """``relayUrl``: instances of one relay, in the order the node tries them."""
        return url_list(self.relay_url, "relayUrl")

    def ice(self) -> IceConfig:
        """The WebRTC ICE servers and policy (SPEC 8.4); ``ValueError`` if invalid."""
        return ice_config(self.stun_server, [u.strip() for u in self.turn_urls.split(",")],
                          self.turn_username, self.turn_credential, self.ice_policy)


def url_list(value: str, key: str) -> tuple[str, ...]:
    """A ``lobbyUrl`` / ``relayUrl`` setting read: one ws:// or wss:// URL, or several
    (a TOML list, or comma-separated in a flag or the environment: instances of one
    service, tried in this order). ``ConfigError`` names the entry that is wrong."""
    if not value.strip():
        return ()
    urls = tuple(u.strip() for u in value.split(","))
    for i, url in enumerate(urls, 1):
        where = f"{key} entry {i}" if len(urls) > 1 else key
        if not url:
            raise ConfigError(f"{where} is empty (URLs are separated by one comma)")
        if not url.startswith(("ws://", "wss://")) or len(url) <= len("wss://"):
            raise ConfigError(f"{where} {url[:200]!r} must be a ws:// or wss:// URL")
        if any(c.isspace() for c in url):
            raise ConfigError(f"{where} {url[:200]!r} has a space in it")
        if url in urls[:i - 1]:
            raise ConfigError(f"{where} {url[:200]!r} is listed twice")
    return urls


# file key (network.*) -> Settings attribute
_FILE_KEYS = {
    "nodeName": "node_name",
    "trustMode": "trust_mode",
    "directoryKey": "directory_key",
    "lobbyUrl": "lobby_url",
    "relayUrl": "relay_url",
    "advertisedAddress": "advertise",
    "enableDirect": "enable_direct",
    "enableLanDiscovery": "enable_lan_discovery",
    "uiHost": "ui_host",
    "uiPort": "ui_port",
    "peerHost": "peer_host",
    "peerPort": "peer_port",
    "allowLoopbackCandidates": "allow_loopback_candidates",
    "iceEnabled": "ice_enabled",
    "stunServer": "stun_server",
    "enableWebRtc": "enable_webrtc",
    "turnUrls": "turn_urls",
    "turnUsername": "turn_username",
    "turnCredential": "turn_credential",
    "icePolicy": "ice_policy",
    "handshakeTimeout": "handshake_timeout_s",
    "pingInterval": "ping_interval_s",
    "pingTimeout": "ping_timeout_s",
    "writeTimeout": "write_timeout_s",
    "chatAckTimeout": "chat_ack_timeout_s",
    "agentBackend": "agent_backend",
    "allowRemoteAgent": "allow_remote_agent",
    "remoteAgentMode": "remote_agent_mode",
    "agentTimeout": "agent_timeout_s",
    "agentTaskRetention": "agent_task_retention_s",
}
_ENV_KEYS = {
    "HD_NODE_NAME": "node_name",
    "HD_TRUST_MODE": "trust_mode",
    "HD_ADVERTISE": "advertise",
    "HD_LOBBY_URL": "lobby_url",
    "HD_RELAY_URL": "relay_url",
    "HD_UI_HOST": "ui_host",
    "HD_UI_PORT": "ui_port",
    "HD_PEER_HOST": "peer_host",
    "HD_PEER_PORT": "peer_port",
    "HD_AGENT_BACKEND": "agent_backend",
    "HD_ENABLE_LAN_DISCOVERY": "enable_lan_discovery",
    "HD_ICE_ENABLED": "ice_enabled",
    "HD_STUN_SERVER": "stun_server",
    "HD_ENABLE_WEBRTC": "enable_webrtc",
    "HD_TURN_URLS": "turn_urls",
    "HD_TURN_USERNAME": "turn_username",
    "HD_TURN_CREDENTIAL": "turn_credential",
    "HD_ICE_POLICY": "ice_policy",
}


def _coerce(name: str, value: Any) -> Any:
    types = {f.name: f.type for f in fields(Settings)}
    t = types[name]
    try:
        if t in ("int", int):
            return int(value)
        if t in ("float", float):
            return float(value)
        if t in ("bool", bool):
            if isinstance(value, bool):
                return value
            return str(value).lower() in ("1", "true", "yes", "on")
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a valid {t}") from None
    if isinstance(value, list):  # a TOML array for a list setting (turnUrls, lobbyUrl)
        return ",".join(str(v) for v in value)
    return str(value)


def load_settings(
    data_dir: str | None,
    *,
    config_file: str | None = None,
    cli: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    dd = data_dir or env.get("HD_DATA_DIR")
    if not dd:
        raise ConfigError("no data directory: pass --data-dir or set HD_DATA_DIR")
    s = Settings(data_dir=Path(dd).expanduser().resolve())
    updates: dict[str, Any] = {}
    if config_file:
        try:
            with open(config_file, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
        net = doc.get("network", {})
        if not isinstance(net, dict):
            raise ConfigError("[network] must be a table")
        for key, value in net.items():
            attr = _FILE_KEYS.get(key)
            if attr is None:
                extra = dict(s.extra)
                extra[key] = value
                s = replace(s, extra=extra)
                continue
            updates[attr] = _coerce(attr, value)
    for key, attr in _ENV_KEYS.items():
        if key in env:
            updates[attr] = _coerce(attr, env[key])
    for attr, value in (cli or {}).items():
        if value is not None:
            updates[attr] = _coerce(attr, value)
    return replace(s, **updates).check()


def limits_for(settings: Settings) -> Limits:
    """SPEC 11 limits with the timings this node was configured with."""
    return replace(
        DEFAULT_LIMITS,
        handshake_timeout_ms=int(settings.handshake_timeout_s * 1000),
        ping_interval_ms=int(settings.ping_interval_s * 1000),
        ping_timeout_ms=int(settings.ping_timeout_s * 1000),
        chat_ack_timeout_ms=int(settings.chat_ack_timeout_s * 1000),
    )


_URL = re.compile(r"https?://(\[[0-9a-fA-F:.]+\]|[^\s/?#@:\[\]]+)(:[0-9]{1,5})?(/\S*)?")


@dataclass(frozen=True)
class BackendSpec:
    """``agentBackend`` read: ``demo``, ``openai`` (``url``, ``model``) or ``command``
    (``argv``). ``features.agent_backends`` builds the backend from it."""

    kind: str
    url: str = ""
    model: str = ""
    argv: tuple[str, ...] = ()


def parse_backend_spec(spec: str) -> BackendSpec:
    """``demo`` | ``openai:URL[#model]`` | ``command:CMD`` (CMD split as a shell would,
    not run by one). A bad spec raises ValueError with a one-line message."""
    kind, colon, rest = spec.strip().partition(":")
    if spec.strip() == "demo":
        return BackendSpec("demo")
    if kind == "openai" and colon:
        url, _, model = (part.strip() for part in rest.partition("#"))
        if not _URL.fullmatch(url):
            raise ValueError("agent backend openai needs an http(s) URL: openai:URL[#model]")
        return BackendSpec("openai", url=url, model=model)
    if kind == "command" and colon:
        try:
            argv = shlex.split(rest)
        except ValueError as e:
            raise ValueError(f"agent backend command: {e}") from None
        return BackendSpec("command", argv=tuple(argv))
    raise ValueError(f"unknown agent backend {kind[:40]!r}: use demo, openai:URL[#model] "
                     "or command:CMD")
