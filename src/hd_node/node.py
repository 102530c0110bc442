"""The node's composition root, and running it: open the store, build the parts, bind
both listeners, run them, write node.json.

``compose`` is the one place the node's parts are made and joined: the hub (sessions,
connector, peers, pairing, reconnecting), the transports under it, discovery and the
features on it, the commands and the web on top. Each part gets what it uses when it is
built; none reaches into another to wire it.

Start-up refuses rather than guesses: a damaged key or database, or a missing key that
stored peers pinned, stops the node with one line (``files.DataError``) and leaves every
file as it was.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from hd_protocol import ChatLog, Identity, make_candidate
from hd_protocol.limits import Limits
from hd_protocol.reach.webrtc import CAPABILITY as WEBRTC
from hd_shell.errors import find, url_host
from hd_shell.http.server import ServerLimits, serve
from hd_shell.logs import own_logs
from hd_shell.rlimits import raise_open_file_limit

from . import files
from .config import Settings, limits_for
from .dbfile import stored_peer_count
from .discovery.lan import LanDiscovery, lan_transport
from .discovery.lobby import LobbyLink
from .failover import relay_urls_for
from .features import bench
from .features.agent_backends import backend_from_spec
from .features.agent_tasks import AgentTasks
from .features.agents import AgentRuntime
from .features.collab import Features
from .hub.linkdriver import LinkLimits
from .hub.peerhub import PeerHub, node_name_for
from .hub.tabbus import TabLimits
from .hub.tasks import Tasks
from .metrics import NodeMetrics
from .store import NodeStore
from .transports.addresses import FIRST_GATHER_WAIT_S, Reflexive, reflexive_for
from .transports.direct import DirectTransport
from .transports.relay import RelayTransport
from .transports.seam import Link, Ticket
from .transports.webrtc.transport import WebRtcTransport, webrtc_transport
from .web.app import LocalApp
from .web.commands import Commands

log = logging.getLogger("hd_node")


class ListenError(Exception):
    """A listener could not bind: the one line says which port, which flag sets it, and
    what to do (the CLI prints it and exits 1)."""


async def _listen(nursery: trio.Nursery, serve_fn: Any, what: str, flag: str, host: str,
                  port: int) -> Any:
    """``nursery.start(serve_fn)``, with a bind failure turned into a ``ListenError``."""
    try:
        return await nursery.start(serve_fn)
    except BaseException as exc:
        err = find(exc, OSError, alone=True)  # a failed bind
        if err is None:
            raise
        where = f"{url_host(host)}:{port}"
        if err.errno == errno.EADDRINUSE:
            raise ListenError(f"cannot start: the {what} port {port} ({where}, {flag}) is in "
                              f"use; stop what uses it, or start with {flag} 0 (any free "
                              f"port)") from None
        host_flag = flag.replace("-port", "-host")
        raise ListenError(f"cannot start: the {what} listener cannot bind {where} "
                          f"({host_flag}, {flag}): {err.strerror or err}") from None


@dataclass
class DataDir:
    lock_fd: int
    identity: Identity
    token: str
    store: NodeStore
    identity_is_new: bool


def open_data_dir(data_dir: Path, *, new_identity: bool = False) -> DataDir:
    """Lock the data directory and open what it holds.

    Modes are checked first (a loose file is tightened, a loose directory gets the fix
    in a warning). The key is read before the database, so that a 0-byte ``node.db``
    next to a key counts as a truncation, and a missing key is only replaced when the
    database holds no peer that pinned it (or ``new_identity`` says so)."""
    files.ensure_data_dir(data_dir)
    lock_fd = files.lock_data_dir(data_dir)
    store: NodeStore | None = None
    try:
        files.check_modes(data_dir)
        files.tidy_data_dir(data_dir)
        db = data_dir / files.DB_FILE
        identity = files.load_identity(data_dir)
        created = identity is None
        if identity is not None and new_identity:
            raise files.DataError(
                f"--new-identity is for a data directory without an identity key, and "
                f"{data_dir / files.KEY_FILE} exists; move it aside first to really start a "
                f"new identity ({files.NEW_IDENTITY_COST})")
        store = NodeStore(db, empty_is_damage=not created)
        if identity is None:  # only once the database is known to be sound
            identity = files.start_new_identity(
                data_dir, stored_peers=stored_peer_count(db), allowed=new_identity)
        token = files.load_or_create_token(data_dir)
    except BaseException:
        if store is not None:
            store.close()
        os.close(lock_fd)
        raise
    return DataDir(lock_fd, identity, token, store, created)


CAPABILITIES = ["collab", "peerchat"]


@dataclass
class Parts:
    """The node minus its listeners: what ``compose`` built, and how it runs."""

    identity: Identity
    store: NodeStore
    tasks: Tasks
    hub: PeerHub
    direct: DirectTransport
    relay: RelayTransport
    webrtc: WebRtcTransport | None
    reflexive: Reflexive | None
    features: Features
    agents: AgentRuntime
    agent_tasks: AgentTasks
    lobby: LobbyLink
    lan: LanDiscovery | None
    commands: Commands

    # What tests and the web reach through the parts.
    @property
    def transports(self) -> Any:
        return self.hub.transports

    @property
    def connector(self) -> Any:
        return self.hub.connector

    @property
    def sessions(self) -> Any:
        return self.hub.sessions

    @property
    def peers(self) -> Any:
        return self.hub.peers

    @property
    def bus(self) -> Any:
        return self.hub.bus

    def own_candidates(self) -> list[dict[str, Any]]:
        return self.hub.own_candidates()

    def set_peer_url(self, url: str, bound_host: str) -> None:
        self.hub.set_peer_url(url, bound_host)

    def reserve(self, remote_addr: str | None) -> Ticket | None:
        """The transports' ``InboundGate`` is the hub's."""
        return self.hub.reserve(remote_addr)

    async def accept(self, link: Link, ticket: Ticket) -> None:
        await self.hub.accept(link, ticket)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Everything but the listeners, until ``shutdown``."""
        async with trio.open_nursery() as n:
            self._scope = n.cancel_scope
            await n.start(self.tasks.run)
            await n.start(self.hub.run)
            n.start_soon(self.features.run_timers)
            n.start_soon(self.agents.run_timers)
            n.start_soon(self.agent_tasks.run)
            if self.reflexive is not None:
                n.start_soon(self.reflexive.run)
            n.start_soon(self._run_lobby)
            await n.start(partial(self.relay.serve, self.hub))
            if self.webrtc is not None:
                await n.start(partial(self.webrtc.serve, self.hub))
            task_status.started()

    async def _run_lobby(self) -> None:
        """The lobby connection; the first registration waits a moment for our srflx
        address, so that it carries it (SPEC 8.1)."""
        if self.reflexive is not None:
            with trio.move_on_after(FIRST_GATHER_WAIT_S):
                await self.reflexive.gathered.wait()
        await self.lobby.run()

    async def shutdown(self) -> None:
        """Graceful: ``bye`` to every peer, then stop what ``run`` started."""
        await self.hub.shutdown()
        self._scope.cancel()

    _scope: trio.CancelScope = field(default_factory=trio.CancelScope, init=False)


def compose(identity: Identity, settings: Settings, store: NodeStore, metrics: NodeMetrics,
            *, limits: Limits, rng: Callable[[int], bytes] = os.urandom,
            link_limits: LinkLimits | None = None,
            tab_limits: TabLimits | None = None) -> Parts:
    """Build the node's parts and join them (the one composition root)."""
    tasks = Tasks()
    node_name = node_name_for(settings, store, identity)
    backend = (backend_from_spec(settings.agent_backend, node_id=identity.node_id)
               if settings.agent_backend else None)
    # SPEC 8.4: WebRTC through lobby signalling, when enabled and aiortc is installed.
    webrtc = webrtc_transport(identity, settings, limits, metrics,
                              send_signal=lambda *signal: lobby.send_signal(*signal))
    capabilities = list(CAPABILITIES)
    if backend is not None and settings.allow_remote_agent:
        capabilities.append("agent")
    if webrtc is not None:
        capabilities.append(WEBRTC)  # in our lobby entry: room guests may offer
    chat = ChatLog(identity.node_id, rng=rng, messages=store.load_messages(),
                   read_marks=store.load_read_marks(), self_name=node_name, limits=limits)

    def relay_urls() -> list[str]:
        ring = lobby.ring
        return relay_urls_for(settings.relay_urls, lobby.url, ring.urls if ring else ())

    def relay_candidates() -> list[dict[str, Any]]:
        url = relay.own_url()
        return [make_candidate("relay", url, 65535)] if url else []

    def relay_moved() -> None:
        """Our own relay is on another instance: the lobby registers our new candidate."""
        lobby.addresses_changed(hub.own_candidates())

    def reflexive_changed() -> None:
        """A new srflx address joins our candidates (invites, presence, the lobby)."""
        hub.refresh_candidates()
        lobby.addresses_changed(hub.own_candidates())

    def registration_candidates() -> list[dict[str, Any]]:
        """What the lobby registers us with. A re-made lobby connection may mean a new
        network: the STUN server is asked again."""
        if reflexive is not None:
            reflexive.kick()
        return hub.own_candidates()

    # SPEC 8.1: our server-reflexive address (iceEnabled, stunServer).
    reflexive = reflexive_for(settings, metrics, on_change=reflexive_changed)
    hub = PeerHub(identity, settings, store, metrics, limits=limits, rng=rng,
                  node_name=node_name, capabilities=capabilities, chat=chat, tasks=tasks,
                  self_extra={"agent_backend": backend.name if backend else None},
                  reflexive=reflexive, extra_candidates=relay_candidates,
                  directory_listed=lambda node_id, key: lobby.listed(node_id, key),
                  link_limits=link_limits, tab_limits=tab_limits)
    direct = DirectTransport(host=settings.peer_host, port=settings.peer_port,
                             max_message_bytes=limits.max_envelope_bytes, metrics=metrics)
    hub.transports.add(direct)
    # The relay transport is always there: a guest may have to reach a room host
    # through the host's relay. Our own relay (relayUrl, else the one beside the lobby
    # we are connected to) is kept attached and offered as a candidate (SPEC 8.1).
    relay = RelayTransport(identity, max_envelope_bytes=limits.max_envelope_bytes,
                           rng=os.urandom, default_url=relay_urls, on_move=relay_moved)
    hub.transports.add(relay)
    if webrtc is not None:
        hub.transports.add(webrtc)
    features = Features(identity, store, hub.sessions, hub.bus, metrics, limits=limits,
                        chat=chat, tasks=tasks, on_chat_change=hub.peers.chat_changed)
    hub.peers.on_renamed(chat.rename)
    agents = AgentRuntime(identity, hub.sessions, features, hub.peers, backend=backend,
                          allow_remote=settings.allow_remote_agent,
                          mode=settings.remote_agent_mode,
                          timeout_ms=int(settings.agent_timeout_s * 1000), rng=rng,
                          tasks=tasks)
    agent_tasks = AgentTasks(agents, hub.bus, store, tasks, rng=rng,
                             retention_ms=int(settings.agent_task_retention_s * 1000),
                             timeout_ms=int(settings.agent_timeout_s * 1000))
    lobby = LobbyLink(identity, trust=hub.trust, connector=hub.connector, peers=hub.peers,
                      bus=hub.bus, limits=limits, rng=rng, node_name=node_name,
                      capabilities=capabilities, urls=settings.lobby_urls,
                      addresses=registration_candidates,
                      pinned_key=(settings.directory_key or None)
                      if settings.trust_mode == "directory" else None,
                      on_signal=webrtc.on_signal if webrtc is not None else None,
                      on_url_change=relay.default_url_changed, relay_state=relay.state)
    hub.peers.on_renamed(lobby.rename)
    # SPEC 8.5: mDNS discovery, dialling over the `lan` kind of the direct transport.
    lan = None
    if settings.enable_lan_discovery:
        lan = LanDiscovery(hub, metrics, direct,
                           include_loopback=settings.allow_loopback_candidates)
        hub.transports.add(lan_transport(direct))
    commands = Commands(node_id=identity.node_id, peers=hub.peers, pairing=hub.pairing,
                        connector=hub.connector, features=features, sessions=hub.sessions,
                        lobby=lobby, agent_tasks=agent_tasks,
                        lan_peers=lan.answer if lan is not None else None)
    hub.sessions.route("bench_echo", bench.answer)
    return Parts(identity, store, tasks, hub, direct, relay, webrtc, reflexive, features,
                 agents, agent_tasks, lobby, lan, commands)


class Node:
    def __init__(self, settings: Settings, limits: Limits | None = None, *,
                 new_identity: bool = False) -> None:
        self.settings = settings
        self.limits = limits_for(settings) if limits is None else limits
        opened = open_data_dir(settings.data_dir, new_identity=new_identity)
        self._lock_fd, self.identity, self.token = opened.lock_fd, opened.identity, opened.token
        self.store = opened.store
        self._identity_is_new = opened.identity_is_new
        # Fresh per start and not secret: it lets the CLI tell this process from
        # whatever listens on the port of a stale node.json (see /healthz).
        self.nonce = secrets.token_hex(16)
        self.metrics = NodeMetrics()
        self.parts = compose(self.identity, settings, self.store, self.metrics,
                             limits=self.limits)
        self.hub = self.parts.hub
        self.direct, self.lan = self.parts.direct, self.parts.lan
        self.info: dict[str, Any] = {}

    async def run(self, *, task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        own_logs("hd_node")  # the kit's lines (HTTP, WebSocket) as hd_node.http, hd_node.ws
        s = self.settings
        hub = self.hub
        nofile, nofile_hard, nofile_max = raise_open_file_limit()
        parts = self.parts
        local_app = LocalApp(commands=parts.commands, bus=hub.bus, sessions=hub.sessions,
                             metrics=self.metrics, token=self.token,
                             node_id=self.identity.node_id, nonce=self.nonce,
                             max_frame_bytes=self.limits.max_ws_frame_bytes)
        stop = trio.Event()
        try:
            # Signals are ours from the first moment: one that comes during the start is
            # kept and acted on once the start is done (never a KeyboardInterrupt that
            # lands in the middle of a write) — and so is one that comes while we tidy up
            # (`make run` may pass a second one on).
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
                try:
                    async with trio.open_nursery() as n:
                        n.start_soon(self._watch_signals, received, stop)
                        await n.start(parts.run)
                        ui_limits = ServerLimits(
                            ws_max_message_bytes=self.limits.max_ws_frame_bytes)
                        _, ui_port = await _listen(n, partial(
                            serve, local_app, s.ui_host, s.ui_port, limits=ui_limits, name="ui",
                            count=lambda why: self.metrics.listener.labels("ui", why).inc()),
                            "UI", "--ui-port", s.ui_host, s.ui_port)
                        local_app.set_bound(s.ui_host, ui_port)
                        peer_port = None
                        if s.enable_direct:
                            _, peer_port = await _listen(n, partial(self.direct.serve, hub),
                                                         "peer", "--peer-port", s.peer_host,
                                                         s.peer_port)
                            host = s.peer_host
                            shown = url_host(
                                "127.0.0.1" if host in ("0.0.0.0", "") else host)  # noqa: S104
                            hub.set_peer_url(f"ws://{shown}:{peer_port}/peer-ws", host)
                        if self.lan is not None:
                            await n.start(self.lan.run, peer_port)
                        self._announce(ui_port, nofile, nofile_hard, nofile_max)
                        task_status.started(self.info)
                        await stop.wait()
                        if self.lan is not None:  # the goodbye before the byes
                            await self.lan.aclose()
                        await parts.shutdown()
                        n.cancel_scope.cancel()
                finally:
                    self._tidy()
        finally:
            self._tidy()

    def _tidy(self) -> None:
        """Remove node.json, close the store, let the lock go (once)."""
        if self._lock_fd < 0:
            return
        files.remove_node_json(self.settings.data_dir)
        self.store.close()
        os.close(self._lock_fd)
        self._lock_fd = -1

    def _announce(self, ui_port: int, nofile: int, nofile_hard: int,
                  nofile_max: bool) -> None:
        """``node.json`` for the CLI and the tests, and the start in the log."""
        s, hub = self.settings, self.hub
        ui_host = url_host(s.ui_host)
        self.info = {
            "pid": os.getpid(),
            "node_id": self.identity.node_id,
            "ui_url": f"http://{ui_host}:{ui_port}/",
            "ws_url": f"ws://{ui_host}:{ui_port}/ws",
            "peer_url": hub.peers.peer_url,
            "token": self.token,
            "nonce": self.nonce,
        }
        log.info("node listening node_id=%s ui=%s peer=%s", self.identity.node_id,
                 self.info["ui_url"], hub.peers.peer_url or "-")
        # Logged only now: a start that fails says so in one line on stderr.
        check_ms = self.store.check_ms
        log.info("data directory path=%s identity=%s database=%s", s.data_dir,
                 "new" if self._identity_is_new else "loaded",
                 "new" if check_ms is None else f"integrity-ok ms={check_ms:.0f}")
        hard = "unlimited" if nofile_hard == resource.RLIM_INFINITY else nofile_hard
        if nofile_max:
            log.info("open file limit nofile=%s hard=%s", nofile, hard)
        else:
            log.warning("open file limit could not be raised nofile=%s hard=%s", nofile, hard)
        # Last: node.json is what the CLI and `make run` wait for, so every start-up line
        # above is in the log by the time anyone reads it.
        files.write_node_json(s.data_dir, self.info)

    async def _watch_signals(self, signals: AsyncIterator[int], stop: trio.Event) -> None:
        async for signum in signals:
            log.info("signal received signal=%s: shutting down", signal.Signals(signum).name)
            stop.set()
            return
