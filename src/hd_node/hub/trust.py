"""Admission glue (SPEC 4.1): read the store, ask ``hd_protocol.peer.admission``, persist
what the decision says. The decision itself is the pure ``admit``/``dialer_view``.

Also holds the two in-memory admission sources the lobby will fill (SPEC 7.4): guests
of rooms we host (node id and key) and hosts of rooms we joined.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from hd_protocol import (
    Decision,
    Identity,
    Policy,
    Presented,
    admit,
    dialer_view,
    hash_token,
    token_matches,
)
from hd_protocol.peer.admission import reject
from hd_protocol.peer.handshake import NeedAdmission
from hd_shell.clock import wall_ms

from ..store import NodeStore

log = logging.getLogger("hd_node.trust")


@dataclass(frozen=True)
class DialIntent:
    """What we know about the node we dial: pinned id and key (invite, room, known
    peer), the invite token we present, and whether an invite pins it as trusted."""

    expected_node_id: str | None = None
    expected_key: str | None = None
    token: str | None = None
    invite_pinned: bool = False


class Trust:
    def __init__(self, identity: Identity, store: NodeStore, policy: Policy, *,
                 directory_listed: Callable[[str, str], bool] = lambda node_id, key: False
                 ) -> None:
        """``directory_listed(id, key)``: the lobby we are registered with vouches for
        that exact id and key (SPEC 7.6; trust mode ``directory``)."""
        self.identity = identity
        self.store = store
        self.policy = policy
        self.guest_admissions: set[tuple[str, str]] = set()
        self.room_hosts: set[tuple[str, str]] = set()
        self.room_tickets: set[str] = set()  # token hashes of the token rooms we host
        # Whether our lobby (pinned to our directory key) lists this id and key.
        self.directory_listed = directory_listed

    def decide_dialer(self, need: NeedAdmission, intent: DialIntent, kind: str,
                      remote_addr: str | None) -> Decision:
        """Our own view of the node that answered our dial (SPEC 4.1, last paragraph)."""
        peer = need.peer
        if intent.expected_key is not None and peer.public_key != intent.expected_key:
            return reject("key_mismatch")
        stored = self.store.get_peer(peer.node_id)
        d = dialer_view(
            self.policy, peer.node_id, peer.public_key,
            record=stored.record() if stored else None, link=kind,
            remote_addr=remote_addr, invite_pinned=intent.invite_pinned,
            room_host=(peer.node_id, peer.public_key) in self.room_hosts,
            directory_listed=self.directory_listed(peer.node_id, peer.public_key),
        )
        log.info("admission role=dialer peer=%s level=%s reason=%s",
                 peer.node_id, d.level, d.reason)
        return d

    def decide_acceptor(self, need: NeedAdmission, kind: str,
                        remote_addr: str | None) -> Decision:
        """Whether to admit the node that dialled us, and at which level."""
        peer = need.peer
        stored = self.store.get_peer(peer.node_id)
        invite = None
        if need.token is not None:
            found = self.store.get_invite(hash_token(need.token))
            invite = found.record() if found else None
        d = admit(
            self.policy,
            Presented(peer.node_id, peer.public_key, need.token, need.attest, kind,
                      remote_addr),
            record=stored.record() if stored else None, invite=invite, now=wall_ms(),
            guest_pending=(peer.node_id, peer.public_key) in self.guest_admissions,
            room_ticket_ok=need.token is not None and any(
                token_matches(need.token, h) for h in self.room_tickets),
        )
        # Effects are persisted before the dialer hears "ok". The conditional update
        # closes the race of two nodes redeeming one invite at the same moment.
        if d.redeem_invite is not None and not self.store.redeem_invite(
            d.redeem_invite, peer.node_id
        ):
            d = reject("pairing_required")
        if d.ok:
            self.store.pin_peer(peer.node_id, peer.public_key, now=wall_ms(),
                                node_name=peer.node_name,
                                trusted=True if d.store_trusted else None,
                                capabilities=list(peer.capabilities))
        log.info("admission role=acceptor peer=%s from=%s level=%s reason=%s",
                 peer.node_id, remote_addr, d.level, d.reason)
        return d

    def pin_dialled(self, need_peer_id: str, public_key: str, node_name: str,
                    capabilities: list[str], intent: DialIntent) -> None:
        """After our dial's ``auth_result ok``: pin (and, for an invite, trust) the
        acceptor. Only now: it may still refuse us after our own decision, and a
        refused peer must not end up stored as trusted."""
        self.store.pin_peer(need_peer_id, public_key, now=wall_ms(), node_name=node_name,
                            trusted=True if intent.invite_pinned else None,
                            capabilities=capabilities)
