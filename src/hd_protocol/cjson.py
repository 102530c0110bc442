"""Canonical JSON (SPEC 1.1): RFC 8785 restricted so every language agrees trivially.

Two halves: ``canonical_json`` turns a value into the one byte string that is signed,
and ``loads_strict`` parses wire text into that same domain (no floats, no duplicate
keys, no NaN, bounded depth) so a decoded value can always be re-canonicalized.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import CanonicalError

MAX_INT = 2**53 - 1
MAX_DEPTH = 32

_encoder = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


def check_value(value: object, depth: int = 0) -> None:
    """Raise ``CanonicalError`` unless ``value`` lies in the canonical domain.

    Depth counts containers: a scalar at top level is depth 0, ``[]`` is depth 1.
    """
    t = type(value)
    if t is dict:
        if depth >= MAX_DEPTH:
            raise CanonicalError(message="nesting too deep")
        for k, v in value.items():  # type: ignore[attr-defined]
            if type(k) is not str or not k.isascii():
                raise CanonicalError(message="object keys must be ASCII strings")
            _check_member(v, depth)
    elif t is list:
        if depth >= MAX_DEPTH:
            raise CanonicalError(message="nesting too deep")
        for v in value:  # type: ignore[attr-defined]
            _check_member(v, depth)
    else:
        _check_member(value, depth - 1)


def _check_member(v: object, depth: int) -> None:
    """``check_value(v, depth + 1)`` with the common scalars handled without recursing
    (every signed or sealed envelope is checked on the hot path; same verdicts)."""
    t = type(v)
    if t is str:
        if not v.isascii():  # type: ignore[attr-defined]
            _check_str(v)  # type: ignore[arg-type]
    elif t is int:
        if not -MAX_INT <= v <= MAX_INT:  # type: ignore[operator]
            raise CanonicalError(message="integer out of range")
    elif v is None or t is bool:
        return
    elif t is dict or t is list:
        check_value(v, depth + 1)
    elif t is float:
        raise CanonicalError(message="floats are not allowed")
    else:
        raise CanonicalError(message=f"type {t.__name__} is not allowed")


def _check_str(s: str) -> None:
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalError(message="lone surrogate in string") from None


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of ``value`` (SPEC 1.1); ``CanonicalError`` otherwise."""
    check_value(value)
    return _encoder.encode(value).encode("utf-8")


def dumps_trusted(value: Any) -> bytes:
    """Canonical bytes of a value already known to be in the domain (hot paths)."""
    return _encoder.encode(value).encode("utf-8")


def _no_float(text: str) -> Any:
    raise CanonicalError(message="floats are not allowed")


def _no_constant(text: str) -> Any:
    raise CanonicalError(message=f"{text} is not allowed")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise CanonicalError(message="duplicate object key")
    return out


_decoder = json.JSONDecoder(
    parse_float=_no_float, parse_constant=_no_constant, object_pairs_hook=_pairs
)


def loads_strict(text: str | bytes, *, check: bool = True) -> Any:
    """Parse JSON text into the canonical domain or raise ``CanonicalError``.

    Bytes must be UTF-8. Rejects floats, NaN/Infinity, duplicate keys, non-ASCII keys,
    out-of-range integers, lone surrogates and nesting deeper than 32.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise CanonicalError("bad_json", "not UTF-8") from None
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        value, end = _decoder.raw_decode(text, start)
    except CanonicalError:
        raise
    except RecursionError:
        raise CanonicalError("bad_json", "nesting too deep") from None
    except (ValueError, TypeError):
        raise CanonicalError("bad_json", "not JSON") from None
    if text[end:].strip(" \t\n\r"):
        raise CanonicalError("bad_json", "trailing data")
    if check:  # a caller that checks every field itself (the envelope decoder) skips it
        check_value(value)
    return value
