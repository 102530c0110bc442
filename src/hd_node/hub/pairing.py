"""Invites and pairing (SPEC 4.2): create, list, revoke, redeem.

The invite codec and its checks are hd_protocol's; this keeps the hashed tokens in the
store and dials the redeemed invite's candidates, pinning its node id and key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from hd_protocol import (
    Identity,
    ProtocolError,
    decode_invite,
    encode_invite,
    hash_token,
    invite_expired,
    new_token,
    sort_candidates,
)
from hd_protocol.limits import Limits
from hd_protocol.peer.candidates import dial_candidates
from hd_shell.clock import wall_ms

from ..errors import HubError
from ..store import NodeStore
from .connector import Connector
from .peers import Peers
from .trust import DialIntent

log = logging.getLogger("hd_node.pairing")
MAX_TTL_MS = 30 * 24 * 3600 * 1000


class Pairing:
    def __init__(self, identity: Identity, store: NodeStore, peers: Peers,
                 connector: Connector, *, limits: Limits,
                 rng: Callable[[int], bytes],
                 candidates: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.identity = identity
        # What an invite lists: our listener's candidates and, when we run one, our relay.
        self.candidates = candidates or (lambda: list(peers.candidates))
        self.store = store
        self.peers = peers
        self.connector = connector
        self.limits = limits
        self.rng = rng

    def create_invite(self, ttl_ms: int | None = None) -> dict[str, Any]:
        if not self.candidates():
            raise HubError("no_address", "the peer listener has no address to advertise; "
                           "run with --advertise ws://HOST:PORT/peer-ws")
        ttl = self.limits.invite_ttl_ms if ttl_ms is None else ttl_ms
        if not 1_000 <= ttl <= MAX_TTL_MS:
            raise HubError("bad_request", "ttl must be between 1 s and 30 days")
        now = wall_ms()
        token = new_token(self.rng)
        exp = now + ttl
        inv = self.store.add_invite(hash_token(token), created_at=now, exp=exp)
        text = encode_invite(addrs=self.candidates(), exp=exp, node_id=self.identity.node_id,
                             public_key=self.identity.public_key, token=token)
        log.info("invite created token_id=%s expires=%d", inv.token_id, exp)
        return {"invite": text, "expires": exp, "token_id": inv.token_id}

    def list_invites(self) -> list[dict[str, Any]]:
        now = wall_ms()
        return [
            {"token_id": i.token_id, "created_at": i.created_at, "expires": i.exp,
             "redeemed_by": i.redeemed_by, "revoked": i.revoked, "expired": i.exp <= now}
            for i in self.store.list_invites()
        ]

    def revoke_invite(self, token_id: str) -> None:
        if not self.store.revoke_invite(token_id):
            raise HubError("not_found", "no such invite")
        log.info("invite revoked token_id=%s", token_id)

    async def pair_redeem(self, invite_text: str) -> dict[str, Any]:
        """Redeem an invite: dial its candidates pinning its id and key (SPEC 4.2)."""
        try:
            inv = decode_invite(invite_text)
        except ProtocolError as exc:
            raise HubError("bad_invite", exc.message) from None
        if invite_expired(inv, wall_ms()):
            raise HubError("expired", "the invite has expired")
        if inv["node_id"] == self.identity.node_id:
            raise HubError("wrong_node", "this invite is our own")
        stored = self.store.get_peer(inv["node_id"])
        if stored is not None and stored.public_key != inv["public_key"]:
            raise HubError("key_mismatch", "we know that node id with another key")
        driver = await self.connector.dial_any(
            dial_candidates(sort_candidates(inv["addrs"])),
            DialIntent(expected_node_id=inv["node_id"], expected_key=inv["public_key"],
                       token=inv["token"], invite_pinned=True),
        )
        assert driver.peer_id is not None
        return self.peers.peer_info(driver.peer_id)
