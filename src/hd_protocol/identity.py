"""Ed25519 identities and node ids (SPEC 2).

A node id is a short fingerprint of the public key; it is only ever trusted together
with the key it was first seen with (pinning). This module holds no file I/O: the
shells store ``Identity.private_bytes()`` themselves (atomically, mode 0600).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from .errors import ProtocolError, RemoteProtocolError

Rng = Callable[[int], bytes]
"""An injected randomness source: ``rng(n)`` returns ``n`` random bytes."""

NODE_ID_RE = re.compile(r"^[a-z2-7]{16}\Z")  # \Z: "$" would admit a trailing newline
_SEED_PEM_PREFIX = b"hd1-ed25519-seed:"


def b64encode(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def b64decode_strict(text: object, length: int | None, what: str) -> bytes:
    """Standard base64 with padding, canonical form only (SPEC 1.2)."""
    if type(text) is not str or not text.isascii():
        raise RemoteProtocolError("bad_field", f"{what} must be a base64 string")
    # binascii directly instead of base64.b64decode(validate=True): same verdicts, since
    # only the canonical encoding of the decoded bytes is accepted (a character outside
    # the alphabet, which a2b_base64 skips, makes it differ), without a regex per call
    # (signatures and boxes are on the hot path).
    try:
        raw = binascii.a2b_base64(text)
    except (binascii.Error, ValueError):
        raise RemoteProtocolError("bad_field", f"{what} is not valid base64") from None
    if binascii.b2a_base64(raw, newline=False).decode() != text:
        raise RemoteProtocolError("bad_field", f"{what} is not canonical base64")
    if length is not None and len(raw) != length:
        raise RemoteProtocolError("bad_field", f"{what} must be {length} bytes")
    return raw


def node_id_for_raw(raw_public_key: bytes) -> str:
    digest = hashlib.sha256(raw_public_key).digest()
    return base64.b32encode(digest).decode().lower()[:16]


def node_id_for(public_key: str) -> str:
    """``node_id`` = first 16 chars of lowercase base32(SHA-256(raw public key)).

    Anything but a string is a ``ProtocolError`` here, before the cache: the argument
    often comes straight from a peer's JSON, and a list or object is unhashable.
    """
    if type(public_key) is not str:
        raise RemoteProtocolError("bad_field", "public_key must be a base64 string")
    return _node_id_for_cached(public_key)


@lru_cache(maxsize=4096)
def _node_id_for_cached(public_key: str) -> str:
    return node_id_for_raw(b64decode_strict(public_key, 32, "public_key"))


def is_node_id(value: object) -> bool:
    return type(value) is str and NODE_ID_RE.match(value) is not None


@lru_cache(maxsize=4096)
def _load_public(public_key: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(b64decode_strict(public_key, 32, "public_key"))


def verify_signature(public_key: str, data: bytes, sig: str) -> bool:
    """True only for a valid Ed25519 signature; any malformed input is simply False."""
    try:
        key = _load_public(public_key)
        raw_sig = b64decode_strict(sig, None, "sig")  # verify refuses all but 64 bytes
        key.verify(raw_sig, data)
    except (ProtocolError, InvalidSignature, ValueError, TypeError):
        return False
    return True


class Identity:
    """A long-term Ed25519 key pair. Immutable; never logs or reprs its secret."""

    __slots__ = ("_key", "_seed", "node_id", "public_key", "public_key_raw")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        self.public_key_raw = private_key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw
        )
        self.public_key = b64encode(self.public_key_raw)
        self.node_id = node_id_for_raw(self.public_key_raw)

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @classmethod
    def generate(cls, rng: Rng | None = None) -> Identity:
        """A fresh identity. With ``rng`` the seed comes from it (deterministic tests);
        without, from the cryptography library's CSPRNG-backed key generation."""
        if rng is not None:
            return cls.from_seed(rng(32))
        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> str:
        """Base64 Ed25519 signature of ``data``."""
        return b64encode(self._key.sign(data))

    def sign_raw(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def private_bytes(self) -> bytes:
        """The secret in a small self-describing text form for the shell to store."""
        return _SEED_PEM_PREFIX + base64.b64encode(self._seed) + b"\n"

    @classmethod
    def from_private_bytes(cls, data: bytes) -> Identity:
        data = data.strip()
        if not data.startswith(_SEED_PEM_PREFIX):
            raise ValueError("not an hd identity key file")
        try:
            seed = base64.b64decode(data[len(_SEED_PEM_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("corrupt identity key file") from None
        return cls.from_seed(seed)

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id!r})"
