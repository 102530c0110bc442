"""The PeerHub (SPEC 9): the sessions and what keeps them — the part of a node that
every feature runs on.

It holds the parts below the features, each of which knows only the ones below it:

- ``transports`` (the seam: direct WebSocket, relay, WebRTC and LAN plug in here),
- ``connector`` (dial one candidate; the join ladder over many),
- ``sessions`` (one session per peer, owner of every link driver, message routing),
- ``trust`` (admission glue), ``peers`` (PeerInfo, presence, trust changes),
- ``pairing`` (invites), ``reconnector``, ``bus`` (tabs),
- ``tasks`` (the nursery links, reconnect loops and catch-ups live in).

The node's composition root (``hd_node.node``) builds it and puts the features,
discovery and the web on top; nothing here knows them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from hd_protocol import ChatLog, Connection, Identity, Policy, sort_candidates
from hd_protocol.limits import Limits
from hd_shell.clock import mono_ms, wall_ms

from ..config import Settings
from ..metrics import NodeMetrics
from ..store import NodeStore
from ..transports.addresses import Reflexive, own_candidates
from ..transports.seam import Link, Ticket, Transports
from .connector import Connector
from .linkdriver import LinkDriver, LinkLimits
from .pairing import Pairing
from .peers import Peers
from .reconnect import Reconnector
from .sessions import SessionRegistry
from .tabbus import TabBus, TabLimits
from .tasks import Tasks
from .trust import Trust

log = logging.getLogger("hd_node.hub")


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
        rng: Callable[[int], bytes],
        node_name: str,
        capabilities: list[str],
        chat: ChatLog,
        tasks: Tasks,
        self_extra: dict[str, Any],
        reflexive: Reflexive | None,
        extra_candidates: Callable[[], list[dict[str, Any]]],
        directory_listed: Callable[[str, str], bool],
        link_limits: LinkLimits | None = None,
        tab_limits: TabLimits | None = None,
    ) -> None:
        """``extra_candidates``: ways to reach us beyond our listener (a relay's);
        ``reflexive``: our server-reflexive address (SPEC 8.1), when ICE is on."""
        self.identity = identity
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.limits = limits
        self.rng = rng
        self.tasks = tasks
        self.link_limits = link_limits or LinkLimits(write_timeout_s=settings.write_timeout_s)
        self.node_name = node_name
        self.capabilities = capabilities
        self.policy = Policy(trust_mode=settings.trust_mode,
                             directory_key=settings.directory_key or None)
        self.trust = Trust(identity, store, self.policy, directory_listed=directory_listed)
        self.sessions = SessionRegistry(identity, limits, store, metrics, self.trust)
        self.bus = TabBus(metrics, tab_limits or TabLimits())
        self.transports = Transports()
        self.peers = Peers(identity, store, self.sessions, self.bus, metrics, limits=limits,
                           policy=self.policy, node_name=node_name, capabilities=capabilities,
                           chat=chat, self_extra=self_extra)
        self.connector = Connector(identity, self.transports, self.sessions, store,
                                   limits=limits, link_limits=self.link_limits, rng=rng,
                                   node_name=node_name, capabilities=capabilities,
                                   tasks=tasks, metrics=metrics, on_step=self._ladder_step)
        self.peers.on_renamed(self._renamed)
        self.pairing = Pairing(identity, store, self.peers, self.connector, limits=limits,
                               rng=rng, candidates=self.own_candidates)
        self.reconnector = Reconnector(
            store, self.sessions, self.connector, limits=limits, rng=rng,
            user_disconnected=lambda peer: peer in self.peers.manual_disconnect, tasks=tasks)
        self.reflexive = reflexive
        self.extra_candidates = extra_candidates
        self._listener: tuple[str, str] | None = None
        self.shutting_down = False

    def _ladder_step(self, step: dict[str, Any]) -> None:
        self.bus.publish("network", "ladder", step)
        self.peers.ladder_step(step)

    def _renamed(self, name: str) -> None:
        """Our name changed (``network rename``): our handshakes say it from now on."""
        self.node_name = name
        self.connector.rename(name)

    @property
    def guest_admissions(self) -> set[tuple[str, str]]:
        """SPEC 7.4: guests of rooms we host (node id, key); the lobby fills it."""
        return self.trust.guest_admissions

    # --- lifecycle --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The hub's own background work; the node's ``tasks`` must be running."""
        self.reconnector.start_all()
        async with trio.open_nursery() as n:
            n.start_soon(self.peers.monitor.run)
            n.start_soon(self.peers.run_chat_pushes)
            task_status.started()
            await trio.sleep_forever()

    def own_candidates(self) -> list[dict[str, Any]]:
        """Every way to reach us (SPEC 8.1): our listener's, then what else we run."""
        return sort_candidates([*self.peers.candidates, *self.extra_candidates()])

    def set_peer_url(self, url: str, bound_host: str) -> None:
        self._listener = (url, bound_host)
        self.refresh_candidates()

    def refresh_candidates(self) -> None:
        """Our listener's candidates again (a new srflx address joins them)."""
        if self._listener is not None:
            url, host = self._listener
            self.peers.listening(url, own_candidates(
                self.settings, url, host,
                reflexive=self.reflexive.host if self.reflexive else None))

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
        self.reconnector.stop()
        drivers = list(self.sessions.sessions.values())
        for driver in drivers:
            driver.close("shutdown")
        with trio.move_on_after(3):
            for driver in drivers:
                await driver.finished.wait()
