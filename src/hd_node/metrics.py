"""Prometheus metrics for one node (its own registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)

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
        self.sessions = Gauge("hd_sessions", "Open peer sessions", registry=r)
        self.tabs = Gauge("hd_tabs", "Connected /ws tabs", registry=r)
        self.rtt = Gauge("hd_peer_rtt_ms", "Last ping RTT per peer (ms)", ["peer"], registry=r)
        self.srtt = Gauge("hd_peer_srtt_ms", "Smoothed RTT per peer (ms)", ["peer"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
