"""The PeerHub: one per node process (SPEC 9), the place where the parts meet.

It builds and wires the parts — each of which knows only the ones below it, never the
hub — and runs the task nursery that links, reconnect loops and catch-ups live in:

- ``transports`` (the seam: direct WebSocket today; relay, WebRTC and LAN plug in here),
- ``connector`` (dial one candidate; the join ladder over many),
- ``sessions`` (one session per peer, owner of every link driver, message routing),
- ``trust`` (admission glue), ``peers`` (PeerInfo, presence, trust changes),
- ``features`` (panes and chat), ``agents`` (turns and calls), ``pairing`` (invites),
  ``reconnector``,
- ``bus`` (tabs) and ``commands`` (what /ws and /api may ask).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import trio

from hd_protocol import Connection, Identity, Policy, sort_candidates
from hd_protocol.limits import Limits
from hd_shell.clock import mono_ms, wall_ms

from ..config import Settings
from ..discovery.lobby import LobbyLink
from ..features import bench
from ..features.agent_backends import backend_from_spec
from ..features.agents import AgentRuntime
from ..features.collab import Features
from ..metrics import NodeMetrics
from ..store import NodeStore
from ..transports.addresses import FIRST_GATHER_WAIT_S, own_candidates, reflexive_for
from ..transports.seam import Link, Ticket, Transports
from ..web.commands import Commands
from .connector import Connector
from .linkdriver import LinkDriver, LinkLimits
from .pairing import Pairing
from .peers import Peers
from .reconnect import Reconnector
from .sessions import SessionRegistry
from .tabbus import TabBus, TabLimits
from .trust import Trust

log = logging.getLogger("hd_node.hub.peerhub")

CAPABILITIES = ["collab", "peerchat"]


def node_name_for(settings: Settings, store: NodeStore, identity: Identity) -> str:
    """The name we go by: the last one given — at this start (``--name``,
    ``HD_NODE_NAME``, ``nodeName``: it wins, and is kept for the starts without one) or
    from a tab since (``network rename``) — else ``node-`` and the start of our id."""
    if settings.node_name:
        if store.get_setting("node_name") != settings.node_name:
            store.set_setting("node_name", settings.node_name)
        return settings.node_name
    return store.get_setting("node_name") or f"node-{identity.node_id[:6]}"


class PeerHub:
    def __init__(
        self,
        identity: Identity,
        settings: Settings,
        store: NodeStore,
        metrics: NodeMetrics,
        *,
        limits: Limits,
        rng: Callable[[int], bytes] = os.urandom,
        link_limits: LinkLimits | None = None,
        tab_limits: TabLimits | None = None,
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.limits = limits
        self.rng = rng
        self.link_limits = link_limits or LinkLimits(write_timeout_s=settings.write_timeout_s)
        self.node_name = node_name_for(settings, store, identity)
        self.capabilities = list(CAPABILITIES)
        self.policy = Policy(trust_mode=settings.trust_mode,
                             directory_key=settings.directory_key or None)
        self.trust = Trust(identity, store, self.policy)
        self.sessions = SessionRegistry(identity, limits, store, metrics, self.trust)
        self.bus = TabBus(metrics, tab_limits or TabLimits())
        self.transports = Transports()
        self.connector = Connector(identity, self.transports, self.sessions, store,
                                   limits=limits, link_limits=self.link_limits, rng=rng,
                                   node_name=self.node_name, capabilities=self.capabilities)
        self.peers = Peers(identity, store, self.sessions, self.bus, metrics, limits=limits,
                           policy=self.policy, node_name=self.node_name,
                           capabilities=self.capabilities)
        self.features = Features(identity, store, self.sessions, self.bus, metrics,
                                 limits=limits, rng=rng, node_name=self.node_name)
        self.peers.chat = self.features.chat
        self.features.on_chat_change = self.peers.chat_changed
        self.peers.on_rename.append(self._renamed)
        self.connector.on_step = self._ladder_step
        self.connector.metrics = metrics
        self.pairing = Pairing(identity, store, self.peers, self.connector, limits=limits,
                               rng=rng, candidates=lambda: self.own_candidates())
        self.reconnector = Reconnector(
            store, self.sessions, self.connector, limits=limits, rng=rng,
            user_disconnected=lambda peer: peer in self.peers.manual_disconnect)
        # Candidates beyond our own listener (a relay's): the node says what it runs.
        self.extra_candidates: Callable[[], list[dict[str, Any]]] = list
        self.lobby = LobbyLink(identity, trust=self.trust, connector=self.connector,
                               peers=self.peers, bus=self.bus, limits=limits, rng=rng,
                               node_name=self.node_name, capabilities=self.capabilities,
                               url=settings.lobby_url or None,
                               addresses=self._registration_candidates,
                               pinned_key=(settings.directory_key or None)
                               if settings.trust_mode == "directory" else None)
        backend = (backend_from_spec(settings.agent_backend, node_id=identity.node_id)
                   if settings.agent_backend else None)
        if backend is not None and settings.allow_remote_agent:
            self.capabilities.append("agent")
        self.peers.self_extra["agent_backend"] = backend.name if backend else None
        self.agents = AgentRuntime(identity, self.sessions, self.features, self.peers,
                                   backend=backend, allow_remote=settings.allow_remote_agent,
                                   mode=settings.remote_agent_mode,
                                   timeout_ms=int(settings.agent_timeout_s * 1000), rng=rng)
        self.commands = Commands(node_id=identity.node_id, peers=self.peers,
                                 pairing=self.pairing, connector=self.connector,
                                 features=self.features, sessions=self.sessions,
                                 lobby=self.lobby, agents=self.agents)
        self.sessions.route("bench_echo", bench.answer)
        # SPEC 8.1: our server-reflexive address (iceEnabled, stunServer), and where our
        # listener is (its URL, its bound host) to build the candidates from.
        self.reflexive = reflexive_for(settings, metrics, on_change=self._reflexive_changed)
        self._listener: tuple[str, str] | None = None
        self.shutting_down = False
        self._nursery: trio.Nursery | None = None

    def _ladder_step(self, step: dict[str, Any]) -> None:
        self.bus.publish("network", "ladder", step)
        self.peers.ladder_step(step)

    def _renamed(self, name: str) -> None:
        """Our name changed (``network rename``): what we say from now on says it —
        handshakes, chat messages, the lobby at its next registration."""
        self.node_name = self.connector.node_name = self.lobby.node_name = name
        self.features.chat.self_name = name

    @property
    def guest_admissions(self) -> set[tuple[str, str]]:
        """SPEC 7.4: guests of rooms we host (node id, key); the lobby fills it."""
        return self.trust.guest_admissions

    # --- lifecycle --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            self._nursery = n
            self.connector.nursery = n
            self.features.nursery = n
            self.agents.nursery = n
            self.reconnector.nursery = n
            self.reconnector.start_all()
            n.start_soon(self.features.run_timers)
            n.start_soon(self.peers.monitor.run)
            n.start_soon(self.agents.run_timers)
            if self.reflexive is not None:
                n.start_soon(self.reflexive.run)
            n.start_soon(self._run_lobby)
            task_status.started()
            await trio.sleep_forever()

    def own_candidates(self) -> list[dict[str, Any]]:
        """Every way to reach us (SPEC 8.1): our listener's, then what else we run."""
        return sort_candidates([*self.peers.candidates, *self.extra_candidates()])

    def set_peer_url(self, url: str, bound_host: str) -> None:
        self.peers.peer_url = url
        self._listener = (url, bound_host)
        self._listener_candidates()

    def _listener_candidates(self) -> None:
        if self._listener is not None:
            self.peers.candidates = own_candidates(
                self.settings, *self._listener,
                reflexive=self.reflexive.host if self.reflexive else None)

    async def _run_lobby(self) -> None:
        """The lobby connection; the first registration waits a moment for our srflx
        address, so that it carries it (SPEC 8.1)."""
        if self.reflexive is not None:
            with trio.move_on_after(FIRST_GATHER_WAIT_S):
                await self.reflexive.gathered.wait()
        await self.lobby.run()

    def _registration_candidates(self) -> list[dict[str, Any]]:
        """What the lobby registers us with. A re-made lobby connection may mean a new
        network: the STUN server is asked again."""
        if self.reflexive is not None:
            self.reflexive.kick()
        return self.own_candidates()

    def _reflexive_changed(self) -> None:
        """A new srflx address joins our candidates (invites, presence). A lobby that
        registered us without it hears it by a new registration — unless rooms of ours
        are open there (re-registering closes them): then at the next one."""
        self._listener_candidates()
        client = self.lobby.client
        if client is None or client.addresses == self.own_candidates():
            return
        if self.lobby.hosted or self.lobby.joined:
            log.info("srflx address changed; the lobby hears it at the next registration "
                     "(rooms open there)")
            return
        log.info("srflx address changed: registering again with the lobby url=%s",
                 self.lobby.url)
        self.lobby.connect(None)

    def reserve(self, remote_addr: str | None) -> Ticket | None:
        """An inbound handshake slot (the transports' ``InboundGate``)."""
        if self.shutting_down:
            return None
        return self.sessions.reserve(remote_addr)

    async def accept(self, link: Link, ticket: Ticket) -> None:
        """Serve one inbound link for its whole life (called by a transport)."""
        conn = Connection.accept(
            self.identity, rng=self.rng, now=mono_ms(), wall=wall_ms(), limits=self.limits,
            link=link.kind, node_name=self.node_name, capabilities=self.capabilities,
        )
        driver = LinkDriver(link, conn, self.sessions, limits=self.link_limits)
        self.sessions.track(driver, None, ticket)
        await driver.run()

    async def shutdown(self) -> None:
        """Graceful: ``bye`` to every peer, then stop (SIGINT/SIGTERM)."""
        self.shutting_down = True
        self.reconnector.stopping = True
        drivers = list(self.sessions.sessions.values())
        for driver in drivers:
            driver.close("shutdown")
        with trio.move_on_after(3):
            for driver in drivers:
                await driver.finished.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
