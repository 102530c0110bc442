"""The lobby/relay frame codec and the identity proofs (SPEC 7.1, 7.7), pinned where
mutation testing found them loose: the exact bytes a node signs, the error code of each
refusal of ``decode_frame``, and the size boundary.

The servers map an unknown error code to ``bad_frame`` before it leaves, so a wrong code
raised here would never show through them: these tests call the codec directly.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from hd_protocol import Identity, RemoteProtocolError
from hd_protocol.brokers.frames import (
    ATTACH_PREFIX,
    REGISTER_PREFIX,
    attach_bytes,
    challenge,
    check_identity_proof,
    decode_frame,
    parse_challenge,
    register_bytes,
)
from hd_protocol.identity import b64encode

SERVER = Identity.from_seed(hashlib.sha256(b"frames-mutants/server").digest())
NODE = Identity.from_seed(hashlib.sha256(b"frames-mutants/node").digest())
NONCE = b64encode(bytes(range(32)))


def test_register_bytes_are_the_prefix_and_the_canonical_json_of_the_seven_fields() -> None:
    """SPEC 7.1: the signed bytes are fixed down to the member names; a lobby and a
    node built from different code must agree on every byte."""
    signed = register_bytes("n0", "s1", "d2", "k3", "name", [{"a": 1}], ["chat"])
    assert signed == REGISTER_PREFIX + (
        b'{"addresses":[{"a":1}],"capabilities":["chat"],"node_id":"d2",'
        b'"node_name":"name","nonce":"n0","public_key":"k3","server_id":"s1"}')
    assert REGISTER_PREFIX == b"hd1-lobby-register\n"


def test_attach_bytes_are_the_prefix_and_the_canonical_json_of_the_four_fields() -> None:
    """SPEC 7.7: what a node signs to attach to a relay, byte for byte."""
    assert attach_bytes("n0", "s1", "d2", "k3") == ATTACH_PREFIX + (
        b'{"node_id":"d2","nonce":"n0","public_key":"k3","server_id":"s1"}')
    assert ATTACH_PREFIX == b"hd1-relay-attach\n"


def _code(text: str | bytes, max_bytes: int = 1024) -> str:
    with pytest.raises(RemoteProtocolError) as err:
        decode_frame(text, max_bytes)
    return err.value.code


@pytest.mark.parametrize("text", ["not json", "{", '{"type":"a","type":"b"}', "[1.5]"])
def test_decode_frame_calls_text_that_is_no_strict_json_bad_frame(text: str) -> None:
    assert _code(text) == "bad_frame"


@pytest.mark.parametrize("text", ["[]", '"x"', "5", "null"])
def test_decode_frame_calls_json_that_is_no_object_bad_frame(text: str) -> None:
    assert _code(text) == "bad_frame"


@pytest.mark.parametrize("obj", [{}, {"type": 5}, {"type": "Bad"}, {"type": ""},
                                 {"type": "a" * 33}])
def test_decode_frame_calls_an_object_without_a_wellformed_type_bad_frame(obj: object) -> None:
    assert _code(json.dumps(obj)) == "bad_frame"


def test_decode_frame_takes_a_frame_of_exactly_max_bytes_and_refuses_one_more() -> None:
    frame = '{"type":"x","pad":"' + "p" * 20 + '"}'
    size = len(frame.encode("utf-8"))
    assert decode_frame(frame, size) == {"type": "x", "pad": "p" * 20}
    assert _code(frame, size - 1) == "too_large"


def test_parse_challenge_calls_a_server_key_that_is_no_key_auth() -> None:
    frame = json.loads(challenge(SERVER, bytes(32)))
    frame["server_key"] = "not a key"
    with pytest.raises(RemoteProtocolError) as err:
        parse_challenge(frame)
    assert err.value.code == "auth"


@pytest.mark.parametrize(("node_id", "public_key"), [
    (5, NODE.public_key),  # a key, and an id that is not even a string
    (NODE.node_id, 5),
])
def test_check_identity_proof_refuses_fields_that_are_not_both_strings_first(
        node_id: object, public_key: object) -> None:
    """The type check comes first (with its own message), not a later failure."""
    signed = attach_bytes(NONCE, SERVER.node_id, NODE.node_id, NODE.public_key)
    with pytest.raises(RemoteProtocolError) as err:
        check_identity_proof(node_id, public_key, NODE.sign(signed), signed)
    assert (err.value.code, err.value.message) == (
        "auth", "node_id and public_key are strings")
