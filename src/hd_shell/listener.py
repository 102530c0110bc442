"""Budgets of a listener that faces the internet: a node's peer listener, a relay, a lobby.

What a remote party may send before its handshake completes, and how many connections
one source address may hold and open per second (SPEC 11).
"""

from __future__ import annotations

from hd_shell.http.api import ServerLimits
from hd_shell.ws.inbound import WsBudget

# What a peer may send on /peer-ws before its handshake completes: a hello and an auth.
PREAUTH = WsBudget(max_message_size=32 * 1024, max_fragments=4, max_pings=2,
                   max_bytes=64 * 1024)


def peer_listener_limits(max_message_bytes: int) -> ServerLimits:
    """The peer listener's budgets: it faces the internet, unlike the local one."""
    return ServerLimits(
        ws_max_message_bytes=max_message_bytes, ws_preauth=PREAUTH,
        max_connections=512, max_connections_per_address=32,
        new_connections_per_address_per_s=100.0, new_connections_per_address_burst=200,
        head_timeout_s=5.0,
    )
