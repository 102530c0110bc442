"""Reconnecting to trusted peers (SPEC 5): backoff 1 s doubling to 60 s, with jitter.

One loop per peer at most. A loop ends when a session with the peer exists (dialled
by us or by it), when the peer is no longer trusted, or at shutdown.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from hd_protocol import reconnect_delay_ms

from .errors import HubError

if TYPE_CHECKING:
    from .hub import PeerHub

log = logging.getLogger("hd_node.reconnect")


class Reconnector:
    def __init__(self, hub: PeerHub) -> None:
        self.hub = hub
        self._running: set[str] = set()

    def after_close(self, peer_id: str, reason: str) -> None:
        """A session ended: reconnect unless it ended on purpose."""
        # "disconnect": a person on either side chose to end it; no automatic redial.
        if reason not in ("duplicate", "untrusted", "disconnect") and self._wanted(peer_id):
            self.start(peer_id, immediate=False)

    def start(self, peer_id: str, *, immediate: bool) -> None:
        if peer_id in self._running or self.hub.nursery is None:
            return
        self._running.add(peer_id)
        self.hub.nursery.start_soon(self._loop, peer_id, immediate)

    def _wanted(self, peer_id: str) -> bool:
        """Only trusted, unblocked peers with an address, not dropped by the user,
        and with no session already (dialled by either side)."""
        stored = self.hub.store.get_peer(peer_id)
        return (
            stored is not None and stored.trusted and not stored.blocked
            and bool(stored.addrs) and peer_id not in self.hub.manual_disconnect
            and peer_id not in self.hub.sessions and not self.hub.shutting_down
        )

    def _delay_s(self, attempt: int) -> float:
        limits = self.hub.limits
        return reconnect_delay_ms(attempt, self.hub.rng, base_ms=limits.reconnect_min_ms,
                                  cap_ms=limits.reconnect_max_ms) / 1000

    async def _loop(self, peer_id: str, immediate: bool) -> None:
        attempt = 0
        try:
            if not immediate:
                await trio.sleep(self._delay_s(0))
            while self._wanted(peer_id):
                stored = self.hub.store.get_peer(peer_id)
                assert stored is not None
                try:
                    await self.hub.dial_any(stored.addrs, expected_node_id=peer_id,
                                            expected_key=stored.public_key)
                    log.info("reconnected peer=%s attempt=%d", peer_id, attempt)
                    return
                except HubError as exc:
                    log.info("reconnect failed peer=%s attempt=%d reason=%s",
                             peer_id, attempt, exc.code)
                attempt += 1
                await trio.sleep(self._delay_s(attempt))
        finally:
            self._running.discard(peer_id)
