"""What the lobby (``hd_protocol.brokers.lobby``) keeps per node and per connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import RemoteProtocolError
from ..peer.candidates import check_candidate
from .frames import TokenBucket


def check_capabilities(caps: object, most: int) -> list[str]:
    if (type(caps) is not list or len(caps) > most
            or any(type(x) is not str or not 0 < len(x) <= 64 for x in caps)):
        raise RemoteProtocolError("bad_request", "capabilities: at most 32 short strings")
    return caps


def check_addresses(addresses: object, most: int) -> list[dict[str, Any]]:
    if type(addresses) is not list or len(addresses) > most:
        raise RemoteProtocolError("bad_request", f"at most {most} addresses")
    for a in addresses:
        try:
            check_candidate(a)
        except RemoteProtocolError as exc:  # a field of a well-formed frame
            raise RemoteProtocolError("bad_request", exc.message) from None
    return addresses


@dataclass(slots=True)
class _Node:
    node_id: str
    public_key: str
    node_name: str
    addresses: list[dict[str, Any]]
    capabilities: list[str]
    conn: int
    status: str = "online"
    listed: bool = False  # on this lobby's directory list, with this key (SPEC 7.6)

    def entry(self) -> dict[str, Any]:
        """What the directory shows (no addresses: those go only to room peers).
        ``listed``: the lobby vouches for this id and key — what a node in trust mode
        ``directory`` that pinned this lobby's key goes by when it dials the node."""
        return {"node_id": self.node_id, "public_key": self.public_key,
                "node_name": self.node_name, "capabilities": list(self.capabilities),
                "status": self.status, "listed": self.listed}

    def card(self) -> dict[str, Any]:
        """What a room peer gets: enough to dial and pin."""
        return {"node_id": self.node_id, "public_key": self.public_key,
                "node_name": self.node_name, "addresses": list(self.addresses)}


@dataclass(slots=True)
class _Conn:
    id: int
    nonce: str
    bucket: TokenBucket
    last_seen: int
    node: str | None = None
    bad: int = 0
    pending: dict[str, str] = field(default_factory=dict)  # node id -> its encoded entry
    flush_at: int | None = None
    last_flush: int = -(1 << 62)
