"""Sealing (SPEC 3.1): every session envelope's payload travels encrypted.

ChaCha20-Poly1305 with the direction's key, the nonce made from the envelope's ``seq``
and the header (type, ids, src, dst, ts, seq) as associated data, so a box cannot be
moved to another envelope. The box is then covered by the envelope's signature.
"""

from __future__ import annotations

import binascii
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .cjson import dumps_trusted, loads_strict
from .envelope import (
    BOX_PREFIX,
    SIGN_PREFIX,
    Envelope,
    _check_local,
    _fast_fields,
    _with,
    encode_envelope,
    sign_envelope,
)
from .errors import CanonicalError, LocalProtocolError, RemoteProtocolError
from .identity import Identity, b64decode_strict


def box_nonce(seq: int) -> bytes:
    return b"\x00\x00\x00\x00" + seq.to_bytes(8)


def box_aad(env: Envelope) -> bytes:
    """``b"hd1-box\\n" + cjson({type, msg_id, re, src, dst, ts, seq})`` (SPEC 3.1)."""
    f = _fast_fields(env)
    if f is not None:
        seq = "null" if env.seq is None else env.seq
        return BOX_PREFIX + (
            f'{{"dst":{f[4]},"msg_id":{f[1]},"re":{f[2]},"seq":{seq},"src":{f[3]},'
            f'"ts":{env.ts},"type":{f[0]}}}'
        ).encode()
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
    _check_local(payload)
    ct = aead.encrypt(box_nonce(env.seq), dumps_trusted(payload), box_aad(env))
    return _with(env, {}, binascii.b2a_base64(ct, newline=False).decode(), "")


def open_with(aead: ChaCha20Poly1305, env: Envelope) -> dict[str, Any]:
    if env.box is None or env.seq is None:
        raise RemoteProtocolError("not_sealed", "envelope is not sealed")
    ct = b64decode_strict(env.box, None, "box")
    try:
        pt = aead.decrypt(box_nonce(env.seq), ct, box_aad(env))
    except InvalidTag:
        raise RemoteProtocolError("box", "box does not open") from None
    try:
        payload = loads_strict(pt)
    except CanonicalError as exc:
        raise RemoteProtocolError("box", f"payload: {exc.message}") from None
    if type(payload) is not dict:
        raise RemoteProtocolError("box", "payload is not an object")
    return payload


def seal_sign_encode(aead: ChaCha20Poly1305, identity: Identity, env: Envelope,
                     payload: dict[str, Any]) -> str:
    """``encode_envelope(sign_envelope(seal_with(aead, env, payload), identity))`` in one
    pass: the header's canonical pieces are worked out once for the AAD, the signing
    bytes and the wire text (a session does this for every envelope it sends). The
    result is byte for byte that of the three calls (tests/property checks it)."""
    f = _fast_fields(env)
    if (f is None or env.seq is None or type(env.ttl) is not int or type(env.v) is not int
            or env.src != identity.node_id or env.data):
        return encode_envelope(sign_envelope(seal_with(aead, env, payload), identity))
    if type(payload) is not dict:
        raise LocalProtocolError("bad_field", "payload must be an object")
    _check_local(payload)
    t, mid, r, src, dst = f
    seq, ts = env.seq, env.ts
    aad = BOX_PREFIX + (f'{{"dst":{dst},"msg_id":{mid},"re":{r},"seq":{seq},"src":{src},'
                        f'"ts":{ts},"type":{t}}}').encode()
    ct = aead.encrypt(box_nonce(seq), dumps_trusted(payload), aad)
    box = binascii.b2a_base64(ct, newline=False).decode()
    signing = SIGN_PREFIX + (
        f'{{"box":"{box}","data":{{}},"dst":{dst},"msg_id":{mid},"re":{r},"seq":{seq},'
        f'"src":{src},"ts":{ts},"type":{t},"v":{env.v}}}').encode()
    sig = identity.sign(signing)
    return (f'{{"v":{env.v},"type":{t},"msg_id":{mid},"re":{r},"src":{src},"dst":{dst},'
            f'"ts":{ts},"ttl":{env.ttl},"seq":{seq},"data":{{}},"box":"{box}","sig":"{sig}"}}')


_last_aead: tuple[bytes, ChaCha20Poly1305] | None = None


def _aead(key: bytes) -> ChaCha20Poly1305:
    """The AEAD for ``key``; the last one is kept, since callers of the one-shot
    ``seal_envelope``/``open_envelope`` tend to use one key many times in a row
    (sessions keep their own two and never come here)."""
    global _last_aead
    if len(key) != 32:
        raise LocalProtocolError("key", "a box key is 32 bytes")
    last = _last_aead
    if last is not None and last[0] == key:
        return last[1]
    aead = ChaCha20Poly1305(bytes(key))
    _last_aead = (bytes(key), aead)
    return aead


def seal_envelope(env: Envelope, key: bytes, payload: dict[str, Any]) -> Envelope:
    """Encrypt ``payload`` into ``box`` (``data`` becomes ``{}``); sign afterwards."""
    return seal_with(_aead(key), env, payload)


def open_envelope(env: Envelope, key: bytes) -> dict[str, Any]:
    """Decrypt ``box``; raises ``ProtocolError`` (code ``box``) if it does not open."""
    return open_with(_aead(key), env)


# Wire characters of a sealed envelope around its box, each field at its largest
# (type 32, msg_id and re 32, src and dst 16, ts and seq 16 digits, ttl 2, sig 88;
# 103 for keys and punctuation): 353, rounded up.
SEALED_OVERHEAD = 360
_TAG_BYTES = 16  # ChaCha20-Poly1305


def sealed_size(payload: dict[str, Any]) -> int:
    """The most wire bytes a sealed envelope carrying ``payload`` can take (SPEC 3.1).

    cjson of the payload (escaping included: 500 000 newlines are a million bytes),
    plus the AEAD tag, base64 (4/3), plus the largest header. A feature checks this
    against the envelope limit *before* it accepts a write it will have to send, so a
    write that could never leave is refused instead of stored and then lost.
    """
    n = len(dumps_trusted(payload)) + _TAG_BYTES
    return 4 * ((n + 2) // 3) + SEALED_OVERHEAD


def check_sealed_size(payload: dict[str, Any], max_bytes: int) -> None:
    """``RemoteProtocolError("too_large")`` if ``payload`` cannot fit one envelope."""
    if sealed_size(payload) > max_bytes:
        raise RemoteProtocolError(
            "too_large", f"this would be an envelope over {max_bytes} bytes once sealed"
        )
