"""What the lobby and the relay broker share (SPEC 7): the frame codec, the server
challenge and the two signed proofs of identity, error codes, and the rate limiter.

Frames are JSON objects ``{"type": ..., ...}`` in WebSocket text messages, decoded
strictly (``loads_strict``: no floats, no duplicate keys, bounded depth) into a dict
whose members each handler then checks exactly. A server never trusts a frame's
claims about who sent it: a node proves its identity by signing the server's fresh
nonce together with the server's id, so a captured ``register`` or ``attach`` is
useless on another connection or another server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..cjson import canonical_json, loads_strict
from ..envelope import wire_size, with_ttl
from ..errors import CanonicalError, RemoteProtocolError
from ..identity import Identity, b64decode_strict, b64encode, node_id_for, verify_signature

REGISTER_PREFIX = b"hd1-lobby-register\n"
ATTACH_PREFIX = b"hd1-relay-attach\n"
ERROR_CODES = frozenset({
    "bad_frame", "unregistered", "auth", "replaced", "no_room", "denied", "full",
    "not_found", "rate_limited", "too_large", "bad_request", "queue_full", "unavailable",
})
TYPE_RE = re.compile(r"[a-z][a-z_]{0,31}")
NONCE_BYTES = 32

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_frame(type_: str, fields: Mapping[str, Any] | None = None) -> str:
    return _encoder.encode({"type": type_, **(fields or {})})


def encode_value(value: Any) -> str:
    """``value`` as ``encode_frame`` writes it inside a frame."""
    return _encoder.encode(value)


def relayed_wire(frame: str | bytes, to: str, relayed: Mapping[str, Any]) -> str:
    """The envelope of the ``relay {to, envelope}`` frame ``frame`` (decoded and checked:
    ``relayed`` is its envelope with ``ttl`` lowered), as the text to pass on. A frame
    laid out as nodes write it (``relay_frame`` around ``encode_envelope``) keeps the
    sender's text but for the new ``ttl``: the envelope is not encoded a second time (it
    was most of what a relay spent on one). Anything else is encoded from ``relayed``."""
    head = f'{{"type":"relay","to":"{to}","envelope":'
    if isinstance(frame, str) and frame.startswith(head) and frame.endswith("}"):
        spliced = with_ttl(frame[len(head):-1], relayed, relayed["ttl"])
        if spliced is not None:
            return spliced
    return encode_value(relayed)


def relay_delivery(src: str, envelope_wire: str) -> str:
    """``encode_frame("relay", {"from": src, "envelope": …})`` around an envelope's
    text (``src``: a checked node id)."""
    return f'{{"type":"relay","from":"{src}","envelope":{envelope_wire}}}'


def queued_size(envelope_wire: str) -> int:
    """The size the relay's limits count for an envelope (``encode_value`` of it): that
    of the frame ``{"type":"x","e":…}`` around it."""
    return wire_size(envelope_wire) + len('{"type":"x","e":}')


def error_frame(code: str, message: str) -> str:
    assert code in ERROR_CODES, code
    return encode_frame("error", {"code": code, "message": message})


def decode_frame(text: str | bytes, max_bytes: int) -> dict[str, Any]:
    """One frame as a dict with a well-formed ``type``, or ``RemoteProtocolError``."""
    if wire_size(text) > max_bytes:
        raise RemoteProtocolError("too_large", f"frame over {max_bytes} bytes")
    try:
        obj = loads_strict(text)
    except CanonicalError as exc:
        raise RemoteProtocolError("bad_frame", exc.message) from None
    if type(obj) is not dict:
        raise RemoteProtocolError("bad_frame", "a frame is a JSON object")
    t = obj.get("type")
    if type(t) is not str or TYPE_RE.fullmatch(t) is None:
        raise RemoteProtocolError("bad_frame", "a frame has a type")
    return obj


def fields(frame: Mapping[str, Any], required: Iterable[str],
           optional: Iterable[str] = ()) -> None:
    """The frame has exactly ``type``, the required members and some optional ones."""
    have = set(frame) - {"type"}
    req = set(required)
    if not req <= have or not have <= req | set(optional):
        raise RemoteProtocolError("bad_request", f"{frame['type']} takes exactly {sorted(req)}"
                                  + (f" and optionally {sorted(optional)}" if optional else ""))


def text(value: object, name: str, *, max_chars: int, min_chars: int = 0) -> str:
    if type(value) is not str or not min_chars <= len(value) <= max_chars:
        raise RemoteProtocolError("bad_request", f"{name} is a string of {min_chars}.."
                                                 f"{max_chars} chars")
    return value


# --- the challenge and the proofs -----------------------------------------------------


def challenge(identity: Identity, nonce: bytes) -> str:
    """The first frame of every lobby and relay connection (SPEC 7.1, 7.7)."""
    return encode_frame("challenge", {"nonce": b64encode(nonce), "server_id": identity.node_id,
                                      "server_key": identity.public_key})


@dataclass(frozen=True, slots=True)
class ServerHello:
    """A server's challenge, checked: its key makes its id."""

    nonce: str
    server_id: str
    server_key: str


def parse_challenge(frame: Mapping[str, Any], pinned_key: str | None = None) -> ServerHello:
    fields(frame, ("nonce", "server_id", "server_key"))
    b64decode_strict(frame["nonce"], NONCE_BYTES, "nonce")
    try:
        derived = node_id_for(frame["server_key"])
    except RemoteProtocolError:
        raise RemoteProtocolError("auth", "the server key is not a key") from None
    if derived != frame["server_id"]:
        raise RemoteProtocolError("auth", "server_id is not the id of server_key")
    if pinned_key is not None and frame["server_key"] != pinned_key:
        raise RemoteProtocolError("auth", "the server is not the one we know")
    return ServerHello(frame["nonce"], frame["server_id"], frame["server_key"])


def register_bytes(nonce: str, server_id: str, node_id: str, public_key: str,
                   node_name: str, addresses: list[Any], capabilities: list[str]) -> bytes:
    """What a node signs to register with a lobby (SPEC 7.1)."""
    return REGISTER_PREFIX + canonical_json({
        "nonce": nonce, "server_id": server_id, "node_id": node_id, "public_key": public_key,
        "node_name": node_name, "addresses": addresses, "capabilities": capabilities})


def attach_bytes(nonce: str, server_id: str, node_id: str, public_key: str) -> bytes:
    """What a node signs to attach to a relay (SPEC 7.7)."""
    return ATTACH_PREFIX + canonical_json({"nonce": nonce, "server_id": server_id,
                                           "node_id": node_id, "public_key": public_key})


def check_identity_proof(node_id: object, public_key: object, sig: object,
                         signed: bytes) -> str:
    """The node id that ``public_key`` makes and ``sig`` proves, or ``auth``."""
    if type(public_key) is not str or type(node_id) is not str:
        raise RemoteProtocolError("auth", "node_id and public_key are strings")
    try:
        derived = node_id_for(public_key)
    except RemoteProtocolError:
        raise RemoteProtocolError("auth", "public_key is not a key") from None
    if derived != node_id:
        raise RemoteProtocolError("auth", "node_id is not the id of public_key")
    if type(sig) is not str or not verify_signature(public_key, signed, sig):
        raise RemoteProtocolError("auth", "the signature does not verify")
    return node_id


# --- rate limiting (SPEC 7, 11) ----------------------------------------------------------


class TokenBucket:
    """``rate`` frames per second with bursts of ``burst``, driven by a monotonic ``now``
    in ms (no clock read here)."""

    def __init__(self, rate_per_s: float, burst: int, now: int) -> None:
        self.rate = rate_per_s / 1000.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = now

    def take(self, now: int, n: float = 1.0) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0, now - self.at) * self.rate)
        self.at = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True
