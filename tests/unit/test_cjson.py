"""Canonical JSON (SPEC 1.1): the one byte string every signature is computed over."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal

import pytest

from hd_protocol import CanonicalError, ProtocolError, canonical_json, loads_strict
from hd_protocol.cjson import MAX_DEPTH, MAX_INT

# SPEC 1.1: the five short escapes; every other C0 control is \u00xx in lowercase hex.
SHORT_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}


def nested_list(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def nested_dict(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = {"k": value}
    return value


def test_canonical_json_sorts_members_by_key_bytes() -> None:
    value = {"b": 1, "a": 2, "B": 3, "_": 4, "aa": {"z": 0, "y": 1}}
    assert canonical_json(value) == b'{"B":3,"_":4,"a":2,"aa":{"y":1,"z":0},"b":1}'


def test_canonical_json_writes_no_whitespace() -> None:
    value = {"list": [1, 2, {"x": None}], "t": True, "f": False}
    assert canonical_json(value) == b'{"f":false,"list":[1,2,{"x":null}],"t":true}'


def test_canonical_json_keeps_array_order() -> None:
    assert canonical_json([3, 1, 2]) == b"[3,1,2]"


@pytest.mark.parametrize("code", range(0x20))
def test_canonical_json_escapes_each_control_character(code: int) -> None:
    expected = SHORT_ESCAPES.get(code, f"\\u{code:04x}")
    assert canonical_json(chr(code)) == f'"{expected}"'.encode("ascii")


def test_canonical_json_escapes_only_quote_and_backslash_among_printables() -> None:
    assert canonical_json('"\\') == b'"\\"\\\\"'
    # Solidus, DEL, non-ASCII and the JS line separators are written as themselves.
    text = "/\x7f\u00e9\u2028\u2029\U0001f600"
    assert canonical_json(text) == b'"' + text.encode("utf-8") + b'"'


def test_booleans_are_not_integers() -> None:
    assert canonical_json(True) == b"true"
    assert canonical_json(False) == b"false"
    assert canonical_json({"a": True}) != canonical_json({"a": 1})
    assert type(loads_strict("true")) is bool
    assert type(loads_strict("1")) is int


@pytest.mark.parametrize("value", [MAX_INT, -MAX_INT, 0, 1, -1])
def test_integers_up_to_2_pow_53_minus_1_are_accepted(value: int) -> None:
    assert canonical_json(value) == str(value).encode("ascii")


@pytest.mark.parametrize("value", [2**53, -(2**53), 10**30])
def test_integers_beyond_2_pow_53_minus_1_are_rejected(value: int) -> None:
    with pytest.raises(CanonicalError):
        canonical_json(value)
    with pytest.raises(CanonicalError):
        loads_strict(str(value))


@pytest.mark.parametrize("value", [1.0, 0.0, -0.0, 1.5, math.nan, math.inf, -math.inf])
def test_canonical_json_rejects_every_float(value: float) -> None:
    with pytest.raises(CanonicalError):
        canonical_json(value)
    with pytest.raises(CanonicalError):
        canonical_json({"nested": [value]})


@pytest.mark.parametrize(
    "value",
    [(1, 2), {1, 2}, b"bytes", object(), Decimal(1), {1: "int key"}, {("t",): 1}],
    ids=["tuple", "set", "bytes", "object", "decimal", "int-key", "tuple-key"],
)
def test_canonical_json_rejects_values_outside_the_domain(value: object) -> None:
    with pytest.raises(CanonicalError):
        canonical_json(value)


def test_canonical_json_rejects_non_ascii_keys() -> None:
    with pytest.raises(CanonicalError):
        canonical_json({"\u00e9": 1})


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\ud83d\ude00"])
def test_canonical_json_rejects_lone_surrogates(text: str) -> None:
    # "\ud83d\ude00" here is two separate surrogate code points, not one emoji.
    with pytest.raises(CanonicalError):
        canonical_json(text)
    with pytest.raises(CanonicalError):
        canonical_json({"k": [text]})


@pytest.mark.parametrize("make", [nested_list, nested_dict], ids=["list", "dict"])
def test_nesting_depth_32_is_accepted_and_33_rejected(make: Callable[[int], object]) -> None:
    deepest_ok = make(MAX_DEPTH)
    assert MAX_DEPTH == 32
    assert loads_strict(canonical_json(deepest_ok)) == deepest_ok
    too_deep = make(MAX_DEPTH + 1)
    with pytest.raises(CanonicalError):
        canonical_json(too_deep)
    with pytest.raises(CanonicalError):
        loads_strict("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


def test_loads_strict_survives_absurd_nesting_with_a_canonical_error() -> None:
    with pytest.raises(CanonicalError):
        loads_strict("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize(
    "text",
    [
        "1.0", "[1.5]", "1e3", "-0.0", '{"a":1E2}',  # floats in any spelling
        "NaN", "Infinity", "-Infinity", "[NaN]",
        '{"a":1,"a":2}',  # duplicate keys
        '{"\\u00e9":1}',  # non-ASCII key
        '["\\ud800"]',  # lone surrogate escape
        "{} x", "[1,]", "{,}", "", "   ", "'a'", "[1 2]", "{a:1}", "tru",
    ],
)
def test_loads_strict_rejects_text_outside_the_domain(text: str) -> None:
    with pytest.raises(CanonicalError):
        loads_strict(text)


def test_loads_strict_rejects_bytes_that_are_not_utf8() -> None:
    with pytest.raises(CanonicalError) as info:
        loads_strict(b'["\xff"]')
    assert info.value.code == "bad_json"


def test_loads_strict_reports_malformed_text_as_bad_json() -> None:
    with pytest.raises(CanonicalError) as info:
        loads_strict("{")
    assert info.value.code == "bad_json"


def test_canonical_errors_are_protocol_errors_with_a_code() -> None:
    with pytest.raises(ProtocolError) as info:
        canonical_json(1.0)
    assert isinstance(info.value, CanonicalError)
    assert info.value.code == "canonical"


def test_loads_strict_accepts_text_bytes_bytearray_and_memoryview() -> None:
    raw = '{"a":[1,"\u00e9"]}'.encode()
    expected = {"a": [1, "\u00e9"]}
    for given in (raw.decode("utf-8"), raw, bytearray(raw), memoryview(raw)):
        assert loads_strict(given) == expected


def test_loads_strict_allows_surrounding_and_inner_json_whitespace() -> None:
    assert loads_strict(' \n\t{ "a" : [ 1 , 2 ] }\r\n ') == {"a": [1, 2]}


def test_loads_strict_joins_escaped_surrogate_pairs() -> None:
    assert loads_strict('"\\ud83d\\ude00"') == "\U0001f600"
    assert canonical_json(loads_strict('"\\ud83d\\ude00"')) == '"\U0001f600"'.encode()


def test_negative_zero_integer_canonicalizes_to_zero() -> None:
    assert canonical_json(loads_strict("-0")) == b"0"


def test_canonical_json_rejects_subclasses_of_json_types() -> None:
    # A dict subclass could carry its own ordering or __str__; only plain types count.
    class D(dict):  # type: ignore[type-arg]
        pass

    class S(str):
        pass

    with pytest.raises(CanonicalError):
        canonical_json(D(a=1))
    with pytest.raises(CanonicalError):
        canonical_json(S("x"))
