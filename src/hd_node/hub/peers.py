"""Who our peers are, as tabs see them: PeerInfo (SPEC 9), presence (SPEC 5), trust
changes, manual disconnects, forgetting a peer, and our own name.

A PeerInfo row's ``status`` is ``connected`` (a live session), ``connecting`` (a dial
to it is under way: a ladder step started and has not ended, for at most the time a
dial may take), ``blocked`` or ``offline``; ``unread`` and ``last_message`` come from
the chat log. A rename is stored (``node_settings``), told to every tab (``network
self``) and to every connected peer (a new ``presence``: SPEC 5 "updates the peer
record")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from hd_protocol import Identity, Policy, ProtocolError
from hd_protocol.apps.chat import ChatLog
from hd_protocol.apps.ws import check_node_name
from hd_protocol.limits import Limits
from hd_protocol.peer.addressbook import learn
from hd_protocol.peer.connection import Message, PeerError
from hd_protocol.peer.presence import parse_presence, presence_data
from hd_shell.clock import mono_ms, wall_ms

from ..errors import HubError
from ..metrics import NodeMetrics
from ..store import NodeStore
from .linkdriver import LinkBusy, LinkDriver
from .monitor import PeerMonitor
from .sessions import SessionRegistry
from .tabbus import TabBus

log = logging.getLogger("hd_node.peers")

# A burst of chat messages (or of their statuses) from one peer pushes its row once per
# tick, not once per message: with a few tabs open, the pushes were most of what a
# message cost the node.
CHAT_TICK_S = 0.05


class Peers:
    def __init__(self, identity: Identity, store: NodeStore, sessions: SessionRegistry,
                 bus: TabBus, metrics: NodeMetrics, *, limits: Limits, policy: Policy,
                 node_name: str, capabilities: list[str], chat: ChatLog,
                 self_extra: dict[str, Any]) -> None:
        """``chat``: the conversations (unread counts, last messages in each row);
        ``self_extra``: what the node adds to our own row (e.g. its agent backend)."""
        self.identity = identity
        self.store = store
        self.sessions = sessions
        self.bus = bus
        self.metrics = metrics
        self.limits = limits
        self.policy = policy
        self.node_name = node_name
        self.capabilities = capabilities
        self.self_extra = dict(self_extra)
        self.peer_url = ""
        self.candidates: list[dict[str, Any]] = []
        self.manual_disconnect: set[str] = set()
        self.chat = chat
        self.on_rename: list[Callable[[str], None]] = []
        # Dials under way per peer: (kind, address) -> when the ladder step started.
        self._dialing: dict[str, dict[tuple[str, str], int]] = {}
        self._chat_shown: dict[str, tuple[int, dict[str, Any] | None]] = {}
        self._chat_pending: set[str] = set()  # rows to push at the next tick
        self._chat_wake = trio.Event()
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
        chat = {"unread": self.chat.unread(node_id),
                "last_message": self.chat.last_message(node_id)}
        driver = self.sessions.get(node_id)
        if driver is not None and driver.conn.session is not None:
            s = driver.conn.session
            return {
                "node_id": node_id, "node_name": s.peer_name, "public_key": s.peer_key,
                "level": s.level, "transport": driver.kind, "address": driver.address,
                "status": "connected", "last_seen": wall_ms(),
                "capabilities": list(s.peer_capabilities), "rtt_ms": driver.conn.rtt.last_ms,
                **chat,
            }
        stored = self.store.get_peer(node_id)
        status = "connecting" if self.is_connecting(node_id) else "offline"
        if stored is None:
            return {"node_id": node_id, "node_name": "", "public_key": "", "level": None,
                    "transport": None, "address": None, "status": status, "last_seen": 0,
                    "capabilities": [], "rtt_ms": None, **chat}
        return {
            "node_id": node_id, "node_name": stored.node_name, "public_key": stored.public_key,
            "level": "trusted" if stored.trusted else None, "transport": None,
            "address": stored.addrs[0] if stored.addrs else None,
            "status": "blocked" if stored.blocked else status,
            "last_seen": stored.last_seen, "capabilities": stored.capabilities, "rtt_ms": None,
            **chat,
        }

    def is_connecting(self, node_id: str) -> bool:
        # A step that never ended (its ladder was cancelled) stops counting once a dial
        # would have timed out.
        horizon = mono_ms() - 2 * self.limits.handshake_timeout_ms - 1000
        return any(t > horizon for t in self._dialing.get(node_id, {}).values())

    def list_peers(self) -> list[dict[str, Any]]:
        ids = {p.node_id for p in self.store.list_peers()} | set(self.sessions.sessions)
        return [self.peer_info(i) for i in sorted(ids)]

    def peer_update(self, node_id: str) -> None:
        """Push the peer's row to every tab — unless it is gone (forgotten): a late
        event about it must not bring the row back."""
        if self.store.get_peer(node_id) is None and self.sessions.get(node_id) is None:
            return
        self.bus.publish("network", "peer_update", {"peer": self.peer_info(node_id)})

    def on_renamed(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(name)`` whenever our own name changes (``network rename``)."""
        self.on_rename.append(fn)

    def listening(self, peer_url: str, candidates: list[dict[str, Any]]) -> None:
        """Where our peer listener is, and every candidate built from it (SPEC 8.1)."""
        self.peer_url = peer_url
        self.candidates = candidates

    def chat_changed(self, peer_ids: set[str]) -> None:
        """Conversations changed (``Features.on_chat_change``): the rows of these peers
        are pushed at the next tick (``run_chat_pushes``), once each however many
        messages came meanwhile, and only if ``unread`` or ``last_message`` now read
        differently — not one per status change of an older message (a reconnect may
        flush thousands)."""
        if peer_ids:
            self._chat_pending |= peer_ids
            self._chat_wake.set()

    async def run_chat_pushes(self) -> None:
        """Push the rows ``chat_changed`` noted, every ``CHAT_TICK_S`` at most."""
        while True:
            await self._chat_wake.wait()
            self._chat_wake = trio.Event()
            await trio.sleep(CHAT_TICK_S)
            pending, self._chat_pending = self._chat_pending, set()
            for peer in sorted(pending):
                shown = (self.chat.unread(peer), self.chat.last_message(peer))
                if self._chat_shown.get(peer) != shown:
                    self._chat_shown[peer] = shown
                    self.peer_update(peer)

    def ladder_step(self, step: dict[str, Any]) -> None:
        """A join-ladder step (``Connector.on_step``): keeps ``connecting`` up to date,
        and pushes the row when that changes what it shows."""
        peer = step.get("node_id")
        if not isinstance(peer, str):
            return
        before = self.is_connecting(peer)
        dials = self._dialing.setdefault(peer, {})
        if step.get("step") == "start":
            dials[(str(step.get("kind")), str(step.get("address")))] = mono_ms()
        elif step.get("step") == "won":
            dials.clear()
        else:
            dials.pop((str(step.get("kind")), str(step.get("address"))), None)
        if not dials:
            del self._dialing[peer]
        if before != self.is_connecting(peer) and self.sessions.get(peer) is None:
            self.peer_update(peer)

    def metrics_view(self) -> list[dict[str, Any]]:
        """The ``peer_metrics`` rows (SPEC 6.4; see ``hd_node.hub.monitor``)."""
        return self.monitor.rows()

    # --- sessions (SessionListener) -----------------------------------------------------

    def session_opened(self, driver: LinkDriver) -> None:
        assert driver.peer_id is not None
        self.manual_disconnect.discard(driver.peer_id)
        self._dialing.pop(driver.peer_id, None)
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

    def forget(self, node_id: str) -> None:
        """Remove the stored peer (pinned key, addresses, trust) and end its session;
        its chats are kept. To talk again, the two nodes pair again."""
        driver = self.sessions.get(node_id)
        if not self.store.delete_peer(node_id) and driver is None:
            raise HubError("not_found", "unknown peer")
        log.info("peer forgotten peer=%s", node_id)
        self.manual_disconnect.discard(node_id)
        if driver is not None:
            # "untrusted": the peer does not redial (and would be refused: no record).
            driver.close("untrusted")
        self.bus.publish("network", "peer_removed", {"node_id": node_id})

    def rename(self, node_name: object) -> dict[str, Any]:
        """Our own name, as a person sets it from a tab: stored (it outlives a restart
        unless the node is started with an explicit name), then every tab and every
        connected peer is told."""
        name = check_node_name(node_name, self.limits.node_name_chars)
        self.store.set_setting("node_name", name)
        self.node_name = name
        for fn in self.on_rename:
            fn(name)
        told = 0
        for driver in list(self.sessions.sessions.values()):
            if driver.is_open:
                try:
                    driver.send("presence", self.presence_data())
                    told += 1
                except (LinkBusy, ProtocolError) as exc:
                    log.info("presence not sent peer=%s: %s", driver.peer_id, exc)
        log.info("node renamed peers_told=%d", told)
        info = self.self_info()
        self.bus.publish("network", "self", info)
        return info

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
