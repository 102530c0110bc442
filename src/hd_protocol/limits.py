"""SPEC 11 defaults as one frozen config object (all configurable)."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
KiB = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_envelope_bytes: int = 1 * MiB
    max_ws_frame_bytes: int = 1 * MiB
    max_lobby_frame_bytes: int = 64 * KiB
    handshake_timeout_ms: int = 10_000
    handshakes_in_flight: int = 64
    handshakes_per_address: int = 8  # of those, from one remote address
    sessions_per_node: int = 256
    inbound_queue: int = 256
    session_failures_before_close: int = 16
    request_timeout_ms: int = 30_000
    unknown_type_reply_interval_ms: int = 1_000
    chat_text_bytes: int = 16 * KiB
    chat_ack_timeout_ms: int = 30_000  # a sent message unacked this long is sent again
    collab_text_bytes: int = 512 * KiB
    rooms_per_host: int = 8
    members_per_room: int = 64
    # lobby: past this many nodes, presence only to room peers (pushing to all is
    # quadratic: a registration storm of 1000 nodes is 500 000 presence frames, 256 is
    # 33 000; measured in bench/bench_lobby.py, 40% of a 10 000-node run at 1000)
    presence_push_max: int = 256
    addresses: int = 16
    capabilities: int = 32
    node_name_chars: int = 64
    relay_queue_envelopes: int = 1000
    relay_queue_bytes: int = 16 * MiB
    relay_queue_age_ms: int = 24 * 3600 * 1000
    relay_total_bytes: int = 1024 * MiB
    rate_per_s: int = 50
    rate_burst: int = 200
    invite_ttl_ms: int = 24 * 3600 * 1000
    ping_interval_ms: int = 5_000
    ping_timeout_ms: int = 5_000
    ping_misses_before_close: int = 3
    reconnect_min_ms: int = 1_000
    reconnect_max_ms: int = 60_000


DEFAULT_LIMITS = Limits()
