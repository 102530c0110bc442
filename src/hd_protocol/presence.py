"""The ``presence`` payload (SPEC 5), strictly parsed.

``addrs`` extends the spec's ``{node_name, capabilities}``: the sender's own
``ws://…/peer-ws`` candidates, so the receiver can reconnect to it later (an
acceptor otherwise only knows the dialer's ephemeral source port).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import RemoteProtocolError
from .limits import DEFAULT_LIMITS, Limits

MAX_URL = 512


@dataclass(frozen=True, slots=True)
class Presence:
    node_name: str
    capabilities: tuple[str, ...]
    addrs: tuple[str, ...]


def presence_data(node_name: str, capabilities: list[str], addrs: list[str]) -> dict[str, Any]:
    return {"node_name": node_name, "capabilities": list(capabilities), "addrs": list(addrs)}


def parse_presence(data: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> Presence:
    name = data.get("node_name", "")
    caps = data.get("capabilities", [])
    addrs = data.get("addrs", [])
    if type(name) is not str or len(name) > limits.node_name_chars:
        raise RemoteProtocolError("bad_request", "node_name must be a string of at most 64 chars")
    if (type(caps) is not list or len(caps) > limits.capabilities
            or any(type(c) is not str or not 0 < len(c) <= 64 for c in caps)):
        raise RemoteProtocolError("bad_request", "capabilities must be at most 32 short strings")
    if (type(addrs) is not list or len(addrs) > limits.addresses
            or any(type(a) is not str or not a.startswith(("ws://", "wss://"))
                   or len(a) > MAX_URL for a in addrs)):
        raise RemoteProtocolError("bad_request", "addrs must be at most 16 ws:// URLs")
    return Presence(name, tuple(caps), tuple(addrs))


def merge_addrs(known: list[str], dialed: str | None, advertised: tuple[str, ...],
                limit: int = DEFAULT_LIMITS.addresses) -> list[str]:
    """Addresses to keep for reconnecting: the one that worked first, then the
    peer's advertised ones, then older ones; no duplicates, at most ``limit``."""
    out: list[str] = []
    for a in ([dialed] if dialed else []) + list(advertised) + list(known):
        if a not in out:
            out.append(a)
    return out[:limit]
