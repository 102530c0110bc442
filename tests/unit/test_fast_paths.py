"""The codec's hand-built fast paths against the general ones (SPEC 3, 3.1).

``seal_sign_encode``, ``encode_envelope``, ``signing_bytes`` and ``box_aad`` write
their canonical text by hand when every field is plain; anything else must take the
general path and give exactly what the stdlib JSON encoder gives. Each input here is
one that must leave the fast path, or an error the fast path must still raise.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from hd_protocol import (
    Envelope,
    Identity,
    LocalProtocolError,
    ProtocolError,
    decode_envelope,
    encode_envelope,
    make_envelope,
    open_envelope,
    seal_envelope,
    sign_envelope,
    signing_bytes,
)
from hd_protocol import seal as seal_module
from hd_protocol.envelope import FIELDS, envelope_from_obj
from hd_protocol.seal import SEALED_OVERHEAD, box_aad, seal_sign_encode, seal_with, sealed_size

KEY = bytes(range(32))
T0 = 1_764_000_000_000


def env_of(alice: Identity, **kw: Any) -> Envelope:
    args: dict[str, Any] = {"msg_id": "1" * 32, "src": alice.node_id, "dst": None,
                            "ts": T0, "seq": 3}
    args.update(kw)
    return make_envelope("peer_chat", **args)


def three_calls(env: Envelope, identity: Identity, payload: dict[str, Any]) -> str:
    return encode_envelope(sign_envelope(seal_with(ChaCha20Poly1305(KEY), env, payload),
                                         identity))


def test_an_envelope_carrying_data_is_sealed_by_the_general_path(alice: Identity) -> None:
    env = env_of(alice, data={"stale": 1})
    wire = seal_sign_encode(ChaCha20Poly1305(KEY), alice, env, {"text": "x"})
    assert wire == three_calls(env, alice, {"text": "x"})
    assert json.loads(wire)["data"] == {}


@pytest.mark.parametrize("field", ["v", "ttl"])
def test_a_non_integer_header_number_takes_the_general_path(
    alice: Identity, field: str
) -> None:
    env = dataclasses.replace(env_of(alice), **{field: True})
    wire = seal_sign_encode(ChaCha20Poly1305(KEY), alice, env, {"a": 1})
    assert wire == three_calls(env, alice, {"a": 1})
    assert json.loads(wire)[field] is True


def test_seal_sign_encode_raises_what_the_three_calls_raise(
    alice: Identity, bob: Identity
) -> None:
    aead = ChaCha20Poly1305(KEY)
    cases = [(env_of(alice, seq=None), alice, {}, "seq"),
             (env_of(alice), bob, {}, "src"),
             (env_of(alice), alice, [1], "bad_field"),  # type: ignore[list-item]
             (env_of(alice), alice, {"f": 1.5}, "canonical")]
    for env, signer, payload, code in cases:
        with pytest.raises(LocalProtocolError) as info:
            seal_sign_encode(aead, signer, env, payload)  # type: ignore[arg-type]
        assert info.value.code == code, (code, info.value)


@pytest.mark.parametrize("sig", ['x"y', "a\\b", "c\x01d", "e\u2028f"],
                         ids=["quote", "backslash", "control", "line_separator"])
def test_an_envelope_whose_sig_needs_escaping_is_encoded_like_the_stdlib_does(
    alice: Identity, sig: str
) -> None:
    env = dataclasses.replace(env_of(alice, seq=None), sig=sig)
    expected = json.dumps({f: getattr(env, f) for f in FIELDS}, separators=(",", ":"),
                          ensure_ascii=False)
    assert encode_envelope(env) == expected


def test_sealed_size_is_base64_of_payload_and_tag_plus_the_largest_header() -> None:
    for text in ("", "a", "ab", "abc", "x" * 1000):
        payload = {"t": text}
        n = len(json.dumps(payload, separators=(",", ":"))) + 16
        assert sealed_size(payload) == 4 * -(-n // 3) + SEALED_OVERHEAD


def test_the_one_shot_api_works_from_a_cold_cache_and_with_a_new_key(
    alice: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seal_module, "_last_aead", None)
    env = env_of(alice)
    sealed = seal_envelope(env, KEY, {"n": 1})
    assert open_envelope(sealed, KEY) == {"n": 1}
    other = bytes(32)
    assert open_envelope(seal_envelope(env, other, {"n": 2}), other) == {"n": 2}
    with pytest.raises(ProtocolError):
        open_envelope(sealed, other)


def test_a_box_without_a_seq_is_not_sealed(alice: Identity) -> None:
    sealed = seal_envelope(env_of(alice), KEY, {"n": 1})
    with pytest.raises(ProtocolError) as info:
        open_envelope(dataclasses.replace(sealed, seq=None), KEY)
    assert info.value.code == "not_sealed"


def _reference(env: Envelope, fields: tuple[str, ...], *, sort: bool) -> bytes:
    return json.dumps({f: getattr(env, f) for f in fields}, separators=(",", ":"),
                      ensure_ascii=False, sort_keys=sort).encode("utf-8")


ODD = ['q"q', "a\\b", "t\x01", 5, True, "caf\u00e9"]
ODD_IDS = ["quote", "backslash", "control", "int", "bool", "non_ascii"]


@pytest.mark.parametrize("value", ODD, ids=ODD_IDS)
@pytest.mark.parametrize("field", ["type", "msg_id", "re", "src", "dst"])
def test_header_fields_that_need_escaping_or_are_no_strings_take_the_general_path(
    alice: Identity, field: str, value: object
) -> None:
    env = dataclasses.replace(env_of(alice), sig="c2ln", **{field: value})
    head = ("box", "data", "dst", "msg_id", "re", "seq", "src", "ts", "type", "v")
    assert signing_bytes(env) == b"hd1-env\n" + _reference(env, head, sort=True)
    aad = ("dst", "msg_id", "re", "seq", "src", "ts", "type")
    assert box_aad(env) == b"hd1-box\n" + _reference(env, aad, sort=True)
    assert encode_envelope(env).encode() == _reference(env, FIELDS, sort=False)


@pytest.mark.parametrize(("field", "value"), [("ts", True), ("seq", True), ("ts", "7"),
                                               ("seq", None), ("sig", 5)])
def test_header_numbers_of_another_type_take_the_general_path(
    alice: Identity, field: str, value: object
) -> None:
    env = dataclasses.replace(env_of(alice), **{"sig": "c2ln", field: value})
    aad = ("dst", "msg_id", "re", "seq", "src", "ts", "type")
    assert box_aad(env) == b"hd1-box\n" + _reference(env, aad, sort=True)
    if field != "sig":
        head = ("box", "data", "dst", "msg_id", "re", "seq", "src", "ts", "type", "v")
        assert signing_bytes(env) == b"hd1-env\n" + _reference(env, head, sort=True)
    assert encode_envelope(env).encode() == _reference(env, FIELDS, sort=False)


def test_sealing_a_payload_that_is_no_object_is_a_bad_field(alice: Identity) -> None:
    with pytest.raises(LocalProtocolError) as info:
        seal_envelope(env_of(alice), KEY, [1])  # type: ignore[arg-type]
    assert info.value.code == "bad_field"


# --- the decoder's structural rules (also what a relay's decoded envelope passes) ------


def _wire_obj(alice: Identity) -> dict[str, Any]:
    env = seal_envelope(env_of(alice), KEY, {"n": 1})
    return json.loads(encode_envelope(sign_envelope(env, alice)))


@pytest.mark.parametrize(
    ("change", "code"),
    [({"re": "x"}, "bad_field"), ({"dst": "x"}, "bad_field"), ({"box": ""}, "bad_field"),
     ({"data": {"a": 1}}, "bad_field"), ({"seq": None}, "bad_field"),
     ({"sig": base64.b64encode(b"\x01" * 63).decode()}, "bad_field"),
     ({"extra": 1}, "bad_envelope"),
     ({"sig": KeyError}, "bad_envelope"), ({"v": KeyError}, "bad_envelope")],
    ids=["re", "dst", "empty box", "data with box", "box without seq", "63-byte sig",
         "extra", "no sig", "no v"],
)
def test_a_frame_breaking_one_structural_rule_is_refused_with_its_code(
    alice: Identity, change: dict[str, Any], code: str
) -> None:

    obj = _wire_obj(alice)
    assert decode_envelope(json.dumps(obj)).seq == 3  # the control: unchanged, it decodes
    for k, v in change.items():
        if v is KeyError:
            del obj[k]
        else:
            obj[k] = v
    for decode in (lambda o: decode_envelope(json.dumps(o)), envelope_from_obj):
        with pytest.raises(ProtocolError) as info:
            decode(obj)
        assert info.value.code == code, (change, info.value)


@pytest.mark.parametrize("obj", [[], "x", None, 5], ids=["list", "str", "null", "int"])
def test_a_decoded_envelope_that_is_no_object_is_a_bad_envelope(obj: object) -> None:

    with pytest.raises(ProtocolError) as info:
        envelope_from_obj(obj)
    assert info.value.code == "bad_envelope"
