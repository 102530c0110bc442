"""The peer monitor as tabs and scrapers see it (SPEC 6.4, SPEC 9 ``peer_metrics``).

The figures themselves are computed by each session's ``hd_protocol`` connection
(``Connection.figures(now)``: RTT per RFC 6298, ping timeouts, traffic and 10 s rates);
this module only shows them: one row per peer for ``network list_metrics`` and the
periodic ``network peer_metrics`` push, and the same rows as the ``hd_peer_*``
Prometheus series.

What happens to a peer whose session ends: its row does not vanish. It stays, with
``status: "lost"``, the reason and its last figures (counters and RTTs as they were;
rates keep being computed over the last 10 s, so they fall to 0 as nothing more
arrives), for ``LOST_ROW_INTERVALS`` push intervals — 60 s with the default 5 s ping
interval. Long enough for a person watching the table, or a scraper polling every
15–30 s, to see that the peer went away rather than guess from a missing line; short
enough, with at most ``sessions_per_node`` lost rows kept, that the per-peer series of
peers that come and go cannot grow without bound. A new session with the peer
replaces its lost row at once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import trio

from hd_protocol.limits import Limits
from hd_protocol.peer.connection import Connection, PeerError
from hd_shell.clock import mono_ms

from ..metrics import NodeMetrics, PeerSeries
from .linkdriver import LinkDriver
from .sessions import SessionRegistry
from .tabbus import TabBus

LOST_ROW_INTERVALS = 12  # a lost peer's row lingers this many push intervals


@dataclass
class _Lost:
    conn: Connection  # kept for its figures; the link itself is let go
    kind: str
    reason: str
    at: int  # monotonic ms


class PeerMonitor:
    """Rows of ``peer_metrics``; pushes them every ping interval (5 s by default) to
    every tab while any row is shown (a connected peer, or a lost one still lingering).
    """

    def __init__(self, sessions: SessionRegistry, bus: TabBus, metrics: NodeMetrics, *,
                 limits: Limits) -> None:
        self.sessions = sessions
        self.bus = bus
        self.limits = limits
        self.interval_ms = limits.ping_interval_ms
        self.linger_ms = LOST_ROW_INTERVALS * limits.ping_interval_ms
        self.max_lost = limits.sessions_per_node
        self._lost: OrderedDict[str, _Lost] = OrderedDict()  # oldest loss first
        metrics.peers.feed(self.series)
        sessions.listen(self)

    # --- views --------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """One row per connected peer and per lost peer still shown, by node id."""
        now = mono_ms()
        self._expire(now)
        out = [self._row(peer, d.conn, d.kind, now, None)
               for peer, d in self.sessions.sessions.items() if d.is_open]
        shown = {r["node_id"] for r in out}
        out += [self._row(peer, lost.conn, lost.kind, now, lost)
                for peer, lost in self._lost.items() if peer not in shown]
        return sorted(out, key=lambda r: str(r["node_id"]))

    def series(self) -> list[PeerSeries]:
        """The same rows for the Prometheus collector."""
        now = mono_ms()
        self._expire(now)
        out = [PeerSeries(peer, True, d.conn.figures(now))
               for peer, d in self.sessions.sessions.items() if d.is_open]
        shown = {s.peer for s in out}
        out += [PeerSeries(peer, False, lost.conn.figures(now))
                for peer, lost in self._lost.items() if peer not in shown]
        return out

    # --- the push -------------------------------------------------------------------------

    async def run(self) -> None:
        """Push ``peer_metrics`` every interval while there is something to show (on a
        fixed cadence: the time a push takes does not drift the next one)."""
        at = trio.current_time()
        while True:
            at += self.interval_ms / 1000
            await trio.sleep_until(at)
            at = max(at, trio.current_time() - self.interval_ms / 1000)  # no catch-up burst
            if not self.bus.tabs:
                self._expire(mono_ms())  # nobody to tell; lost rows still age out
                continue
            rows = self.rows()
            if rows:
                self.bus.publish("network", "peer_metrics", {"metrics": rows})

    # --- sessions (SessionListener) ----------------------------------------------------------

    def session_opened(self, driver: LinkDriver) -> None:
        assert driver.peer_id is not None
        self._lost.pop(driver.peer_id, None)

    def session_closed(self, driver: LinkDriver, reason: str, remote: bool) -> None:
        peer = driver.peer_id
        assert peer is not None
        if self.sessions.get(peer) is not None:
            return  # replaced by a newer session: nothing was lost
        self._lost.pop(peer, None)
        self._lost[peer] = _Lost(driver.conn, driver.kind, reason, mono_ms())
        while len(self._lost) > self.max_lost:
            self._lost.popitem(last=False)

    def peer_error(self, driver: LinkDriver, err: PeerError) -> None:
        pass

    # --- internals ----------------------------------------------------------------------------

    def _expire(self, now: int) -> None:
        while self._lost:
            peer, lost = next(iter(self._lost.items()))
            if now - lost.at < self.linger_ms:
                break
            del self._lost[peer]

    def _row(self, peer: str, conn: Connection, kind: str, now: int,
             lost: _Lost | None) -> dict[str, Any]:
        session = conn.session
        assert session is not None
        ended = lost.at if lost is not None else now
        return {
            "node_id": peer,
            "status": "connected" if lost is None else "lost",
            "transport": kind,
            **asdict(conn.figures(now)),
            "request_timeouts": conn.stats.timeouts,
            "dropped": conn.stats.dropped,
            "connected_for_ms": max(0, ended - session.opened_at),
            "lost_for_ms": None if lost is None else now - lost.at,
            "reason": None if lost is None else lost.reason,
        }
