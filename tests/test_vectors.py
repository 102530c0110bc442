"""Every conformance vector in tests/vectors/*.json (SPEC 1.1, 2, 3, 3.1, 4, 4.2).

The vectors are loaded relative to this file so the repository tests itself without
the shared folder. Where a vector was produced by a deterministic operation (Ed25519
signatures, ChaCha20-Poly1305 with a seq nonce, canonical JSON) we also redo the
operation and demand the identical bytes, not just a successful verification.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hd_protocol import (
    Acceptor,
    CanonicalError,
    Decision,
    Dialer,
    Identity,
    NeedAdmission,
    ProtocolError,
    canonical_json,
    decode_envelope,
    decode_invite,
    derive_session_keys,
    encode_envelope,
    encode_invite,
    loads_strict,
    node_id_for,
    open_envelope,
    seal_envelope,
    sign_envelope,
    signing_bytes,
    verify_envelope,
)
from hd_protocol.peer.handshake import transcript_hash

VECTORS = Path(__file__).parent / "vectors"
EXPECTED_FILES = {"cjson", "envelope", "handshake", "identity", "invite", "seal"}


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{name}.json").read_text("utf-8"))  # type: ignore[no-any-return]


CJSON = load("cjson")["cases"]
IDENTITY = load("identity")["cases"]
ENVELOPE = load("envelope")
HANDSHAKE = load("handshake")["cases"]
INVITE = load("invite")["cases"]
SEAL = load("seal")["cases"]


def test_every_vector_file_is_present_and_exercised() -> None:
    # An empty or missing file would silently parametrize zero cases.
    assert {p.stem for p in VECTORS.glob("*.json")} == EXPECTED_FILES
    for cases in (CJSON, IDENTITY, ENVELOPE["verify"], ENVELOPE["reject"], HANDSHAKE,
                  INVITE, SEAL):
        assert len(cases) >= 1


# --- cjson (SPEC 1.1) -------------------------------------------------------------------


@pytest.mark.parametrize("case", CJSON, ids=lambda c: c["name"])
def test_cjson_vector(case: dict[str, Any]) -> None:
    if case.get("error"):
        with pytest.raises(CanonicalError):
            canonical_json(loads_strict(case["input"]))
        # A value parsed by a lenient parser must be refused by canonical_json too.
        with pytest.raises(CanonicalError):
            canonical_json(json.loads(case["input"]))
        return
    expected = bytes.fromhex(case["canonical_hex"])
    assert canonical_json(loads_strict(case["input"])) == expected
    assert canonical_json(json.loads(case["input"])) == expected
    # Canonical bytes parse back to the same value and are a fixed point.
    assert loads_strict(expected) == json.loads(case["input"])
    assert canonical_json(loads_strict(expected)) == expected


# --- identity (SPEC 2) ------------------------------------------------------------------


@pytest.mark.parametrize("case", IDENTITY, ids=lambda c: c["node_id"])
def test_identity_vector(case: dict[str, Any]) -> None:
    ident = Identity.from_seed(bytes.fromhex(case["seed_hex"]))
    assert ident.public_key == case["public_key"]
    assert ident.node_id == case["node_id"]
    assert node_id_for(case["public_key"]) == case["node_id"]


# --- envelope (SPEC 3) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ENVELOPE["verify"], ids=lambda c: c.get("name", "signed presence")
)
def test_envelope_verify_vector(case: dict[str, Any]) -> None:
    env = decode_envelope(case["wire"])
    assert decode_envelope(case["wire"].encode("utf-8")) == env
    assert verify_envelope(env, case["public_key"]) is case["valid"]
    # The compact wire form is reproduced byte for byte.
    assert encode_envelope(env) == case["wire"]
    if "signing_bytes_hex" in case:
        assert signing_bytes(env) == bytes.fromhex(case["signing_bytes_hex"])
    if "sig" in case:
        assert env.sig == case["sig"]
    if "signer_seed_hex" in case:
        signer = Identity.from_seed(bytes.fromhex(case["signer_seed_hex"]))
        assert signer.public_key == case["public_key"]
        # Ed25519 is deterministic: re-signing the decoded fields gives the same sig.
        assert sign_envelope(replace(env, sig=""), signer).sig == env.sig


@pytest.mark.parametrize("case", ENVELOPE["reject"], ids=lambda c: c["name"])
def test_envelope_reject_vector(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_envelope(case["wire"])
    assert isinstance(info.value.code, str) and info.value.code
    if case.get("code_hint"):
        assert info.value.code == case["code_hint"]


# --- seal (SPEC 3.1) --------------------------------------------------------------------


@pytest.mark.parametrize("case", SEAL, ids=lambda c: c["box"][:12])
def test_seal_vector(case: dict[str, Any]) -> None:
    key = bytes.fromhex(case["key_hex"])
    env = decode_envelope(case["wire"])
    assert env.box == case["box"] and env.data == {}
    assert verify_envelope(env, case["public_key"])
    assert open_envelope(env, key) == case["payload"]
    resealed = seal_envelope(replace(env, box=None, sig=""), key, case["payload"])
    assert resealed.box == case["box"]
    signer = next(
        Identity.from_seed(bytes.fromhex(c["seed_hex"]))
        for c in IDENTITY
        if c["public_key"] == case["public_key"]
    )
    assert encode_envelope(sign_envelope(resealed, signer)) == case["wire"]


# --- handshake (SPEC 4) -----------------------------------------------------------------


def _x25519_public(seed: bytes) -> str:
    raw = X25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw
    )
    return base64.b64encode(raw).decode("ascii")


@pytest.mark.parametrize("case", HANDSHAKE, ids=lambda c: c["transcript_hash_hex"][:12])
def test_handshake_vector_key_schedule(case: dict[str, Any]) -> None:
    hello = decode_envelope(case["hello"])
    ack = decode_envelope(case["hello_ack"])
    auth = decode_envelope(case["auth"])
    dialer = Identity.from_seed(bytes.fromhex(case["dialer_seed_hex"]))
    acceptor = Identity.from_seed(bytes.fromhex(case["acceptor_seed_hex"]))
    d_eph = bytes.fromhex(case["dialer_eph_seed_hex"])
    a_eph = bytes.fromhex(case["acceptor_eph_seed_hex"])

    # Both hellos are self-certifying: src == node_id(public_key), signed by that key.
    for env, ident in ((hello, dialer), (ack, acceptor)):
        assert env.data["public_key"] == ident.public_key
        assert env.src == node_id_for(env.data["public_key"]) == ident.node_id
        assert verify_envelope(env, env.data["public_key"])
    assert hello.data["eph"] == _x25519_public(d_eph)
    assert ack.data["eph"] == _x25519_public(a_eph)
    assert ack.re == hello.msg_id and ack.data["echo"] == hello.data["nonce"]

    th = bytes.fromhex(case["transcript_hash_hex"])
    assert hashlib.sha256(signing_bytes(hello) + signing_bytes(ack)).digest() == th
    assert transcript_hash(hello, ack) == th

    k_d2a = bytes.fromhex(case["key_dialer_to_acceptor_hex"])
    k_a2d = bytes.fromhex(case["key_acceptor_to_dialer_hex"])
    # Each side derives the same pair from its own ephemeral secret.
    assert derive_session_keys(d_eph, ack.data["eph"], hello, ack) == (k_d2a, k_a2d)
    assert derive_session_keys(a_eph, hello.data["eph"], hello, ack) == (k_d2a, k_a2d)

    # The opening auth: signed by the dialer, sealed dialer->acceptor with seq 0,
    # echoing the acceptor's nonce.
    assert auth.src == dialer.node_id and auth.dst == acceptor.node_id
    assert auth.re == ack.msg_id and auth.seq == 0
    assert verify_envelope(auth, dialer.public_key)
    payload = open_envelope(auth, k_d2a)
    assert set(payload) == {"echo", "token", "attest"}
    assert payload["echo"] == ack.data["nonce"]
    with pytest.raises(ProtocolError):
        open_envelope(auth, k_a2d)  # the other direction's key must not open it
    resealed = seal_envelope(replace(auth, box=None, sig=""), k_d2a, payload)
    assert encode_envelope(sign_envelope(resealed, dialer)) == case["auth"]


class ScriptedRng:
    """Hands out exactly the given byte strings, in order (and checks the sizes)."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    def __call__(self, n: int) -> bytes:
        chunk = self._chunks.pop(0)
        assert len(chunk) == n
        return chunk


@pytest.mark.parametrize("case", HANDSHAKE, ids=lambda c: c["transcript_hash_hex"][:12])
def test_handshake_machines_reproduce_vector_frames(case: dict[str, Any]) -> None:
    """Fed the vector's randomness and clock, Dialer and Acceptor emit the vector's
    hello, hello_ack and auth byte for byte (the machines, not just the primitives)."""
    hello_v = decode_envelope(case["hello"])
    ack_v = decode_envelope(case["hello_ack"])
    auth_v = decode_envelope(case["auth"])
    dialer = Identity.from_seed(bytes.fromhex(case["dialer_seed_hex"]))
    acceptor = Identity.from_seed(bytes.fromhex(case["acceptor_seed_hex"]))

    d = Dialer(
        dialer,
        rng=ScriptedRng(
            base64.b64decode(hello_v.data["nonce"]), bytes.fromhex(case["dialer_eph_seed_hex"]),
            bytes.fromhex(hello_v.msg_id), bytes.fromhex(auth_v.msg_id),
        ),
        now=hello_v.ts, node_name=hello_v.data["node_name"],
        capabilities=hello_v.data["capabilities"],
    )
    a = Acceptor(
        acceptor,
        rng=ScriptedRng(
            base64.b64decode(ack_v.data["nonce"]), bytes.fromhex(case["acceptor_eph_seed_hex"]),
            bytes.fromhex(ack_v.msg_id),
        ),
        now=hello_v.ts, node_name=ack_v.data["node_name"],
        capabilities=ack_v.data["capabilities"],
    )
    (hello,) = d.start(hello_v.ts)
    assert hello.wire == case["hello"]
    (ack,) = a.receive(hello.wire, ack_v.ts)
    assert ack.wire == case["hello_ack"]
    (need,) = d.receive(ack.wire, auth_v.ts)
    assert isinstance(need, NeedAdmission) and need.peer.node_id == acceptor.node_id
    (auth,) = d.admit(Decision("trusted"), auth_v.ts)
    assert auth.wire == case["auth"]


# --- invite (SPEC 4.2) ------------------------------------------------------------------


@pytest.mark.parametrize("case", INVITE, ids=lambda c: c["decoded"]["node_id"])
def test_invite_vector(case: dict[str, Any]) -> None:
    assert decode_invite(case["invite"]) == case["decoded"]
    assert encode_invite(**case["decoded"]) == case["invite"]
