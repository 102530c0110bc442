"""Who our peers are, as tabs see them: PeerInfo (SPEC 9), presence (SPEC 5), trust
changes and manual disconnects."""

from __future__ import annotations

import logging
from typing import Any

from hd_protocol import Identity, Policy, ProtocolError
from hd_protocol.addressbook import learn
from hd_protocol.connection import Message, PeerError
from hd_protocol.limits import Limits
from hd_protocol.presence import parse_presence, presence_data

from .clock import wall_ms
from .errors import HubError
from .linkdriver import LinkBusy, LinkDriver
from .metrics import NodeMetrics
from .monitor import PeerMonitor
from .sessions import SessionRegistry
from .store import NodeStore
from .tabbus import TabBus

log = logging.getLogger("hd_node.peers")


class Peers:
    def __init__(self, identity: Identity, store: NodeStore, sessions: SessionRegistry,
                 bus: TabBus, metrics: NodeMetrics, *, limits: Limits, policy: Policy,
                 node_name: str, capabilities: list[str]) -> None:
        self.identity = identity
        self.store = store
        self.sessions = sessions
        self.bus = bus
        self.metrics = metrics
        self.limits = limits
        self.policy = policy
        self.node_name = node_name
        self.capabilities = capabilities
        self.self_extra: dict[str, Any] = {}  # what the hub adds (e.g. its agent backend)
        self.peer_url = ""
        self.candidates: list[dict[str, Any]] = []
        self.manual_disconnect: set[str] = set()
        sessions.route("presence", self._on_presence)
        sessions.listen(self)
        self.monitor = PeerMonitor(sessions, bus, metrics, limits=limits)

    # --- views ------------------------------------------------------------------------

    def self_info(self) -> dict[str, Any]:
        return {
            "node_id": self.identity.node_id, "public_key": self.identity.public_key,
            "node_name": self.node_name, "peer_url": self.peer_url,
            "addrs": [c["url"] for c in self.candidates], "trust_mode": self.policy.trust_mode,
            "capabilities": list(self.capabilities), **self.self_extra,
        }

    def peer_info(self, node_id: str) -> dict[str, Any]:
        driver = self.sessions.get(node_id)
        if driver is not None and driver.conn.session is not None:
            s = driver.conn.session
            return {
                "node_id": node_id, "node_name": s.peer_name, "public_key": s.peer_key,
                "level": s.level, "transport": driver.kind, "address": driver.address,
                "status": "connected", "last_seen": wall_ms(),
                "capabilities": list(s.peer_capabilities), "rtt_ms": driver.conn.rtt.last_ms,
            }
        stored = self.store.get_peer(node_id)
        if stored is None:
            return {"node_id": node_id, "node_name": "", "public_key": "", "level": None,
                    "transport": None, "address": None, "status": "unknown", "last_seen": 0,
                    "capabilities": [], "rtt_ms": None}
        return {
            "node_id": node_id, "node_name": stored.node_name, "public_key": stored.public_key,
            "level": "trusted" if stored.trusted else None, "transport": None,
            "address": stored.addrs[0] if stored.addrs else None,
            "status": "blocked" if stored.blocked else "offline",
            "last_seen": stored.last_seen, "capabilities": stored.capabilities, "rtt_ms": None,
        }

    def list_peers(self) -> list[dict[str, Any]]:
        ids = {p.node_id for p in self.store.list_peers()} | set(self.sessions.sessions)
        return [self.peer_info(i) for i in sorted(ids)]

    def peer_update(self, node_id: str) -> None:
        self.bus.publish("network", "peer_update", {"peer": self.peer_info(node_id)})

    def metrics_view(self) -> list[dict[str, Any]]:
        """The ``peer_metrics`` rows (SPEC 6.4; see ``hd_node.monitor``)."""
        return self.monitor.rows()

    # --- sessions (SessionListener) -----------------------------------------------------

    def session_opened(self, driver: LinkDriver) -> None:
        assert driver.peer_id is not None
        self.manual_disconnect.discard(driver.peer_id)
        self.peer_update(driver.peer_id)
        try:
            driver.send("presence", self.presence_data())
        except (LinkBusy, ProtocolError) as exc:
            log.info("presence not sent peer=%s: %s", driver.peer_id, exc)

    def session_closed(self, driver: LinkDriver, reason: str, remote: bool) -> None:
        assert driver.peer_id is not None
        self.peer_update(driver.peer_id)

    def peer_error(self, driver: LinkDriver, err: PeerError) -> None:
        pass

    def presence_data(self) -> dict[str, Any]:
        return presence_data(self.node_name, self.capabilities,
                             [c["url"] for c in self.candidates][: self.limits.addresses])

    def _on_presence(self, driver: LinkDriver, msg: Message) -> None:
        session = driver.conn.session
        peer = driver.peer_id
        assert session is not None and peer is not None
        try:
            p = parse_presence(msg.data, self.limits)
        except ProtocolError as exc:
            self.metrics.dropped.labels(exc.code).inc()
            log.info("bad presence peer=%s code=%s", peer, exc.code)
            return
        session.peer_name = p.node_name
        session.peer_capabilities = p.capabilities
        stored = self.store.get_peer(peer)
        if stored is not None:
            self.store.pin_peer(peer, session.peer_key, now=wall_ms(), node_name=p.node_name,
                                capabilities=list(p.capabilities))
            # What the peer says about itself is kept below what our user gave.
            self.store.set_book(peer, learn(stored.book, p.addrs, "peer",
                                            limit=self.limits.addresses))
        self.peer_update(peer)

    # --- commands -------------------------------------------------------------------------

    def disconnect(self, node_id: str) -> None:
        driver = self.sessions.get(node_id)
        if driver is None:
            raise HubError("not_found", "no session with that peer")
        self.manual_disconnect.add(node_id)
        driver.close("disconnect")

    def set_trust(self, node_id: str, trusted: bool, blocked: bool | None) -> dict[str, Any]:
        if not self.store.set_trust(node_id, trusted=trusted, blocked=blocked):
            raise HubError("not_found", "unknown peer")
        log.info("trust changed peer=%s trusted=%s blocked=%s", node_id, trusted, blocked)
        driver = self.sessions.get(node_id)
        session = driver.conn.session if driver is not None else None
        if driver is not None and session is not None and (
                blocked or (not trusted and session.level == "trusted")):
            # Trust was withdrawn: the session's level no longer holds.
            self.manual_disconnect.add(node_id)
            driver.close("untrusted")
        info = self.peer_info(node_id)
        self.peer_update(node_id)
        return info
