"""Envelope properties (SPEC 3, 3.1) over generated signed envelopes."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol import (
    Envelope,
    Identity,
    ProtocolError,
    canonical_json,
    decode_envelope,
    encode_envelope,
    make_envelope,
    open_envelope,
    seal_envelope,
    sign_envelope,
    signing_bytes,
    verify_envelope,
)
from hd_protocol.cjson import MAX_INT

SETTINGS = settings(max_examples=100, deadline=None)
KEY = bytes(range(32))
IDENTITIES = [Identity.from_seed(hashlib.sha256(b"envelope-props/%d" % i).digest())
              for i in range(3)]

node_ids = st.sampled_from([i.node_id for i in IDENTITIES])
msg_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)
# Strings with control characters exercise every escape the encoder writes.
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
keys = st.text(st.characters(max_codepoint=0x7F), max_size=6)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_INT, MAX_INT) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
payloads = st.dictionaries(keys, values, max_size=4)


@st.composite
def signed_envelopes(draw: Any) -> tuple[Envelope, Identity, bytes | None]:
    """(signed envelope, its signer, the box key if sealed)."""
    signer = draw(st.sampled_from(IDENTITIES))
    sealed = draw(st.booleans())
    seq = draw(st.integers(0, MAX_INT)) if sealed else draw(st.none() | st.integers(0, MAX_INT))
    env = make_envelope(
        draw(st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)),
        msg_id=draw(msg_ids), re=draw(st.none() | msg_ids), src=signer.node_id,
        dst=draw(st.none() | node_ids), ts=draw(st.integers(0, MAX_INT)),
        ttl=draw(st.integers(0, 16)), seq=seq, data=None if sealed else draw(payloads),
    )
    key = None
    if sealed:
        key = draw(st.binary(min_size=32, max_size=32))
        env = seal_envelope(env, key, draw(payloads))
    return sign_envelope(env, signer), signer, key


def ttl_value_span(wire: bytes) -> range:
    """Byte positions of the top-level ttl digits (the only unsigned bytes). ttl comes
    before data in the wire order, so the first match is the top-level member."""
    start = wire.index(b',"ttl":') + len(b',"ttl":')
    end = wire.index(b",", start)
    return range(start, end)


@SETTINGS
@given(signed_envelopes())
def test_decode_of_encode_is_the_same_verified_envelope(case: Any) -> None:
    env, signer, _ = case
    wire = encode_envelope(env)
    assert decode_envelope(wire) == env
    assert decode_envelope(wire.encode("utf-8")) == env
    assert verify_envelope(decode_envelope(wire), signer.public_key)
    assert encode_envelope(decode_envelope(wire)) == wire


@SETTINGS
@given(signed_envelopes())
def test_signing_bytes_and_box_follow_the_spec_formulas(case: Any) -> None:
    """Checked against SPEC 3 / 3.1 written out here, whatever shortcuts the
    implementation takes to produce the same bytes."""
    env, _, key = case
    fields = {f.name: getattr(env, f.name) for f in dataclasses.fields(Envelope)}
    assert signing_bytes(env) == b"hd1-env\n" + canonical_json(
        {k: v for k, v in fields.items() if k not in ("sig", "ttl")}
    )
    assert json.loads(encode_envelope(env)) == fields
    if key is not None:
        aad = b"hd1-box\n" + canonical_json(
            {k: fields[k] for k in ("type", "msg_id", "re", "src", "dst", "ts", "seq")}
        )
        nonce = bytes(4) + env.seq.to_bytes(8, "big")
        plain = ChaCha20Poly1305(key).decrypt(nonce, base64.b64decode(env.box), aad)
        assert canonical_json(open_envelope(env, key)) == plain


@settings(max_examples=300, deadline=None)
@given(signed_envelopes(), st.data())
def test_flipping_any_byte_outside_ttl_is_rejected_or_changes_nothing(
    case: Any, data: Any
) -> None:
    """A single-byte change to a signed wire either fails decoding, fails the
    signature, or is a different spelling of exactly the same envelope. The only such
    spelling one byte can make is the case of a hex digit in a \\u00XX escape (the
    encoder writes control characters that way). Inside the ttl value, a change that
    still decodes only changes ttl, which the signature rightly does not cover."""
    env, signer, _ = case
    wire = encode_envelope(env).encode("utf-8")
    pos = data.draw(st.integers(0, len(wire) - 1), label="pos")
    mask = data.draw(st.integers(1, 255), label="mask")
    check_flip(env, signer, wire, pos, mask)


def check_flip(env: Envelope, signer: Identity, wire: bytes, pos: int, mask: int) -> str:
    """Assert the flip property for one (pos, mask); say how the flip ended."""
    flipped = bytearray(wire)
    flipped[pos] ^= mask
    try:
        got = decode_envelope(bytes(flipped))
    except ProtocolError:
        return "rejected"
    if not verify_envelope(got, signer.public_key):
        return "bad signature"
    if pos in ttl_value_span(wire):
        assert dataclasses.replace(got, ttl=env.ttl) == env
        return "ttl"
    assert got == env
    assert mask == 0x20 and bytes(flipped).lower() == wire.lower()
    assert chr(wire[pos]).lower() in "abcdef"
    return "same envelope"


def test_every_flip_of_a_wire_with_escapes_obeys_the_flip_property() -> None:
    """Deterministic companion of the property above that surely reaches the rare
    outcomes: a ttl change and a hex-case change inside a \\u00XX escape."""
    signer = IDENTITIES[0]
    env = sign_envelope(
        make_envelope("peer_chat", msg_id="ab" * 16, src=signer.node_id, dst=None, ts=5,
                      seq=3, data={"t": "x\x1f\x0b y\n\"\\ \u00e9", "n": -12, "l": [True]}),
        signer,
    )
    wire = encode_envelope(env).encode("utf-8")
    outcomes = {check_flip(env, signer, wire, pos, mask)
                for pos in range(len(wire)) for mask in (0x01, 0x08, 0x20, 0x80)}
    assert outcomes == {"rejected", "bad signature", "ttl", "same envelope"}


@SETTINGS
@given(signed_envelopes(), st.data())
def test_truncated_wire_is_a_protocol_error(case: Any, data: Any) -> None:
    wire = encode_envelope(case[0])
    cut = data.draw(st.integers(0, len(wire) - 1))
    try:
        decode_envelope(wire[:cut])
    except ProtocolError:
        return
    raise AssertionError("a truncated envelope decoded")


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_decode_raises_only_protocol_error_on_arbitrary_input(text: str | bytes) -> None:
    try:
        decode_envelope(text)
    except ProtocolError:
        pass


@SETTINGS
@given(signed_envelopes(), payloads, st.binary(min_size=32, max_size=32))
def test_sealed_payload_opens_only_with_its_key(case: Any, payload: Any, other: bytes) -> None:
    env, signer, _ = case
    key = hashlib.sha256(env.msg_id.encode()).digest()
    if env.seq is None:
        env = dataclasses.replace(env, seq=0)
    sealed = seal_envelope(env, key, payload)
    assert open_envelope(sealed, key) == payload
    assert open_envelope(decode_envelope(encode_envelope(sign_envelope(sealed, signer))),
                         key) == payload
    if other != key:
        try:
            open_envelope(sealed, other)
        except ProtocolError as exc:
            assert exc.code == "box"
        else:
            raise AssertionError("opened with the wrong key")


@SETTINGS
@given(
    signer=st.sampled_from(IDENTITIES), type_=st.from_regex(r"[a-z][a-z0-9_]{0,31}",
                                                          fullmatch=True),
    msg_id=msg_ids, re=st.none() | msg_ids, dst=st.none() | node_ids,
    ts=st.integers(0, MAX_INT), ttl=st.integers(0, 16), seq=st.integers(0, MAX_INT),
    payload=payloads,
)
def test_the_one_pass_sender_writes_exactly_what_seal_sign_encode_write(
    signer: Identity, type_: str, msg_id: str, re: str | None, dst: str | None, ts: int,
    ttl: int, seq: int, payload: dict[str, Any],
) -> None:
    from hd_protocol.seal import seal_sign_encode, seal_with

    aead = ChaCha20Poly1305(KEY)
    env = make_envelope(type_, msg_id=msg_id, re=re, src=signer.node_id, dst=dst, ts=ts,
                        ttl=ttl, seq=seq)
    general = encode_envelope(sign_envelope(seal_with(aead, env, payload), signer))
    assert seal_sign_encode(aead, signer, env, payload) == general
