"""The peer envelope (SPEC 3) and sealing (SPEC 3.1)."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol import (
    CanonicalError,
    Envelope,
    Identity,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    canonical_json,
    decode_envelope,
    encode_envelope,
    loads_strict,
    make_envelope,
    new_msg_id,
    open_envelope,
    seal_envelope,
    sign_envelope,
    signing_bytes,
    verify_envelope,
)
from hd_protocol.envelope import FIELDS, wire_size
from hd_protocol.seal import check_sealed_size, sealed_size

MSG_ID = "0123456789abcdef0123456789abcdef"
OTHER_ID = "fedcba9876543210fedcba9876543210"
KEY = bytes(range(32))
MiB = 1024 * 1024
DELETE = object()


@pytest.fixture
def env(alice: Identity, bob: Identity) -> Envelope:
    """A signed, unsealed presence from alice to bob."""
    return sign_envelope(
        make_envelope(
            "presence", msg_id=MSG_ID, src=alice.node_id, dst=bob.node_id, ts=1_764_000_000_000,
            data={"node_name": "alice", "capabilities": ["chat"], "n": 0},
        ),
        alice,
    )


@pytest.fixture
def sealed(alice: Identity, bob: Identity) -> Envelope:
    """A signed envelope sealed with KEY at seq 5."""
    base = make_envelope(
        "peer_chat", msg_id=MSG_ID, re=OTHER_ID, src=alice.node_id, dst=bob.node_id,
        ts=1_764_000_000_000, seq=5,
    )
    return sign_envelope(seal_envelope(base, KEY, {"text": "hi \u2713"}), alice)


def wire_with(env: Envelope, **changes: Any) -> str:
    """The envelope's wire object with fields replaced (or removed with DELETE), not
    re-signed: decoding checks shape, the signature is the receiver's next step."""
    obj = json.loads(encode_envelope(env))
    for name, value in changes.items():
        if value is DELETE:
            del obj[name]
        else:
            obj[name] = value
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def decode_code(text: str | bytes, **kw: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_envelope(text, **kw)
    return info.value.code


# --- decoding: the field table of SPEC 3 ------------------------------------------------

BAD_FIELDS = [
    # v: 1, anything else is `version`
    ("v", 2, "version"), ("v", 0, "version"), ("v", "1", "version"), ("v", True, "version"),
    ("v", None, "version"),
    # type: ^[a-z][a-z0-9_]{0,31}$
    ("type", "", "bad_field"), ("type", "Ping", "bad_field"), ("type", "1ping", "bad_field"),
    ("type", "peer-chat", "bad_field"), ("type", "_x", "bad_field"),
    ("type", "a" * 33, "bad_field"), ("type", 5, "bad_field"), ("type", None, "bad_field"),
    ("type", "ping\n", "bad_field"),
    # msg_id: 32 lowercase hex
    ("msg_id", MSG_ID[:-1], "bad_field"), ("msg_id", MSG_ID + "0", "bad_field"),
    ("msg_id", MSG_ID.upper(), "bad_field"), ("msg_id", "g" * 32, "bad_field"),
    ("msg_id", 12, "bad_field"), ("msg_id", None, "bad_field"),
    ("msg_id", MSG_ID + "\n", "bad_field"),
    # re: null or 32 lowercase hex
    ("re", "abc", "bad_field"), ("re", OTHER_ID.upper(), "bad_field"), ("re", 1, "bad_field"),
    ("re", False, "bad_field"), ("re", OTHER_ID + "\n", "bad_field"),
    # src: a node id ([a-z2-7]{16})
    ("src", "ABCDEFGHIJKLMNOP", "bad_field"), ("src", "abcdefghijklmno1", "bad_field"),
    ("src", "abcdefghijklmno", "bad_field"), ("src", "abcdefghijklmnopq", "bad_field"),
    ("src", None, "bad_field"), ("src", 7, "bad_field"), ("src", "abcdefghijklmnop\n", "bad_field"),
    # dst: null or a node id
    ("dst", "abcdefghijklmn89", "bad_field"), ("dst", "", "bad_field"), ("dst", [], "bad_field"),
    ("dst", "abcdefghijklmnop\n", "bad_field"),
    # ts: integer ms, not negative; booleans are not integers
    ("ts", -1, "bad_field"), ("ts", True, "bad_field"), ("ts", "1", "bad_field"),
    ("ts", None, "bad_field"),
    # ttl: 0..16
    ("ttl", -1, "bad_field"), ("ttl", 17, "bad_field"), ("ttl", True, "bad_field"),
    ("ttl", None, "bad_field"), ("ttl", "8", "bad_field"),
    # seq: null or a non-negative integer
    ("seq", -1, "bad_field"), ("seq", True, "bad_field"), ("seq", "0", "bad_field"),
    # data: an object
    ("data", [], "bad_field"), ("data", "x", "bad_field"), ("data", None, "bad_field"),
    ("data", 1, "bad_field"),
    # box: null or base64
    ("box", 5, "bad_field"), ("box", "", "bad_field"), ("box", True, "bad_field"),
    # sig: base64 of 64 bytes
    ("sig", "", "bad_field"), ("sig", "not base64!", "bad_field"), ("sig", None, "bad_field"),
    ("sig", base64.b64encode(b"\x01" * 63).decode(), "bad_field"),
    ("sig", base64.b64encode(b"\x01" * 65).decode(), "bad_field"),
    ("sig", base64.b64encode(b"\x01" * 64).decode().rstrip("="), "bad_field"),
]


@pytest.mark.parametrize(
    "field, value, code", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS]
)
def test_decode_rejects_field_of_wrong_type_or_format(
    env: Envelope, field: str, value: Any, code: str
) -> None:
    assert decode_code(wire_with(env, **{field: value})) == code


@pytest.mark.parametrize(
    "field, value",
    [("ttl", 0), ("ttl", 16), ("type", "a" * 32), ("type", "a"), ("type", "x9_"),
     ("ts", 0), ("ts", 2**53 - 1), ("re", OTHER_ID), ("re", None), ("dst", None),
     ("seq", 0), ("seq", 2**53 - 1)],
)
def test_decode_accepts_boundary_values(env: Envelope, field: str, value: Any) -> None:
    assert getattr(decode_envelope(wire_with(env, **{field: value})), field) == value


@pytest.mark.parametrize("field", FIELDS)
def test_decode_rejects_a_missing_field(env: Envelope, field: str) -> None:
    assert decode_code(wire_with(env, **{field: DELETE})) == "bad_envelope"


@pytest.mark.parametrize("extra", ["extra", "V", "ttl2", "signature"])
def test_decode_rejects_an_unknown_field(env: Envelope, extra: str) -> None:
    assert decode_code(wire_with(env, **{extra: 1})) == "bad_envelope"


@pytest.mark.parametrize(
    "field, value", [("ts", 1.0), ("ttl", 8.0), ("seq", 0.0), ("v", 1.0)]
)
def test_decode_rejects_floats_even_integral_ones(env: Envelope, field: str, value: float) -> None:
    assert decode_code(wire_with(env, **{field: value})) == "bad_json"


def test_decode_rejects_a_float_nested_in_data(env: Envelope) -> None:
    assert decode_code(wire_with(env, data={"x": [1, {"y": 2.5}]})) == "bad_json"


@pytest.mark.parametrize("text", ["[]", '"envelope"', "1", "null", "true"])
def test_decode_rejects_json_that_is_not_an_object(text: str) -> None:
    assert decode_code(text) == "bad_envelope"


@pytest.mark.parametrize("text", ["", "{", "{}}", "not json", b"\xff\xfe", b'{"v":1'])
def test_decode_rejects_malformed_json(text: str | bytes) -> None:
    assert decode_code(text) == "bad_json"


@pytest.mark.parametrize("value", [None, 1, ["a"], {"v": 1}])
def test_decode_rejects_input_that_is_not_text(value: Any) -> None:
    assert decode_code(value) == "bad_json"


def test_decode_rejects_duplicate_fields(env: Envelope) -> None:
    wire = encode_envelope(env)
    assert decode_code(wire[:-1] + ',"ttl":8}') == "bad_json"


def test_decode_rejects_sealed_envelope_without_seq(sealed: Envelope) -> None:
    assert decode_code(wire_with(sealed, seq=None)) == "bad_field"


def test_decode_rejects_sealed_envelope_with_data(sealed: Envelope) -> None:
    assert decode_code(wire_with(sealed, data={"text": "leak"})) == "bad_field"


@pytest.mark.parametrize("box", ["!!!!", "QQ", "QR==", "QQ==\n"])
def test_decode_rejects_box_that_is_not_canonical_base64(sealed: Envelope, box: str) -> None:
    assert decode_code(wire_with(sealed, box=box)) == "bad_field"


def test_decode_accepts_a_sealed_envelope(sealed: Envelope) -> None:
    got = decode_envelope(encode_envelope(sealed))
    assert got == sealed and got.sealed and got.data == {}


def test_decode_allows_json_whitespace_between_tokens(env: Envelope) -> None:
    spaced = json.dumps(json.loads(encode_envelope(env)), indent=2, ensure_ascii=False)
    assert decode_envelope(spaced) == env


# --- size limit (SPEC 11: 1 MiB) --------------------------------------------------------


def test_decode_accepts_exactly_max_bytes_and_refuses_one_more(env: Envelope) -> None:
    wire = encode_envelope(env)
    size = len(wire.encode("utf-8"))
    assert decode_envelope(wire, max_bytes=size) == env
    assert decode_code(wire, max_bytes=size - 1) == "too_large"


def test_decode_refuses_an_envelope_over_one_mebibyte_by_default(env: Envelope) -> None:
    big = wire_with(env, data={"pad": "x" * MiB})
    assert decode_code(big) == "too_large"
    assert decode_code(big.encode("utf-8")) == "too_large"


def test_decode_counts_the_size_in_utf8_bytes_not_characters(env: Envelope) -> None:
    # 3 bytes per character: under the limit in characters, over it in bytes.
    wire = wire_with(env, data={"pad": "\u2603" * (MiB // 3 + 10)})
    assert len(wire) < MiB < len(wire.encode("utf-8"))
    assert decode_code(wire) == "too_large"


def test_decode_refuses_an_oversize_frame_before_parsing_it() -> None:
    assert decode_code("[" * (MiB + 1)) == "too_large"


# --- signing (SPEC 3) -------------------------------------------------------------------


def test_signing_bytes_are_prefix_and_cjson_of_everything_but_sig_and_ttl(env: Envelope) -> None:
    raw = signing_bytes(env)
    assert raw.startswith(b"hd1-env\n")
    body = raw[len(b"hd1-env\n") :]
    obj = loads_strict(body)
    assert set(obj) == set(FIELDS) - {"sig", "ttl"}
    assert canonical_json(obj) == body
    wire_obj = json.loads(encode_envelope(env))
    assert obj == {k: v for k, v in wire_obj.items() if k not in ("sig", "ttl")}


def test_signature_does_not_cover_ttl(env: Envelope, alice: Identity) -> None:
    for ttl in (0, 3, 16):
        relayed = dataclasses.replace(env, ttl=ttl)
        assert signing_bytes(relayed) == signing_bytes(env)
        assert verify_envelope(relayed, alice.public_key)
        assert verify_envelope(decode_envelope(encode_envelope(relayed)), alice.public_key)


def test_signature_covers_dst_so_a_relay_cannot_readdress(
    env: Envelope, alice: Identity, carol: Identity
) -> None:
    assert not verify_envelope(dataclasses.replace(env, dst=carol.node_id), alice.public_key)
    assert not verify_envelope(dataclasses.replace(env, dst=None), alice.public_key)


@pytest.mark.parametrize(
    "field, value",
    [("type", "pong"), ("msg_id", OTHER_ID), ("re", OTHER_ID), ("src", "aaaaaaaaaaaaaaaa"),
     ("ts", 1), ("seq", 3), ("data", {"n": 1}), ("box", "QQ=="), ("v", 2)],
)
def test_signature_covers_every_field_but_ttl(
    env: Envelope, alice: Identity, field: str, value: Any
) -> None:
    assert verify_envelope(env, alice.public_key)
    assert not verify_envelope(dataclasses.replace(env, **{field: value}), alice.public_key)


def test_signature_by_another_key_does_not_verify(env: Envelope, bob: Identity) -> None:
    assert not verify_envelope(env, bob.public_key)


def test_sign_envelope_refuses_a_signer_that_is_not_src(env: Envelope, bob: Identity) -> None:
    with pytest.raises(LocalProtocolError) as info:
        sign_envelope(env, bob)
    assert info.value.code == "src"


def test_encode_refuses_an_unsigned_envelope(alice: Identity) -> None:
    unsigned = make_envelope("ping", msg_id=MSG_ID, src=alice.node_id, dst=None, ts=0)
    with pytest.raises(LocalProtocolError) as info:
        encode_envelope(unsigned)
    assert info.value.code == "unsigned"


def test_encode_is_compact_in_spec_field_order(env: Envelope) -> None:
    wire = encode_envelope(env)
    assert list(json.loads(wire)) == list(FIELDS)
    assert wire == json.dumps(json.loads(wire), separators=(",", ":"), ensure_ascii=False)


def test_decode_of_encode_is_the_same_envelope(env: Envelope, sealed: Envelope) -> None:
    for e in (env, sealed):
        assert decode_envelope(encode_envelope(e)) == e
        assert decode_envelope(encode_envelope(e).encode("utf-8")) == e


def test_envelope_is_immutable(env: Envelope) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.dst = None  # type: ignore[misc]


def test_envelope_has_exactly_the_spec_fields() -> None:
    assert {f.name for f in dataclasses.fields(Envelope)} == set(FIELDS)
    assert set(FIELDS) == {
        "v", "type", "msg_id", "re", "src", "dst", "ts", "ttl", "seq", "data", "box", "sig"
    }


@pytest.mark.parametrize(
    "kw, code",
    [({"type": "Bad"}, "bad_field"), ({"msg_id": "x"}, "bad_field"),
     ({"ttl": 17}, "bad_field"), ({"ts": -5}, "bad_field"), ({"src": "nope"}, "bad_field"),
     ({"data": {"f": 1.5}}, "canonical")],
)
def test_make_envelope_refuses_bad_fields_as_a_local_error(
    alice: Identity, kw: dict[str, Any], code: str
) -> None:
    args: dict[str, Any] = {"type": "ping", "msg_id": MSG_ID, "src": alice.node_id,
                            "dst": None, "ts": 0}
    args.update(kw)
    with pytest.raises(LocalProtocolError) as info:
        make_envelope(args.pop("type"), **args)
    assert info.value.code == code


def test_new_msg_id_is_128_rng_bits_as_lowercase_hex(rng_factory) -> None:
    rng = rng_factory("ids")
    mid = new_msg_id(rng)
    assert mid == rng.outputs[-1].hex() and len(rng.outputs[-1]) == 16
    assert len(mid) == 32 and mid == mid.lower()


# --- sealing (SPEC 3.1) -----------------------------------------------------------------


def test_seal_then_open_gives_the_payload_back(sealed: Envelope) -> None:
    assert sealed.data == {} and sealed.sealed
    assert open_envelope(sealed, KEY) == {"text": "hi \u2713"}


def test_box_follows_the_spec_construction(sealed: Envelope) -> None:
    """Independent of hd_protocol: nonce = 4 zero bytes ‖ seq (8 bytes BE), aad =
    "hd1-box\\n" + cjson({type, msg_id, re, src, dst, ts, seq})."""
    assert sealed.box is not None and sealed.seq is not None
    nonce = b"\x00" * 4 + sealed.seq.to_bytes(8, "big")
    aad = b"hd1-box\n" + canonical_json(
        {k: getattr(sealed, k) for k in ("type", "msg_id", "re", "src", "dst", "ts", "seq")}
    )
    pt = ChaCha20Poly1305(KEY).decrypt(nonce, base64.b64decode(sealed.box), aad)
    assert pt == canonical_json({"text": "hi \u2713"})


def test_seal_clears_data_and_the_signature(alice: Identity, bob: Identity) -> None:
    base = sign_envelope(
        make_envelope("peer_chat", msg_id=MSG_ID, src=alice.node_id, dst=bob.node_id, ts=1,
                      seq=0, data={"plain": 1}),
        alice,
    )
    out = seal_envelope(base, KEY, {"text": "x"})
    assert out.data == {} and out.sig == ""  # the signature must be made over the box


def test_open_with_the_wrong_key_fails_with_code_box(sealed: Envelope) -> None:
    with pytest.raises(ProtocolError) as info:
        open_envelope(sealed, bytes(32))
    assert info.value.code == "box"


@pytest.mark.parametrize(
    "field, value",
    [("type", "peer_chat_ack"), ("msg_id", OTHER_ID), ("re", None), ("re", MSG_ID),
     ("src", "aaaaaaaaaaaaaaaa"), ("dst", "bbbbbbbbbbbbbbbb"), ("dst", None), ("ts", 2),
     ("seq", 6), ("seq", 4)],
)
def test_open_fails_with_code_box_when_an_aad_field_was_changed(
    sealed: Envelope, field: str, value: Any
) -> None:
    with pytest.raises(ProtocolError) as info:
        open_envelope(dataclasses.replace(sealed, **{field: value}), KEY)
    assert info.value.code == "box"


def test_open_ignores_ttl_which_is_outside_the_aad(sealed: Envelope) -> None:
    assert open_envelope(dataclasses.replace(sealed, ttl=0), KEY) == {"text": "hi \u2713"}


def test_open_fails_with_code_box_when_the_ciphertext_was_changed(sealed: Envelope) -> None:
    assert sealed.box is not None
    raw = bytearray(base64.b64decode(sealed.box))
    for i in (0, len(raw) // 2, len(raw) - 1):  # first, middle, inside the tag
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        tampered = dataclasses.replace(sealed, box=base64.b64encode(bytes(flipped)).decode())
        with pytest.raises(ProtocolError) as info:
            open_envelope(tampered, KEY)
        assert info.value.code == "box"


@pytest.mark.parametrize("plaintext", [b"[1]", b'"text"', b'{"f":1.5}', b"\xff", b"{"])
def test_open_fails_with_code_box_when_the_payload_is_not_a_canonical_object(
    sealed: Envelope, plaintext: bytes
) -> None:
    assert sealed.seq is not None
    nonce = b"\x00" * 4 + sealed.seq.to_bytes(8, "big")
    aad = b"hd1-box\n" + canonical_json(
        {k: getattr(sealed, k) for k in ("type", "msg_id", "re", "src", "dst", "ts", "seq")}
    )
    box = base64.b64encode(ChaCha20Poly1305(KEY).encrypt(nonce, plaintext, aad)).decode()
    with pytest.raises(ProtocolError) as info:
        open_envelope(dataclasses.replace(sealed, box=box), KEY)
    assert info.value.code == "box"


def test_open_of_an_unsealed_envelope_fails_with_not_sealed(env: Envelope) -> None:
    with pytest.raises(ProtocolError) as info:
        open_envelope(env, KEY)
    assert info.value.code == "not_sealed"


def test_seal_needs_a_seq(env: Envelope) -> None:
    with pytest.raises(LocalProtocolError) as info:
        seal_envelope(env, KEY, {"a": 1})
    assert info.value.code == "seq"


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(31), bytes(33)])
def test_seal_and_open_need_a_32_byte_key(sealed: Envelope, key: bytes) -> None:
    with pytest.raises(LocalProtocolError) as info:
        seal_envelope(sealed, key, {})
    assert info.value.code == "key"
    with pytest.raises(LocalProtocolError):
        open_envelope(sealed, key)


def test_seal_refuses_a_payload_that_is_not_a_canonical_object(sealed: Envelope) -> None:
    with pytest.raises(LocalProtocolError):
        seal_envelope(sealed, KEY, ["list"])  # type: ignore[arg-type]
    # Our own payload that is not canonical is our caller's bug, not a peer's.
    with pytest.raises(LocalProtocolError) as err:
        seal_envelope(sealed, KEY, {"f": 0.5})
    assert err.value.code == "canonical"


def test_sealing_the_same_header_and_payload_is_deterministic(sealed: Envelope) -> None:
    again = seal_envelope(dataclasses.replace(sealed, box=None, sig=""), KEY, {"text": "hi \u2713"})
    assert again.box == sealed.box
    other_seq = seal_envelope(dataclasses.replace(sealed, seq=6), KEY, {"text": "hi \u2713"})
    assert other_seq.box != sealed.box  # the nonce is the seq


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=300), name=st.text(max_size=64),
       seq=st.integers(0, 2**53 - 1), ts=st.integers(0, 2**53 - 1))
def test_the_sealed_size_bound_is_never_below_a_real_sealed_envelope(
    text: str, name: str, seq: int, ts: int
) -> None:
    ident = Identity.from_seed(b"\x05" * 32)
    payload = {"text": text, "from_name": name}
    try:
        canonical_json(payload)
    except CanonicalError:
        return  # lone surrogates: no envelope at all
    env = make_envelope("x" * 32, msg_id="ab" * 16, re="cd" * 16, src=ident.node_id,
                        dst=ident.node_id, ts=ts, seq=seq, ttl=16)
    wire = encode_envelope(sign_envelope(seal_envelope(env, KEY, payload), ident))
    assert wire_size(wire) <= sealed_size(payload)
    assert sealed_size(payload) - wire_size(wire) < 400  # and not far above it


def test_check_sealed_size_refuses_with_too_large() -> None:
    payload = {"text": "\n" * 1000}
    check_sealed_size(payload, sealed_size(payload))
    with pytest.raises(RemoteProtocolError) as err:
        check_sealed_size(payload, sealed_size(payload) - 1)
    assert err.value.code == "too_large"
