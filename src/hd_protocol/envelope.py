"""The peer envelope (SPEC 3): strict codec, signing bytes, sign/verify, seal/open.

Decoding is strict and total: any input either yields a fully valid ``Envelope`` or
raises ``ProtocolError`` with a ``code`` — never another exception, never a half-built
object. Signatures cover every field but ``sig`` and ``ttl`` (the only field a relay
may change), so ``dst`` cannot be re-addressed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .cjson import MAX_INT, check_value, dumps_trusted, loads_strict
from .errors import CanonicalError, LocalProtocolError, ProtocolError, RemoteProtocolError
from .identity import NODE_ID_RE, Identity, Rng, b64decode_strict, verify_signature
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


# Envelopes are built four times per message on the hot path (make, seal, sign on one
# side, decode on the other). The frozen dataclass __init__ sets each slot through
# object.__setattr__; setting the slots through their descriptors builds the very same
# object in about a third of the time. Only for internal use with all fields at hand.
_SLOT_SETTERS: tuple[Any, ...] = tuple(
    Envelope.__dict__[name].__set__
    for name in ("v", "type", "msg_id", "re", "src", "dst", "ts", "ttl", "seq", "data",
                 "box", "sig")
)


def _build(
    v: int, type: str, msg_id: str, re: str | None, src: str, dst: str | None, ts: int,
    ttl: int, seq: int | None, data: dict[str, Any], box: str | None, sig: str,
) -> Envelope:
    env: Envelope = object.__new__(Envelope)
    s_v, s_type, s_msg_id, s_re, s_src, s_dst, s_ts, s_ttl, s_seq, s_data, s_box, s_sig = (
        _SLOT_SETTERS
    )
    s_v(env, v)
    s_type(env, type)
    s_msg_id(env, msg_id)
    s_re(env, re)
    s_src(env, src)
    s_dst(env, dst)
    s_ts(env, ts)
    s_ttl(env, ttl)
    s_seq(env, seq)
    s_data(env, data)
    s_box(env, box)
    s_sig(env, sig)
    return env


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
    env = _build(1, type, msg_id, re, src, dst, ts, ttl, seq, {} if data is None else data,
                 None, "")
    try:
        _check_fields(1, type, msg_id, re, src, dst, ts, ttl, seq, env.data, None)
        check_value(env.data)
    except ProtocolError as exc:
        raise LocalProtocolError(exc.code, exc.message) from None
    return env


def _check_local(value: object) -> None:
    """A value we are about to sign or seal must be canonical: our caller's mistake."""
    try:
        check_value(value)
    except CanonicalError as exc:
        raise LocalProtocolError(exc.code, exc.message) from None


def _header(env: Envelope) -> dict[str, Any]:
    return {
        "v": env.v, "type": env.type, "msg_id": env.msg_id, "re": env.re, "src": env.src,
        "dst": env.dst, "ts": env.ts, "seq": env.seq, "data": env.data, "box": env.box,
    }


# Hot-path shortcut for the canonical bytes of envelope headers. Every sealed envelope
# is signed once and verified once, and its box AAD is built on both ends; going through
# the JSON encoder for these small, fixed-shape objects costs as much as the AEAD. When
# every string is one cjson writes verbatim between quotes (nothing to escape) and every
# number is a plain int, the canonical text is a fixed template with keys already in
# sorted order; anything else takes the general path. Both give identical bytes.


def _verbatim(s: object) -> bool:
    """True if cjson writes the str ``s`` as itself between quotes: it only escapes
    ``"``, ``\\`` and control characters, none of which is printable."""
    return type(s) is str and s.isprintable() and '"' not in s and "\\" not in s


def _fast_fields(env: Envelope) -> tuple[str, str, str, str, str] | None:
    """(type, msg_id, re, src, dst) as cjson writes them, when none needs escaping
    (identifier, letters and digits, or null); None means: use the general path."""
    t, mid, r, src, dst = env.type, env.msg_id, env.re, env.src, env.dst
    if (
        type(t) is str and t.isidentifier()
        and type(mid) is str and mid.isalnum()
        and type(src) is str and src.isalnum()
        and (r is None or (type(r) is str and r.isalnum()))
        and (dst is None or (type(dst) is str and dst.isalnum()))
        and type(env.ts) is int and (env.seq is None or type(env.seq) is int)
    ):
        return (
            f'"{t}"', f'"{mid}"', "null" if r is None else f'"{r}"', f'"{src}"',
            "null" if dst is None else f'"{dst}"',
        )
    return None


def with_ttl(text: str, obj: Mapping[str, Any], ttl: int) -> str | None:
    """``text`` with its ``ttl`` made ``ttl``, the rest untouched — ``text`` being the wire
    text an envelope was decoded from (strictly: no key twice) and ``obj`` what it was
    decoded to (any ``ttl``: only the other fields are read). Only when ``text`` begins
    as ``encode_envelope`` writes one, up to and with ``"ttl":N,``: those are the first
    tokens of the object, so that ``N`` is its one top-level ``ttl``. Else None (encode
    the object instead)."""
    v, t, mid, r, src, dst, ts = (obj.get(k) for k in FIELDS[:7])
    if not (type(v) is int and type(ts) is int and all(
            type(x) is str and x.isascii() and x.isalnum() for x in (mid, src))
            and type(t) is str and t.isascii() and t.isidentifier()
            and all(x is None or (type(x) is str and x.isascii() and x.isalnum())
                    for x in (r, dst))):
        return None
    re_, dst_ = "null" if r is None else f'"{r}"', "null" if dst is None else f'"{dst}"'
    head = (f'{{"v":{v},"type":"{t}","msg_id":"{mid}","re":{re_},"src":"{src}",'
            f'"dst":{dst_},"ts":{ts},"ttl":')
    if not text.startswith(head):
        return None
    at = len(head)
    end = at
    while end < len(text) and text[end].isascii() and text[end].isdigit():
        end += 1
    if end == at or end >= len(text) or text[end] != ",":
        return None
    return f"{head}{ttl}{text[end:]}"


def signing_bytes(env: Envelope) -> bytes:
    """``b"hd1-env\\n" + cjson(envelope without sig and ttl)`` (SPEC 3)."""
    box, data = env.box, env.data
    if (
        type(data) is dict and not data and type(env.v) is int
        and (box is None or _verbatim(box))
    ):
        f = _fast_fields(env)
        if f is not None:
            b = "null" if box is None else f'"{box}"'
            seq = "null" if env.seq is None else env.seq
            return SIGN_PREFIX + (
                f'{{"box":{b},"data":{{}},"dst":{f[4]},"msg_id":{f[1]},"re":{f[2]},'
                f'"seq":{seq},"src":{f[3]},"ts":{env.ts},"type":{f[0]},"v":{env.v}}}'
            ).encode()
    return SIGN_PREFIX + dumps_trusted(_header(env))


def _with(env: Envelope, data: dict[str, Any], box: str | None, sig: str) -> Envelope:
    """``dataclasses.replace`` for the three fields sealing and signing set (faster)."""
    return _build(env.v, env.type, env.msg_id, env.re, env.src, env.dst, env.ts, env.ttl,
                  env.seq, data, box, sig)


def sign_envelope(env: Envelope, identity: Identity) -> Envelope:
    if env.src != identity.node_id:
        raise LocalProtocolError("src", "src must be the signer's node id")
    _check_local(env.data)
    return _with(env, env.data, env.box, identity.sign(signing_bytes(env)))


def verify_envelope(env: Envelope, public_key: str) -> bool:
    """True iff ``sig`` is a valid signature of ``signing_bytes(env)`` by ``public_key``."""
    return verify_signature(public_key, signing_bytes(env), env.sig)


def encode_envelope(env: Envelope) -> str:
    """Wire text of a signed envelope (fields in SPEC order, compact, UTF-8 literal)."""
    if not env.sig:
        raise LocalProtocolError("unsigned", "sign the envelope before encoding it")
    box, sig = env.box, env.sig
    if (
        type(env.data) is dict and not env.data and type(env.v) is int
        and type(env.ttl) is int and _verbatim(sig) and (box is None or _verbatim(box))
    ):
        f = _fast_fields(env)
        if f is not None:  # the same text as the encoder below (see signing_bytes)
            b = "null" if box is None else f'"{box}"'
            seq = "null" if env.seq is None else env.seq
            return (
                f'{{"v":{env.v},"type":{f[0]},"msg_id":{f[1]},"re":{f[2]},"src":{f[3]},'
                f'"dst":{f[4]},"ts":{env.ts},"ttl":{env.ttl},"seq":{seq},"data":{{}},'
                f'"box":{b},"sig":"{sig}"}}'
            )
    return _wire_encoder.encode(
        {
            "v": env.v, "type": env.type, "msg_id": env.msg_id, "re": env.re, "src": env.src,
            "dst": env.dst, "ts": env.ts, "ttl": env.ttl, "seq": env.seq, "data": env.data,
            "box": env.box, "sig": env.sig,
        }
    )


def _bad(name: str, why: str) -> ProtocolError:
    return RemoteProtocolError("bad_field", f"{name}: {why}")


def _int(value: object, name: str, lo: int, hi: int) -> None:
    if type(value) is not int:
        raise _bad(name, "must be an integer")
    if not lo <= value <= hi:
        raise _bad(name, f"must be in {lo}..{hi}")


_match_type, _match_msg_id, _match_node_id = TYPE_RE.match, MSG_ID_RE.match, NODE_ID_RE.match


def _check_fields(v: object, t: object, mid: object, r: object, src: object, dst: object,
                  ts: object, ttl: object, seq: object, data: object, box: object) -> None:
    """The SPEC 3 field rules, in order (every envelope in and out passes here)."""
    if type(v) is not int or v != 1:  # SPEC 3: `v` is 1; anything else is `version`
        raise RemoteProtocolError("version", "unsupported envelope version")
    if type(t) is not str or _match_type(t) is None:
        raise _bad("type", "must match ^[a-z][a-z0-9_]{0,31}$")
    if type(mid) is not str or _match_msg_id(mid) is None:
        raise _bad("msg_id", "must be 32 lowercase hex chars")
    if r is not None and (type(r) is not str or _match_msg_id(r) is None):
        raise _bad("re", "must be null or 32 lowercase hex chars")
    if type(src) is not str or _match_node_id(src) is None:
        raise _bad("src", "must be a node id")
    if dst is not None and (type(dst) is not str or _match_node_id(dst) is None):
        raise _bad("dst", "must be null or a node id")
    if type(ts) is not int or not 0 <= ts <= MAX_INT:
        _int(ts, "ts", 0, MAX_INT)
    if type(ttl) is not int or not 0 <= ttl <= MAX_TTL:
        _int(ttl, "ttl", 0, MAX_TTL)
    if seq is not None and (type(seq) is not int or not 0 <= seq <= MAX_INT):
        _int(seq, "seq", 0, MAX_INT)
    if type(data) is not dict:
        raise _bad("data", "must be an object")
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
        raise RemoteProtocolError("bad_json", "an envelope is text")
    if wire_size(text) > max_bytes:
        raise RemoteProtocolError("too_large", f"envelope over {max_bytes} bytes")
    try:
        # Parsed without the generic domain walk: every header field is checked by
        # _check_fields (types, ranges, patterns, base64), so only ``data`` — the one
        # free-form field — still needs the canonical-domain check (at depth 1).
        obj = loads_strict(text, check=False)
        if type(obj) is dict and type(obj.get("data")) is dict:
            check_value(obj["data"], 1)
    except CanonicalError as exc:
        raise RemoteProtocolError("bad_json", exc.message) from None
    return envelope_from_obj(obj)


def envelope_from_obj(obj: object) -> Envelope:
    """An envelope from its already-parsed JSON object (``loads_strict`` domain), with
    every SPEC 3 rule of ``decode_envelope`` but the parsing: how a relayed envelope,
    which arrives as a member of a relay frame, is read."""
    if type(obj) is not dict:
        raise RemoteProtocolError("bad_envelope", "an envelope is a JSON object")
    if obj.keys() != _FIELD_SET:
        missing = _FIELD_SET - obj.keys()
        if missing:
            raise RemoteProtocolError("bad_envelope", f"missing field {sorted(missing)[0]}")
        raise RemoteProtocolError("bad_envelope", "unknown field")
    _check_fields(obj["v"], obj["type"], obj["msg_id"], obj["re"], obj["src"], obj["dst"],
                  obj["ts"], obj["ttl"], obj["seq"], obj["data"], obj["box"])
    box = obj["box"]
    if box is not None:
        b64decode_strict(box, None, "box")
    b64decode_strict(obj["sig"], 64, "sig")
    return _build(obj["v"], obj["type"], obj["msg_id"], obj["re"], obj["src"], obj["dst"],
                  obj["ts"], obj["ttl"], obj["seq"], obj["data"], box, obj["sig"])
