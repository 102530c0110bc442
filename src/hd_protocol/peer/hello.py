"""The handshake's frames, outputs and key schedule (SPEC 4); the machines that use
them are in ``hd_protocol.peer.handshake``.

``hello`` and ``hello_ack`` are the two unsealed frames: each names its sender's key,
proves it with a signature, and brings a fresh nonce and an ephemeral X25519 key. The
two ephemeral keys and the transcript of both frames give the session's keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..effects import Send
from ..envelope import Envelope, signing_bytes, verify_envelope
from ..errors import HandshakeError, RemoteProtocolError
from ..identity import b64decode_strict, b64encode, node_id_for

PROTO = "hd/1"
HELLO_FIELDS = frozenset({"proto", "node_name", "public_key", "capabilities", "nonce", "eph"})
HELLO_ACK_FIELDS = HELLO_FIELDS | {"echo"}
KDF_INFO = b"hd1 session keys"


@dataclass(frozen=True, slots=True)
class PeerHello:
    """The verified identity the other side presented."""

    node_id: str
    public_key: str
    node_name: str
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NeedAdmission:
    """Decide admission (``admission.admit`` / ``dialer_view``) and call ``machine.admit``."""

    peer: PeerHello
    token: str | None = None
    attest: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    role: str
    peer: PeerHello
    level: str
    key_tx: bytes = field(repr=False)
    key_rx: bytes = field(repr=False)
    transcript_hash: bytes = field(repr=False)
    tx_seq: int = 1
    rx_seq: int = 0
    peer_level: str | None = None


@dataclass(frozen=True, slots=True)
class Established:
    result: HandshakeResult


@dataclass(frozen=True, slots=True)
class Failed:
    """The handshake is over without a session. ``remote``: the peer refused us."""

    reason: str
    message: str = ""
    remote: bool = False


Output = Send | NeedAdmission | Established | Failed



def _x25519_public(priv: X25519PrivateKey) -> str:
    return b64encode(priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def transcript_hash(hello: Envelope, hello_ack: Envelope) -> bytes:
    return hashlib.sha256(signing_bytes(hello) + signing_bytes(hello_ack)).digest()


def derive_session_keys(
    own_eph_seed: bytes, peer_eph: str, hello: Envelope, hello_ack: Envelope
) -> tuple[bytes, bytes]:
    """SPEC 4 key schedule -> (dialer->acceptor key, acceptor->dialer key)."""
    priv = X25519PrivateKey.from_private_bytes(own_eph_seed)
    peer = X25519PublicKey.from_public_bytes(b64decode_strict(peer_eph, 32, "eph"))
    shared = priv.exchange(peer)  # cryptography raises ValueError on an all-zero result
    okm = HKDF(
        algorithm=hashes.SHA256(), length=64, salt=transcript_hash(hello, hello_ack),
        info=KDF_INFO,
    ).derive(shared)
    return okm[:32], okm[32:]


def _parse_hello(env: Envelope, fields: frozenset[str], max_caps: int) -> PeerHello:
    """Shape and self-certification of hello / hello_ack (SPEC 4 checks)."""
    d = env.data
    if env.box is not None or env.seq is not None:
        raise HandshakeError(message="hello frames are not sealed and carry no seq")
    if set(d) != fields:
        raise HandshakeError(message="hello fields do not match")
    if d["proto"] != PROTO:
        raise HandshakeError("version", "unsupported protocol")
    name = d["node_name"]
    if type(name) is not str or len(name) > 64:
        raise HandshakeError(message="node_name must be a string of at most 64 chars")
    caps = d["capabilities"]
    if (
        type(caps) is not list
        or len(caps) > max_caps
        or any(type(c) is not str or not 0 < len(c) <= 64 for c in caps)
    ):
        raise HandshakeError(message="capabilities must be at most 32 short strings")
    b64decode_strict(d["nonce"], 32, "nonce")
    b64decode_strict(d["eph"], 32, "eph")
    try:
        derived = node_id_for(d["public_key"])
    except RemoteProtocolError:
        raise HandshakeError(message="public_key is not an Ed25519 key") from None
    if env.src != derived:
        raise HandshakeError(message="src is not the node id of public_key")
    if not verify_envelope(env, d["public_key"]):
        raise HandshakeError(message="signature does not verify")
    return PeerHello(env.src, d["public_key"], name, tuple(caps))
