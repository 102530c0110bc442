"""Admission (SPEC 4.1), invites (SPEC 4.2) and directory attestations (SPEC 7.6).

Admission is a pure function: the shell looks up what it stores about the peer (its
pinned record, the invite matching the presented token, a pending room admission) and
passes it in as plain data; the decision comes back with the effects the shell must
persist (store the peer as trusted, mark an invite redeemed). Nothing here touches a
database or a clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..cjson import canonical_json, loads_strict
from ..errors import CanonicalError, ProtocolError, RemoteProtocolError
from ..identity import Identity, Rng, is_node_id, node_id_for, verify_signature
from .candidates import check_candidate

TRUSTED: Final = "trusted"
GUEST: Final = "guest"
Level = Literal["trusted", "guest"]
TRUST_MODES = ("manual", "open-lan", "directory")
LINK_KINDS = ("direct", "relay", "webrtc", "lan")
INVITE_PREFIX = "hd1:"
ATTEST_PREFIX = b"hd1-attest\n"
MAX_INVITE_CHARS = 8192
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """What a node stores about a peer: the pinned key and the trust flags."""

    node_id: str
    public_key: str
    trusted: bool = False
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class InviteRecord:
    """A stored invite: only the token's SHA-256 (hex) is kept."""

    token_hash: str
    exp: int
    redeemed_by: str | None = None
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class Policy:
    trust_mode: str = "manual"
    directory_key: str | None = None


@dataclass(frozen=True, slots=True)
class Presented:
    """What a verified peer presented in its handshake, and how it reached us."""

    node_id: str
    public_key: str
    token: str | None = None
    attest: dict[str, Any] | None = None
    link: str = "direct"
    remote_addr: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """``level`` is None on rejection, with ``reason`` set. Effects for the shell:
    ``store_trusted`` (pin and trust the peer) and ``redeem_invite`` (the token hash to
    mark as redeemed by this peer)."""

    level: Level | None
    reason: str | None = None
    store_trusted: bool = False
    redeem_invite: str | None = None

    @property
    def ok(self) -> bool:
        return self.level is not None


def reject(reason: str) -> Decision:
    return Decision(level=None, reason=reason)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(rng: Rng, nbytes: int = 24) -> str:
    """A bearer token (≥ 128 random bits), base64url without padding."""
    if nbytes < 16:
        raise ValueError("tokens carry at least 128 bits")
    return base64.urlsafe_b64encode(rng(nbytes)).rstrip(b"=").decode("ascii")


def token_matches(token: str, token_hash: str) -> bool:
    """Constant-time comparison of a presented token against a stored hash."""
    return hmac.compare_digest(hash_token(token).encode(), token_hash.encode())


# Loopback, RFC 1918, RFC 6598 shared (CGNAT), link-local, IPv6 ULA and link-local.
# Listed rather than ``ip.is_private``, which also counts documentation and
# benchmarking ranges (192.0.2.0/24, 198.18.0.0/15, ...) that are no LAN.
_LAN_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
        "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10",
    )
)


def is_private_address(addr: str | None) -> bool:
    """Loopback, private (RFC 1918 / ULA) or link-local: what open-lan admits."""
    if not addr:
        return False
    host = addr.strip("[]")
    if "%" in host:
        host = host.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _LAN_NETS)


def invite_usable(
    invite: InviteRecord | None, token: str, node_id: str, now: int
) -> bool:
    if invite is None or invite.revoked or invite.exp <= now:
        return False
    if not token_matches(token, invite.token_hash):
        return False
    return invite.redeemed_by is None or invite.redeemed_by == node_id


def _pin_check(presented_key: str, record: PeerRecord | None) -> Decision | None:
    if record is None:
        return None
    if record.public_key != presented_key:
        return reject("key_mismatch")
    if record.blocked:
        return reject("blocked")
    if record.trusted:
        return Decision(level=TRUSTED)
    return None


def admit(
    policy: Policy,
    presented: Presented,
    *,
    record: PeerRecord | None,
    invite: InviteRecord | None,
    now: int,
    guest_pending: bool = False,
    room_ticket_ok: bool = False,
) -> Decision:
    """The acceptor's admission ladder (SPEC 4.1), first match wins."""
    pinned = _pin_check(presented.public_key, record)  # steps 1-2
    if pinned is not None:
        return pinned
    if presented.token is not None and invite_usable(  # step 3
        invite, presented.token, presented.node_id, now
    ):
        assert invite is not None
        return Decision(level=TRUSTED, store_trusted=True, redeem_invite=invite.token_hash)
    if (  # step 4
        policy.trust_mode == "directory"
        and policy.directory_key
        and presented.attest is not None
        and verify_attestation(
            presented.attest, policy.directory_key, presented.node_id, presented.public_key, now
        )
    ):
        return Decision(level=TRUSTED)
    if _open_lan(policy, presented.link, presented.remote_addr):  # step 5
        return Decision(level=TRUSTED)
    if guest_pending or room_ticket_ok:  # step 6
        return Decision(level=GUEST)
    return reject("pairing_required")  # step 7


def dialer_view(
    policy: Policy,
    node_id: str,
    public_key: str,
    *,
    record: PeerRecord | None,
    link: str = "direct",
    remote_addr: str | None = None,
    invite_pinned: bool = False,
    room_host: bool = False,
    directory_listed: bool = False,
) -> Decision:
    """How a dialer ranks the node that answered (SPEC 4.1, last paragraph).

    ``invite_pinned``: we dialled with an invite that named exactly this id and key.
    ``room_host``: we joined a room this node hosts (its id and key from room_info).
    ``directory_listed``: the lobby whose key is our ``directory_key`` lists exactly this
    id and key (SPEC 7.6 seen from the dialer, who gets no attestation in a hello_ack).
    """
    pinned = _pin_check(public_key, record)
    if pinned is not None:
        return pinned
    if invite_pinned:
        return Decision(level=TRUSTED, store_trusted=True)
    if policy.trust_mode == "directory" and policy.directory_key and directory_listed:
        return Decision(level=TRUSTED)
    if _open_lan(policy, link, remote_addr):
        return Decision(level=TRUSTED)
    if room_host:
        return Decision(level=GUEST)
    return reject("pairing_required")


def _open_lan(policy: Policy, link: str, remote_addr: str | None) -> bool:
    return (
        policy.trust_mode == "open-lan"
        and link in ("direct", "lan")
        and is_private_address(remote_addr)
    )


# --- invites (SPEC 4.2) -------------------------------------------------------------


def encode_invite(
    *, addrs: list[dict[str, Any]], exp: int, node_id: str, public_key: str, token: str
) -> str:
    body = {"addrs": addrs, "exp": exp, "node_id": node_id, "public_key": public_key,
            "token": token}
    _check_invite(body)
    raw = canonical_json(body)
    return INVITE_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_invite(text: str) -> dict[str, Any]:
    """Parse and check an invite string; ``RemoteProtocolError('bad_invite')`` otherwise.

    Expiry is checked separately (``invite_expired``) because it needs ``now``.
    """
    if type(text) is not str:
        raise RemoteProtocolError("bad_invite", "an invite is a string")
    text = text.strip()
    if len(text) > MAX_INVITE_CHARS or not text.startswith(INVITE_PREFIX):
        raise RemoteProtocolError("bad_invite", "not an hd1: invite")
    b64 = text[len(INVITE_PREFIX) :]
    if _B64URL_RE.fullmatch(b64) is None:
        # Strict alphabet: urlsafe_b64decode would silently skip stray characters.
        raise RemoteProtocolError("bad_invite", "invite must be unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        body = loads_strict(raw)
    except (binascii.Error, ValueError, CanonicalError):
        raise RemoteProtocolError("bad_invite", "invite body is not valid") from None
    if type(body) is not dict:
        raise RemoteProtocolError("bad_invite", "invite body is not an object")
    _check_invite(body)
    return body


def invite_expired(invite: dict[str, Any], now: int) -> bool:
    return bool(invite["exp"] <= now)


def _check_invite(body: dict[str, Any]) -> None:
    if set(body) != {"addrs", "exp", "node_id", "public_key", "token"}:
        raise RemoteProtocolError(
            "bad_invite", "invite fields are addrs, exp, node_id, public_key, token"
        )
    if type(body["exp"]) is not int or body["exp"] < 0:
        raise RemoteProtocolError("bad_invite", "exp must be a timestamp in ms")
    tok = body["token"]
    if type(tok) is not str or not 16 <= len(tok) <= 256:
        raise RemoteProtocolError("bad_invite", "token must be a string of 16..256 chars")
    if not is_node_id(body["node_id"]):
        raise RemoteProtocolError("bad_invite", "node_id is not a node id")
    try:
        derived = node_id_for(body["public_key"])
    except ProtocolError:
        raise RemoteProtocolError("bad_invite", "public_key is not a key") from None
    if derived != body["node_id"]:
        raise RemoteProtocolError("bad_invite", "node_id does not match public_key")
    addrs = body["addrs"]
    if type(addrs) is not list or len(addrs) > 16:
        raise RemoteProtocolError("bad_invite", "addrs must be a list of at most 16 candidates")
    for a in addrs:
        try:
            check_candidate(a)
        except ProtocolError as exc:
            raise RemoteProtocolError("bad_invite", f"addrs: {exc.message}") from None


# --- directory attestations (SPEC 7.6) ----------------------------------------------


def issue_attestation(issuer: Identity, node_id: str, public_key: str, exp: int) -> dict[str, Any]:
    cert = {"node_id": node_id, "public_key": public_key, "issuer": issuer.node_id, "exp": exp}
    return {"cert": cert, "sig": issuer.sign(ATTEST_PREFIX + canonical_json(cert))}


def verify_attestation(
    attest: dict[str, Any], issuer_key: str, node_id: str, public_key: str, now: int
) -> bool:
    """A valid, unexpired attestation by ``issuer_key`` for exactly this id and key."""
    try:
        cert = attest["cert"]
        sig = attest["sig"]
        if type(cert) is not dict or set(cert) != {"node_id", "public_key", "issuer", "exp"}:
            return False
        if cert["node_id"] != node_id or cert["public_key"] != public_key:
            return False
        if cert["issuer"] != node_id_for(issuer_key):
            return False
        if type(cert["exp"]) is not int or cert["exp"] <= now:
            return False
        return verify_signature(issuer_key, ATTEST_PREFIX + canonical_json(cert), sig)
    except (KeyError, TypeError, ProtocolError):
        return False
