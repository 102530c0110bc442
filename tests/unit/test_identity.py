"""Identities and node ids (SPEC 2)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from hd_protocol import Identity, ProtocolError, node_id_for, verify_signature
from hd_protocol.identity import is_node_id

NODE_ID = re.compile(r"^[a-z2-7]{16}$")


def test_node_id_is_16_chars_of_lowercase_base32_of_sha256_of_the_raw_key(rng_factory) -> None:
    for i in range(8):
        ident = Identity.generate(rng_factory(f"id{i}"))
        raw = base64.b64decode(ident.public_key)
        assert len(raw) == 32
        expected = base64.b32encode(hashlib.sha256(raw).digest()).decode().lower()[:16]
        assert ident.node_id == expected
        assert NODE_ID.match(ident.node_id)
        assert node_id_for(ident.public_key) == ident.node_id


def test_public_key_is_padded_standard_base64(alice: Identity) -> None:
    assert alice.public_key.endswith("=") and len(alice.public_key) == 44
    assert base64.b64encode(base64.b64decode(alice.public_key)).decode() == alice.public_key


def test_generate_with_the_same_rng_seed_gives_the_same_identity(rng_factory) -> None:
    a = Identity.generate(rng_factory("same"))
    b = Identity.generate(rng_factory("same"))
    c = Identity.generate(rng_factory("other"))
    assert a.public_key == b.public_key
    assert a.public_key != c.public_key


def test_generate_without_rng_gives_fresh_identities() -> None:
    assert Identity.generate().public_key != Identity.generate().public_key


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_from_seed_refuses_a_seed_that_is_not_32_bytes(length: int) -> None:
    with pytest.raises(ValueError):
        Identity.from_seed(b"\x01" * length)


def test_signature_is_base64_of_64_bytes_and_verifies(alice: Identity) -> None:
    sig = alice.sign(b"data")
    assert len(base64.b64decode(sig, validate=True)) == 64
    assert verify_signature(alice.public_key, b"data", sig)
    # Ed25519 is deterministic.
    assert alice.sign(b"data") == sig


def test_signature_does_not_verify_for_other_data_or_another_key(
    alice: Identity, bob: Identity
) -> None:
    sig = alice.sign(b"data")
    assert not verify_signature(alice.public_key, b"datA", sig)
    assert not verify_signature(bob.public_key, b"data", sig)


def _malformed(alice: Identity, case: str) -> tuple[object, object]:
    key, good = alice.public_key, alice.sign(b"data")
    raw = base64.b64decode(good)
    return {
        "key not base64": ("not base64!", good),
        "key of 31 bytes": (base64.b64encode(b"\x00" * 31).decode(), good),
        "key not canonical": (key[:-2] + "5=", good),
        "key None": (None, good),
        "key a list": (["a list"], good),
        "sig not base64": (key, "not base64!"),
        "sig of 63 bytes": (key, base64.b64encode(raw[:63]).decode()),
        "sig unpadded": (key, good.rstrip("=")),
        "sig None": (key, None),
        "sig an int": (key, 12),
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "key not base64", "key of 31 bytes", "key not canonical", "key None", "key a list",
        "sig not base64", "sig of 63 bytes", "sig unpadded", "sig None", "sig an int",
    ],
)
def test_verify_signature_returns_false_for_malformed_input_never_raises(
    alice: Identity, case: str
) -> None:
    key, sig = _malformed(alice, case)
    assert verify_signature(key, b"data", sig) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "public_key",
    [
        "TTh9Ha6JPzX7nssz0kjGMWVJYEtlnuJYkobRrOQErw5=",  # stray bits in the last char
        "TTh9Ha6JPzX7nssz0kjGMWVJYEtlnuJYkobRrOQErw4",  # missing padding
        "TTh9Ha6JPzX7nssz0kjGMWVJYEtlnuJYkobRrOQErw4=\n",
        base64.b64encode(b"\x07" * 33).decode(),
        "",
    ],
)
def test_node_id_for_refuses_a_key_that_is_not_canonical_base64_of_32_bytes(
    public_key: str,
) -> None:
    with pytest.raises(ProtocolError):
        node_id_for(public_key)


def test_private_bytes_round_trip_to_the_same_identity(alice: Identity) -> None:
    again = Identity.from_private_bytes(alice.private_bytes())
    assert again.public_key == alice.public_key and again.node_id == alice.node_id
    assert again.sign(b"x") == alice.sign(b"x")


@pytest.mark.parametrize(
    "blob", [b"", b"garbage", b"hd1-ed25519-seed:!!!", b"hd1-ed25519-seed:" + b"QUJD"]
)
def test_from_private_bytes_refuses_a_corrupt_key_file(blob: bytes) -> None:
    with pytest.raises(ValueError):
        Identity.from_private_bytes(blob)


def test_repr_shows_the_node_id_but_not_the_secret(alice: Identity) -> None:
    secret = alice.private_bytes().split(b":", 1)[1].strip().decode()
    text = repr(alice)
    assert alice.node_id in text
    assert secret not in text and secret[:16] not in text


@pytest.mark.parametrize("value", ["nope", "A" * 16, "a" * 15, "a" * 16 + "\n", 5, None],
                         ids=["short", "upper", "15", "newline", "int", "null"])
def test_is_node_id_takes_only_16_lowercase_base32_chars(value: object) -> None:
    assert is_node_id(value) is False
    assert is_node_id("a2" * 8) is True


def test_a_public_key_that_is_not_a_string_is_a_bad_field() -> None:
    with pytest.raises(ProtocolError) as info:
        node_id_for([1])  # type: ignore[arg-type]
    assert info.value.code == "bad_field"


def test_a_key_file_with_a_stray_character_in_its_base64_is_corrupt(alice: Identity) -> None:
    text = alice.private_bytes().strip()
    prefix, b64 = text.split(b":", 1)
    with pytest.raises(ValueError, match="corrupt"):
        Identity.from_private_bytes(prefix + b":" + b64[:10] + b"*" + b64[10:])


def test_sign_raw_gives_the_bytes_sign_gives_in_base64(alice: Identity) -> None:
    raw = alice.sign_raw(b"data")
    assert len(raw) == 64 and base64.b64encode(raw).decode() == alice.sign(b"data")
