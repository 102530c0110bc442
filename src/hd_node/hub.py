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

from . import bench
from .addresses import own_candidates
from .agent_backends import backend_from_spec
from .agents import AgentRuntime
from .clock import mono_ms, wall_ms
from .commands import Commands
from .config import Settings
from .connector import Connector
from .features import Features
from .linkdriver import LinkDriver, LinkLimits
from .lobbylink import LobbyLink
from .metrics import NodeMetrics
from .pairing import Pairing
from .peers import Peers
from .reconnect import Reconnector
from .sessions import SessionRegistry
from .store import NodeStore
from .tabbus import TabBus, TabLimits
from .transport import Link, Ticket, Transports
from .trust import Trust

log = logging.getLogger("hd_node.hub")

CAPABILITIES = ["collab", "peerchat"]


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
        self.node_name = settings.node_name or f"node-{identity.node_id[:6]}"
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
        self.connector.on_step = lambda step: self.bus.publish("network", "ladder", step)
        self.peers = Peers(identity, store, self.sessions, self.bus, metrics, limits=limits,
                           policy=self.policy, node_name=self.node_name,
                           capabilities=self.capabilities)
        self.features = Features(identity, store, self.sessions, self.bus, metrics,
                                 limits=limits, rng=rng, node_name=self.node_name)
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
                               url=settings.lobby_url or None, addresses=self.own_candidates,
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
        self.shutting_down = False
        self._nursery: trio.Nursery | None = None

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
            n.start_soon(self.lobby.run)
            task_status.started()
            await trio.sleep_forever()

    def own_candidates(self) -> list[dict[str, Any]]:
        """Every way to reach us (SPEC 8.1): our listener's, then what else we run."""
        return sort_candidates([*self.peers.candidates, *self.extra_candidates()])

    def set_peer_url(self, url: str, bound_host: str) -> None:
        self.peers.peer_url = url
        self.peers.candidates = own_candidates(self.settings, url, bound_host)

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
