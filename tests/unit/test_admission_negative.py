"""Invites (SPEC 4.2) and directory attestations (SPEC 7.6) that are well formed in all
but one respect.

Every refused input here is otherwise valid — a body the decoder would take under the
right prefix, a certificate correctly signed by the directory — so each test fails if
the one check it names is taken out.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from hd_protocol import (
    Decision,
    Identity,
    Policy,
    ProtocolError,
    canonical_json,
    decode_invite,
    dialer_view,
    encode_invite,
    issue_attestation,
    make_candidate,
    new_token,
    verify_attestation,
)
from hd_protocol.peer.admission import is_private_address

NOW = 1_764_000_000_000
TOKEN = "tok-" + "k" * 28


def fields(identity: Identity, **change: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "addrs": [make_candidate("host", "ws://192.168.1.5:8766/peer-ws")],
        "exp": NOW, "node_id": identity.node_id, "public_key": identity.public_key,
        "token": TOKEN,
    }
    body.update(change)
    return body


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def refused(text: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_invite(text)
    assert info.value.code == "bad_invite", info.value
    return info.value


# --- the invite string -------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["hd2:", "HD1:", "hd0:", "xyz:", "hd1;", " hd1"],
                         ids=["hd2", "upper", "hd0", "xyz", "semicolon", "space"])
def test_a_valid_body_under_another_prefix_is_not_an_invite(
    alice: Identity, prefix: str
) -> None:
    body = b64url(canonical_json(fields(alice)))
    assert decode_invite("hd1:" + body) == fields(alice)
    refused(prefix + body)


def _invite_of_length(alice: Identity, length: int) -> str:
    """A valid invite exactly ``length`` characters long (twelve long addresses and a
    token of the right length): what a node with many advertised names would print."""

    def text(url_len: int, token_len: int) -> str:
        addrs = [make_candidate("host", f"ws://{i:x}" + "h" * (url_len - 16) + ":1/peer-ws")
                 for i in range(12)]
        return encode_invite(addrs=addrs, exp=NOW, node_id=alice.node_id,
                             public_key=alice.public_key, token="t" * token_len)

    for url_len in range(512, 16, -1):
        if len(text(url_len, 16)) <= length <= len(text(url_len, 256)):
            for token_len in range(16, 257):
                candidate = text(url_len, token_len)
                if len(candidate) == length:
                    return candidate
    raise AssertionError(f"no invite of {length} chars")


def body_of(text: str) -> dict[str, Any]:
    b64 = text[4:]
    body = json.loads(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))
    assert isinstance(body, dict)
    return body


def test_an_invite_of_8192_chars_is_read_and_the_next_longer_one_is_refused(
    alice: Identity,
) -> None:
    longest = _invite_of_length(alice, 8192)
    assert decode_invite(longest)["node_id"] == alice.node_id
    assert decode_invite("  " + longest + "\n")["node_id"] == alice.node_id  # stripped first
    # Unpadded base64 is never 1 more than a multiple of 4 long: 8194 comes next.
    too_long = _invite_of_length(alice, 8194)
    assert encode_invite(**body_of(too_long)) == too_long  # valid but long
    assert refused(too_long).message == "not an hd1: invite"


@pytest.mark.parametrize("body", [b"5", b"null", b"true", b'"string"', b"[]", b"-1"],
                         ids=["int", "null", "bool", "string", "list", "negative"])
def test_an_invite_whose_body_is_not_an_object_is_bad_invite_not_a_crash(body: bytes) -> None:
    refused("hd1:" + b64url(body))


def test_the_shortest_non_object_invite_is_bad_invite() -> None:
    assert refused("hd1:NQ").message == "invite body is not an object"  # NQ is b"5"


# --- attestations ---------------------------------------------------------------------------


@pytest.fixture
def lobby(carol: Identity) -> Identity:
    return carol


def _signed(lobby: Identity, cert: Any) -> dict[str, Any]:
    return {"cert": cert, "sig": lobby.sign(b"hd1-attest\n" + canonical_json(cert))}


def test_an_attestation_is_checked_against_exactly_its_four_fields(
    lobby: Identity, alice: Identity
) -> None:
    args = (lobby.public_key, alice.node_id, alice.public_key, NOW)
    cert = issue_attestation(lobby, alice.node_id, alice.public_key, NOW + 1)["cert"]
    assert verify_attestation(_signed(lobby, cert), *args)
    # Each is signed by the directory itself, so only the shape rule can refuse it.
    assert not verify_attestation(_signed(lobby, {**cert, "room": "r1"}), *args)
    for missing in cert:
        partial = {k: v for k, v in cert.items() if k != missing}
        assert not verify_attestation(_signed(lobby, partial), *args)
    assert not verify_attestation(_signed(lobby, [cert]), *args)


def test_an_attestation_expires_at_its_exp(lobby: Identity, alice: Identity) -> None:
    att = issue_attestation(lobby, alice.node_id, alice.public_key, NOW)
    args = (lobby.public_key, alice.node_id, alice.public_key)
    assert verify_attestation(att, *args, NOW - 1)
    assert not verify_attestation(att, *args, NOW)


@pytest.mark.parametrize("exp", [True, "1764000000001", None, [NOW + 1]],
                         ids=["bool", "string", "null", "list"])
def test_an_attestation_whose_exp_is_no_integer_is_refused(
    lobby: Identity, alice: Identity, exp: Any
) -> None:
    cert = {"node_id": alice.node_id, "public_key": alice.public_key,
            "issuer": lobby.node_id, "exp": exp}
    assert not verify_attestation(_signed(lobby, cert), lobby.public_key, alice.node_id,
                                  alice.public_key, 0)


@pytest.mark.parametrize(
    "attest",
    [{}, {"cert": None}, {"sig": "x"}, {"cert": {}, "sig": None}, {"cert": "c", "sig": "s"}],
    ids=["empty", "null_cert", "no_cert", "null_sig", "string_cert"],
)
def test_a_malformed_attestation_is_false_not_an_exception(
    lobby: Identity, alice: Identity, attest: dict[str, Any]
) -> None:
    assert verify_attestation(attest, lobby.public_key, alice.node_id, alice.public_key,
                              NOW) is False


# --- the dialer's view in directory mode, tokens, LAN addresses -------------------------


def test_a_dialer_trusts_a_node_its_directory_lists_only_in_directory_mode_with_a_key(
    alice: Identity, lobby: Identity
) -> None:
    directory = Policy(trust_mode="directory", directory_key=lobby.public_key)
    args = (alice.node_id, alice.public_key)
    assert dialer_view(directory, *args, record=None, directory_listed=True) == Decision(
        level="trusted")
    assert dialer_view(directory, *args, record=None).reason == "pairing_required"
    for policy in (Policy(trust_mode="directory"), Policy(trust_mode="manual",
                                                          directory_key=lobby.public_key)):
        assert dialer_view(policy, *args, record=None,
                           directory_listed=True).reason == "pairing_required"


def test_tokens_carry_at_least_16_random_bytes_as_unpadded_base64url() -> None:
    assert new_token(lambda n: b"\xfb" * n, 16) == "-_v7-_v7-_v7-_v7-_v7-w"
    assert new_token(lambda n: b"\x17" * n, 18) == "FxcX" * 6  # a token may end in X
    with pytest.raises(ValueError):
        new_token(lambda n: b"\x00" * n, 15)


@pytest.mark.parametrize("addr", ["10.0.0.1%a%b", "127.0.0.1%lo", "[fe80::1%eth0]",
                                  "::ffff:10.0.0.1%eth0"],
                         ids=["two_zones", "loopback", "link_local", "mapped"])
def test_a_lan_address_with_a_zone_is_still_a_lan_address(addr: str) -> None:
    assert is_private_address(addr)


def test_a_default_token_is_24_random_bytes() -> None:
    assert new_token(lambda n: b"\x00" * n) == "A" * 32


def test_an_invite_address_whose_type_is_a_list_is_bad_invite_not_a_crash(
    alice: Identity,
) -> None:
    # Found by the structural invite fuzzer: {"type": []} made check_candidate raise
    # TypeError (a list is unhashable) out of decode_invite.
    body = fields(alice, addrs=[{"type": ["host"], "url": "ws://h:1/peer-ws", "priority": 1}])
    refused("hd1:" + b64url(canonical_json(body)))
