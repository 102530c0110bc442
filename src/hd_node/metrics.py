"""Prometheus metrics for one node (its own registry, served at /metrics).

Node-wide series are ordinary counters and gauges. The per-peer series of the peer
monitor (SPEC 6.4: ``hd_peer_*``, labelled ``peer`` = the peer's node id) are not kept
in labelled metric objects: ``PeerCollector`` renders them at scrape time from the
monitor's rows, so a peer has series exactly while the monitor shows its row (its
session, then a bounded while after it ended) and the label sets cannot pile up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hd_protocol.peer.candidates import LINK_KINDS
from hd_protocol.peer.monitor import LinkFigures

# `_created` series double the output and say nothing a scraper needs here.
disable_created_metrics()  # type: ignore[no-untyped-call]


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.handshakes = Counter(
            "hd_handshakes", "Finished handshakes", ["role", "result"], registry=r
        )
        self.envelopes_in = Counter("hd_envelopes_in", "Accepted inbound envelopes", registry=r)
        self.envelopes_out = Counter("hd_envelopes_out", "Sent envelopes", registry=r)
        self.bytes_in = Counter("hd_bytes_in", "Bytes of accepted inbound envelopes", registry=r)
        self.bytes_out = Counter("hd_bytes_out", "Bytes of sent envelopes", registry=r)
        self.dropped = Counter(
            "hd_envelopes_dropped", "Inbound envelopes dropped, by reason", ["code"], registry=r
        )
        self.ws_errors = Counter(
            "hd_ws_errors", "Bad frames from local tabs, by code", ["code"], registry=r
        )
        self.refused = Counter(
            "hd_connections_refused", "Connections refused before a handshake", ["why"],
            registry=r,
        )
        self.listener = Counter(
            "hd_listener_events",
            "What the HTTP listeners refused or cut short (over_capacity, head_timeout, "
            "bad_request, handler_error, ...), by listener", ["listener", "event"], registry=r,
        )
        # SPEC 8.2: which rungs of the join ladder were tried and which won, by link
        # kind; every kind is shown from the start (0 rather than absent).
        self.ladder_attempts = Counter(
            "hd_ladder_attempts", "Join ladder dials started, by link kind", ["kind"],
            registry=r)
        self.ladder_wins = Counter(
            "hd_ladder_wins", "Join ladders won, by the link kind of the winner", ["kind"],
            registry=r)
        for kind in LINK_KINDS:
            self.ladder_attempts.labels(kind)
            self.ladder_wins.labels(kind)
        self.stun_bindings = Counter(
            "hd_stun_bindings", "STUN Binding transactions for our server-reflexive "
            "address (SPEC 8.1), by result: ok, timeout, error, unresolvable, socket, ...",
            ["result"], registry=r)
        self.sessions = Gauge("hd_sessions", "Open peer sessions", registry=r)
        self.tabs = Gauge("hd_tabs", "Connected /ws tabs", registry=r)
        self.peers = PeerCollector()
        r.register(self.peers)

    def render(self, with_peers: bool = True) -> bytes:
        """The Prometheus text. ``with_peers=False`` leaves out the ``hd_peer_*``
        families: their labels name the peers, which is for the token holder only."""
        if with_peers:
            return generate_latest(self.registry)
        return generate_latest(_WithoutPeers(self.registry))


class _WithoutPeers:
    """A registry's families minus the per-peer ones (what ``generate_latest`` reads)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return (m for m in self.registry.collect() if not m.name.startswith("hd_peer_"))


@dataclass(frozen=True)
class PeerSeries:
    """One peer's row as Prometheus sees it."""

    peer: str  # node id
    up: bool  # False: the session ended and the row lingers (see hd_node.hub.monitor)
    figures: LinkFigures


# name -> (help, the figure). Gauges with no value yet (no pong so far) are left out.
_GAUGES: dict[str, tuple[str, Callable[[LinkFigures], float | None]]] = {
    "hd_peer_rtt_ms": ("Last ping RTT per peer (ms)", lambda f: f.rtt_ms),
    "hd_peer_srtt_ms": ("Smoothed RTT per peer, RFC 6298 (ms)", lambda f: f.srtt_ms),
    "hd_peer_rttvar_ms": ("RTT variation per peer, RFC 6298 (ms)", lambda f: f.rttvar_ms),
    "hd_peer_in_bytes_per_second": ("Bytes received per second over the last 10 s",
                                    lambda f: f.rate_in_bps),
    "hd_peer_out_bytes_per_second": ("Bytes sent per second over the last 10 s",
                                     lambda f: f.rate_out_bps),
    "hd_peer_in_msgs_per_second": ("Envelopes received per second over the last 10 s",
                                   lambda f: f.rate_msgs_in),
    "hd_peer_out_msgs_per_second": ("Envelopes sent per second over the last 10 s",
                                    lambda f: f.rate_msgs_out),
}
# Counters restart from 0 with each new session of a peer (a counter reset to a scraper).
_COUNTERS: dict[str, tuple[str, Callable[[LinkFigures], int]]] = {
    "hd_peer_ping_timeouts": ("Pings without a pong in time, per peer session",
                              lambda f: f.timeouts),
    "hd_peer_bytes_in": ("Bytes of accepted envelopes from the peer, per session",
                         lambda f: f.bytes_in),
    "hd_peer_bytes_out": ("Bytes of envelopes sent to the peer, per session",
                          lambda f: f.bytes_out),
    "hd_peer_msgs_in": ("Accepted envelopes from the peer, per session", lambda f: f.msgs_in),
    "hd_peer_msgs_out": ("Envelopes sent to the peer, per session", lambda f: f.msgs_out),
}


class PeerCollector(Collector):
    """The ``hd_peer_*`` families, built at each scrape from ``source()``."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[PeerSeries]] = list

    def feed(self, source: Callable[[], Iterable[PeerSeries]]) -> None:
        """Where the rows come from (the peer monitor)."""
        self.source = source

    def describe(self) -> Iterable[Metric]:
        # Names only: the registry checks them without calling source() (which may
        # need the trio clock) at registration.
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        return self._families(list(self.source()))

    def _families(self, rows: list[PeerSeries]) -> Iterator[Metric]:
        up = GaugeMetricFamily("hd_peer_up", "1 while the peer's session is open, 0 for a "
                               "lost peer still shown", labels=["peer"])
        for row in rows:
            up.add_metric([row.peer], 1.0 if row.up else 0.0)
        yield up
        for name, (doc, gauge_of) in _GAUGES.items():
            g = GaugeMetricFamily(name, doc, labels=["peer"])
            for row in rows:
                value = gauge_of(row.figures)
                if value is not None:
                    g.add_metric([row.peer], float(value))
            yield g
        for name, (doc, count_of) in _COUNTERS.items():
            c = CounterMetricFamily(name, doc, labels=["peer"])
            for row in rows:
                c.add_metric([row.peer], float(count_of(row.figures)))
            yield c
