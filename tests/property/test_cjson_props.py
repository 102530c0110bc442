"""Canonical JSON properties (SPEC 1.1) over generated values of the whole domain."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hd_protocol import CanonicalError, canonical_json, loads_strict
from hd_protocol.cjson import MAX_DEPTH, MAX_INT

SETTINGS = settings(max_examples=150, deadline=None)

ascii_keys = st.text(st.characters(max_codepoint=0x7F), max_size=8)
# Any Unicode scalar value (no surrogates): control characters, quotes, astral planes.
strings = st.text(st.characters(blacklist_categories=("Cs",)), max_size=16)
scalars = st.none() | st.booleans() | st.integers(-MAX_INT, MAX_INT) | strings
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ascii_keys, inner, max_size=5),
    max_leaves=25,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def same(a: Any, b: Any) -> bool:
    """Equality that does not let True == 1 slip through (booleans are not integers)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


SHORT = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r",
         '"': '\\"', "\\": "\\\\"}


def reference(value: Any) -> str:
    """SPEC 1.1 written out by hand, independent of the json module."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return '"' + "".join(
            SHORT.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 else c) for c in value
        ) + '"'
    if type(value) is list:
        return "[" + ",".join(reference(v) for v in value) + "]"
    keys = sorted(value, key=lambda k: k.encode("utf-8"))  # byte order
    return "{" + ",".join(reference(k) + ":" + reference(value[k]) for k in keys) + "}"


def reinsert_reversed(value: Any) -> Any:
    """The same value with every object's members inserted in reverse order."""
    if isinstance(value, list):
        return [reinsert_reversed(v) for v in value]
    if isinstance(value, dict):
        return {k: reinsert_reversed(value[k]) for k in reversed(list(value))}
    return value


@SETTINGS
@given(json_values)
def test_canonical_json_round_trips_and_is_idempotent(value: Any) -> None:
    assume(depth(value) <= MAX_DEPTH)
    once = canonical_json(value)
    assert same(loads_strict(once), value)
    assert canonical_json(loads_strict(once)) == once


@SETTINGS
@given(json_values)
def test_canonical_json_matches_an_independent_reading_of_the_spec(value: Any) -> None:
    assume(depth(value) <= MAX_DEPTH)
    assert canonical_json(value) == reference(value).encode("utf-8")
    # Insertion order of members is not part of the value.
    assert canonical_json(reinsert_reversed(value)) == canonical_json(value)


@SETTINGS
@given(json_values, st.sampled_from([None, 1, 2, "\t"]), st.booleans())
def test_any_spelling_of_a_value_has_the_same_canonical_bytes(
    value: Any, indent: Any, ascii_only: bool
) -> None:
    # Whitespace and \uXXXX escapes (surrogate pairs for astral characters) are
    # spelling only; the canonical form erases them.
    assume(depth(value) <= MAX_DEPTH)
    spelled = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    assert canonical_json(loads_strict(spelled)) == canonical_json(value)


@SETTINGS
@given(json_values, st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 2))
def test_a_float_anywhere_is_refused(value: Any, number: float, where: int) -> None:
    holder: Any = [value, number] if where == 0 else {"k": number, "v": value}
    if where == 2:
        holder = [[{"deep": [number]}], value]
    try:
        canonical_json(holder)
    except CanonicalError:
        return
    raise AssertionError("a float was canonicalized")


@SETTINGS
@given(st.one_of(st.text(max_size=64), st.binary(max_size=64)))
def test_loads_strict_raises_only_canonical_error_on_arbitrary_input(text: str | bytes) -> None:
    try:
        value = loads_strict(text)
    except CanonicalError:
        return
    canonical_json(value)  # whatever it accepted is in the domain


@SETTINGS
@given(json_values, st.data())
def test_truncated_canonical_text_is_refused_or_a_prefix_value(value: Any, data: Any) -> None:
    assume(depth(value) <= MAX_DEPTH)
    text = canonical_json(value).decode("utf-8")
    cut = data.draw(st.integers(0, max(0, len(text) - 1)))
    try:
        loads_strict(text[:cut])
    except CanonicalError:
        return
    # Only a number can have a valid proper prefix (e.g. "12" of "123").
    assert type(value) is int
