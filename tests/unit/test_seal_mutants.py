"""``seal_sign_encode`` (SPEC 3.1): an ordinary envelope takes the one-pass path — a
session seals every envelope it sends through it, so falling back to the three general
calls would be a silent slowdown (issue 13). That the two paths agree byte for byte is
tests/unit/test_fast_paths.py's and tests/property's business."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from hd_protocol import Identity, make_envelope
from hd_protocol import seal as seal_module
from hd_protocol.envelope import BOX_PREFIX
from hd_protocol.seal import box_aad, seal_sign_encode

KEY = bytes(range(32))
T0 = 1_764_000_000_000


def test_an_ordinary_envelope_is_sealed_without_the_general_path(
        alice: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    def general(*_: Any) -> Any:
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(seal_module, "encode_envelope", general)
    monkeypatch.setattr(seal_module, "sign_envelope", general)
    monkeypatch.setattr(seal_module, "seal_with", general)
    env = make_envelope("peer_chat", msg_id="1" * 32, src=alice.node_id, dst=None, ts=T0,
                        seq=3)
    wire = seal_sign_encode(ChaCha20Poly1305(KEY), alice, env, {"text": "x"})
    obj = json.loads(wire)
    assert (obj["type"], obj["seq"], obj["src"], obj["data"]) == (
        "peer_chat", 3, alice.node_id, {})


def test_the_one_shot_calls_keep_the_last_keys_aead() -> None:
    # seal_envelope/open_envelope with one key many times in a row build it once
    first = seal_module._aead(KEY)
    assert seal_module._aead(KEY) is first
    other = seal_module._aead(bytes(32))
    assert other is not first and seal_module._aead(bytes(32)) is other
    assert seal_module._aead(KEY) is not first  # only the last one is kept


def test_the_box_aad_of_an_ordinary_envelope_is_written_without_the_encoder(
        alice: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_envelope("peer_chat", msg_id="1" * 32, src=alice.node_id, dst=None, ts=T0,
                        seq=3)
    expected = box_aad(env)

    def general(*_: Any) -> Any:
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(seal_module, "dumps_trusted", general)
    assert box_aad(env) == expected and expected.startswith(BOX_PREFIX)
