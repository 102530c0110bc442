"""The ``presence`` payload (SPEC 5), strictly parsed.

``addrs`` extends the spec's ``{node_name, capabilities}``: the sender's own
``ws://…/peer-ws`` candidates, so the receiver can reconnect to it later (an
acceptor otherwise only knows the dialer's ephemeral source port). Each must pass
``addressbook.check_peer_url``; the receiver keeps them below the addresses its user
gave (``hd_protocol.peer.addressbook``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import RemoteProtocolError
from ..limits import DEFAULT_LIMITS, Limits
from .addressbook import check_peer_url


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
    if type(addrs) is not list or len(addrs) > limits.addresses:
        raise RemoteProtocolError("bad_request", "addrs must be at most 16 ws:// URLs")
    try:
        checked = tuple(check_peer_url(a) for a in addrs)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError("bad_request", f"addrs: {exc.message}") from None
    return Presence(name, tuple(caps), checked)
