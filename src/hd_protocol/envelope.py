"""The peer envelope (SPEC 3): strict codec, signing bytes, sign/verify, seal/open.

Decoding is strict and total: any input either yields a fully valid ``Envelope`` or
raises ``ProtocolError`` with a ``code`` — never another exception, never a half-built
object. Signatures cover every field but ``sig`` and ``ttl`` (the only field a relay
may change), so ``dst`` cannot be re-addressed.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .cjson import MAX_INT, check_value, dumps_trusted, loads_strict
from .errors import CanonicalError, LocalProtocolError, ProtocolError
from .identity import Identity, Rng, b64decode_strict, is_node_id, verify_signature
from .limits import DEFAULT_LIMITS

SIGN_PREFIX = b"hd1-env\n"
BOX_PREFIX = b"hd1-box\n"
FIELDS = ("v", "type", "msg_id", "re", "src", "dst", "ts", "ttl", "seq", "data", "box", "sig")
_FIELD_SET = frozenset(FIELDS)
TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")  # \Z: "$" would admit a trailing newline
MSG_ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
MAX_TTL = 16
DEFAULT_TTL = 8

_wire_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One signed peer message. Build with ``make_envelope``; treat ``data`` as read-only."""

    type: str
    msg_id: str
    src: str
    dst: str | None
    ts: int
    data: dict[str, Any] = field(default_factory=dict, hash=False)
    re: str | None = None
    ttl: int = DEFAULT_TTL
    seq: int | None = None
    box: str | None = None
    sig: str = ""
    v: int = 1

    @property
    def sealed(self) -> bool:
        return self.box is not None


def new_msg_id(rng: Rng) -> str:
    """128 random bits as 32 lowercase hex chars."""
    return rng(16).hex()


def make_envelope(
    type: str,
    *,
    msg_id: str,
    src: str,
    dst: str | None,
    ts: int,
    data: dict[str, Any] | None = None,
    re: str | None = None,
    seq: int | None = None,
    ttl: int = DEFAULT_TTL,
) -> Envelope:
    """An unsigned envelope, checked field by field (a ``LocalProtocolError`` if not)."""
    env = Envelope(
        type=type, msg_id=msg_id, re=re, src=src, dst=dst, ts=ts, ttl=ttl, seq=seq,
        data={} if data is None else data,
    )
    try:
        _check_header(env.__getattribute__)
        check_value(env.data)
    except ProtocolError as exc:
        raise LocalProtocolError(exc.code, exc.message) from None
    return env


def _header(env: Envelope) -> dict[str, Any]:
    return {
        "v": env.v, "type": env.type, "msg_id": env.msg_id, "re": env.re, "src": env.src,
        "dst": env.dst, "ts": env.ts, "seq": env.seq, "data": env.data, "box": env.box,
    }


def signing_bytes(env: Envelope) -> bytes:
    """``b"hd1-env\\n" + cjson(envelope without sig and ttl)`` (SPEC 3)."""
    return SIGN_PREFIX + dumps_trusted(_header(env))


def sign_envelope(env: Envelope, identity: Identity) -> Envelope:
    if env.src != identity.node_id:
        raise LocalProtocolError("src", "src must be the signer's node id")
    check_value(env.data)
    return replace(env, sig=identity.sign(signing_bytes(env)))


def verify_envelope(env: Envelope, public_key: str) -> bool:
    """True iff ``sig`` is a valid signature of ``signing_bytes(env)`` by ``public_key``."""
    return verify_signature(public_key, signing_bytes(env), env.sig)


def encode_envelope(env: Envelope) -> str:
    """Wire text of a signed envelope (fields in SPEC order, compact, UTF-8 literal)."""
    if not env.sig:
        raise LocalProtocolError("unsigned", "sign the envelope before encoding it")
    return _wire_encoder.encode(
        {
            "v": env.v, "type": env.type, "msg_id": env.msg_id, "re": env.re, "src": env.src,
            "dst": env.dst, "ts": env.ts, "ttl": env.ttl, "seq": env.seq, "data": env.data,
            "box": env.box, "sig": env.sig,
        }
    )


def _bad(name: str, why: str) -> ProtocolError:
    return ProtocolError("bad_field", f"{name}: {why}")


def _int(value: object, name: str, lo: int, hi: int) -> None:
    if type(value) is not int:
        raise _bad(name, "must be an integer")
    if not lo <= value <= hi:
        raise _bad(name, f"must be in {lo}..{hi}")


def _check_header(get: Any) -> None:
    """Field rules of SPEC 3 (``get(name)`` reads a field from a dict or an Envelope)."""
    v = get("v")
    if type(v) is not int or v != 1:  # SPEC 3: `v` is 1; anything else is `version`
        raise ProtocolError("version", "unsupported envelope version")
    t = get("type")
    if type(t) is not str or TYPE_RE.match(t) is None:
        raise _bad("type", "must match ^[a-z][a-z0-9_]{0,31}$")
    mid = get("msg_id")
    if type(mid) is not str or MSG_ID_RE.match(mid) is None:
        raise _bad("msg_id", "must be 32 lowercase hex chars")
    r = get("re")
    if r is not None and (type(r) is not str or MSG_ID_RE.match(r) is None):
        raise _bad("re", "must be null or 32 lowercase hex chars")
    if not is_node_id(get("src")):
        raise _bad("src", "must be a node id")
    dst = get("dst")
    if dst is not None and not is_node_id(dst):
        raise _bad("dst", "must be null or a node id")
    _int(get("ts"), "ts", 0, MAX_INT)
    _int(get("ttl"), "ttl", 0, MAX_TTL)
    seq = get("seq")
    if seq is not None:
        _int(seq, "seq", 0, MAX_INT)
    data = get("data")
    if type(data) is not dict:
        raise _bad("data", "must be an object")
    box = get("box")
    if box is not None:
        if type(box) is not str or not box:
            raise _bad("box", "must be null or base64")
        if data:
            raise _bad("data", "must be {} when sealed")
        if seq is None:
            raise _bad("seq", "a sealed envelope carries a seq")


def wire_size(text: str | bytes | bytearray) -> int:
    """Size in bytes of a frame as it travels (UTF-8 for text)."""
    if not isinstance(text, str):
        return len(text)
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def decode_envelope(
    text: str | bytes, *, max_bytes: int = DEFAULT_LIMITS.max_envelope_bytes
) -> Envelope:
    """Strictly decode one wire envelope (SPEC 3). Raises only ``ProtocolError``."""
    if not isinstance(text, str | bytes | bytearray):
        raise ProtocolError("bad_json", "an envelope is text")
    if wire_size(text) > max_bytes:
        raise ProtocolError("too_large", f"envelope over {max_bytes} bytes")
    try:
        obj = loads_strict(text)
    except CanonicalError as exc:
        raise ProtocolError("bad_json", exc.message) from None
    if type(obj) is not dict:
        raise ProtocolError("bad_envelope", "an envelope is a JSON object")
    if obj.keys() != _FIELD_SET:
        missing = _FIELD_SET - obj.keys()
        if missing:
            raise ProtocolError("bad_envelope", f"missing field {sorted(missing)[0]}")
        raise ProtocolError("bad_envelope", "unknown field")
    _check_header(obj.__getitem__)
    box = obj["box"]
    if box is not None:
        b64decode_strict(box, None, "box")
    b64decode_strict(obj["sig"], 64, "sig")
    return Envelope(
        v=obj["v"], type=obj["type"], msg_id=obj["msg_id"], re=obj["re"], src=obj["src"],
        dst=obj["dst"], ts=obj["ts"], ttl=obj["ttl"], seq=obj["seq"], data=obj["data"],
        box=box, sig=obj["sig"],
    )


# --- sealing (SPEC 3.1) -------------------------------------------------------------


def box_nonce(seq: int) -> bytes:
    return b"\x00\x00\x00\x00" + seq.to_bytes(8, "big")


def box_aad(env: Envelope) -> bytes:
    return BOX_PREFIX + dumps_trusted(
        {"type": env.type, "msg_id": env.msg_id, "re": env.re, "src": env.src,
         "dst": env.dst, "ts": env.ts, "seq": env.seq}
    )


def seal_with(aead: ChaCha20Poly1305, env: Envelope, payload: dict[str, Any]) -> Envelope:
    """``seal_envelope`` with a prepared AEAD object (sessions keep one per direction)."""
    if env.seq is None:
        raise LocalProtocolError("seq", "a sealed envelope needs a seq")
    if type(payload) is not dict:
        raise LocalProtocolError("bad_field", "payload must be an object")
    check_value(payload)
    ct = aead.encrypt(box_nonce(env.seq), dumps_trusted(payload), box_aad(env))
    return replace(env, data={}, box=base64.b64encode(ct).decode("ascii"), sig="")


def open_with(aead: ChaCha20Poly1305, env: Envelope) -> dict[str, Any]:
    if env.box is None or env.seq is None:
        raise ProtocolError("not_sealed", "envelope is not sealed")
    ct = b64decode_strict(env.box, None, "box")
    try:
        pt = aead.decrypt(box_nonce(env.seq), ct, box_aad(env))
    except InvalidTag:
        raise ProtocolError("box", "box does not open") from None
    try:
        payload = loads_strict(pt)
    except CanonicalError as exc:
        raise ProtocolError("box", f"payload: {exc.message}") from None
    if type(payload) is not dict:
        raise ProtocolError("box", "payload is not an object")
    return payload


def _aead(key: bytes) -> ChaCha20Poly1305:
    if len(key) != 32:
        raise LocalProtocolError("key", "a box key is 32 bytes")
    return ChaCha20Poly1305(key)


def seal_envelope(env: Envelope, key: bytes, payload: dict[str, Any]) -> Envelope:
    """Encrypt ``payload`` into ``box`` (``data`` becomes ``{}``); sign afterwards."""
    return seal_with(_aead(key), env, payload)


def open_envelope(env: Envelope, key: bytes) -> dict[str, Any]:
    """Decrypt ``box``; raises ``ProtocolError`` (code ``box``) if it does not open."""
    return open_with(_aead(key), env)
