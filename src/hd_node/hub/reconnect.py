"""Reconnecting to trusted peers (SPEC 5): backoff 1 s doubling to 60 s, with jitter.

Whether to redial and how long to wait are ``hd_protocol``'s (``should_redial``,
``reconnect_delay_ms``); this runs at most one loop per peer. A loop ends when a
session with the peer exists (dialled by us or by it), when the policy says no
(untrusted, blocked, dropped by the user), or at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from hd_protocol import direct_candidates, reconnect_delay_ms, should_redial
from hd_protocol.limits import Limits
from hd_protocol.peer.connection import PeerError

from ..errors import HubError
from ..store import NodeStore
from .connector import Connector
from .linkdriver import LinkDriver
from .sessions import SessionRegistry
from .tasks import Tasks
from .trust import DialIntent

log = logging.getLogger("hd_node.reconnect")


class Reconnector:
    def __init__(self, store: NodeStore, sessions: SessionRegistry, connector: Connector, *,
                 limits: Limits, rng: Callable[[int], bytes],
                 user_disconnected: Callable[[str], bool], tasks: Tasks) -> None:
        self.store = store
        self.sessions = sessions
        self.connector = connector
        self.limits = limits
        self.rng = rng
        self.user_disconnected = user_disconnected
        self.tasks = tasks
        self.stopping = False
        self._running: set[str] = set()
        sessions.listen(self)

    # --- SessionListener ----------------------------------------------------------------

    def session_opened(self, driver: LinkDriver) -> None:
        pass

    def session_closed(self, driver: LinkDriver, reason: str, remote: bool) -> None:
        assert driver.peer_id is not None
        if self._wanted(driver.peer_id, reason):
            self.start(driver.peer_id, immediate=False)

    def peer_error(self, driver: LinkDriver, err: PeerError) -> None:
        pass

    # --- loops --------------------------------------------------------------------------

    def stop(self) -> None:
        """The node is stopping: no loop dials again."""
        self.stopping = True

    def start_all(self) -> None:
        """At start-up: every trusted peer we have an address for."""
        for peer in self.store.list_peers():
            if self._wanted(peer.node_id, "startup"):
                self.start(peer.node_id, immediate=True)

    def start(self, peer_id: str, *, immediate: bool) -> None:
        if peer_id in self._running or not self.tasks.running:
            return
        self._running.add(peer_id)
        self.tasks.start_soon(self._loop, peer_id, immediate)

    def _wanted(self, peer_id: str, reason: str) -> bool:
        stored = self.store.get_peer(peer_id)
        if stored is None or self.stopping or self.sessions.get(peer_id) is not None:
            return False
        return should_redial(reason, trusted=stored.trusted, blocked=stored.blocked,
                             has_address=bool(stored.addrs),
                             user_disconnected=self.user_disconnected(peer_id))

    def _delay_s(self, attempt: int) -> float:
        return reconnect_delay_ms(attempt, self.rng, base_ms=self.limits.reconnect_min_ms,
                                  cap_ms=self.limits.reconnect_max_ms) / 1000

    async def _loop(self, peer_id: str, immediate: bool) -> None:
        attempt = 0
        try:
            if not immediate:
                await trio.sleep(self._delay_s(0))
            while self._wanted(peer_id, "retry"):
                stored = self.store.get_peer(peer_id)
                assert stored is not None
                try:
                    await self.connector.dial_any(
                        direct_candidates(stored.addrs),
                        DialIntent(expected_node_id=peer_id, expected_key=stored.public_key))
                    log.info("reconnected peer=%s attempt=%d", peer_id, attempt)
                    return
                except HubError as exc:
                    log.info("reconnect failed peer=%s attempt=%d reason=%s",
                             peer_id, attempt, exc.code)
                except Exception:
                    log.exception("reconnect loop failed peer=%s: it stops", peer_id)
                    return
                attempt += 1
                await trio.sleep(self._delay_s(attempt))
        finally:
            self._running.discard(peer_id)
