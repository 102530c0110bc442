"""Admission (SPEC 4.1), invites (SPEC 4.2) and directory attestations (SPEC 7.6)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from hd_protocol import (
    Identity,
    InviteRecord,
    PeerRecord,
    Policy,
    Presented,
    ProtocolError,
    admit,
    canonical_json,
    decode_invite,
    dialer_view,
    encode_invite,
    hash_token,
    invite_expired,
    issue_attestation,
    make_candidate,
    new_token,
    token_matches,
    verify_attestation,
)

NOW = 1_764_000_000_000
TOKEN = "tok-" + "k" * 28
MANUAL = Policy()
OPEN_LAN = Policy(trust_mode="open-lan")


@pytest.fixture
def presented(alice: Identity) -> Presented:
    return Presented(node_id=alice.node_id, public_key=alice.public_key)


def invite(**kw: Any) -> InviteRecord:
    args: dict[str, Any] = {"token_hash": hash_token(TOKEN), "exp": NOW + 1000}
    args.update(kw)
    return InviteRecord(**args)


def decide(presented: Presented, policy: Policy = MANUAL, **kw: Any) -> Any:
    args: dict[str, Any] = {"record": None, "invite": None, "now": NOW}
    args.update(kw)
    return admit(policy, presented, **args)


def with_(p: Presented, **kw: Any) -> Presented:
    fields = {k: getattr(p, k) for k in Presented.__slots__}  # type: ignore[attr-defined]
    fields.update(kw)
    return Presented(**fields)


# --- the ladder, step by step -----------------------------------------------------------


def test_unknown_peer_with_nothing_to_show_needs_pairing(presented: Presented) -> None:
    d = decide(presented)
    assert not d.ok and d.level is None and d.reason == "pairing_required"


def test_known_record_with_another_key_is_key_mismatch_whatever_else_is_presented(
    alice: Identity, bob: Identity, presented: Presented
) -> None:
    record = PeerRecord(alice.node_id, bob.public_key, trusted=True, blocked=True)
    d = decide(with_(presented, token=TOKEN, remote_addr="127.0.0.1"), OPEN_LAN,
               record=record, invite=invite(), guest_pending=True, room_ticket_ok=True)
    assert d.reason == "key_mismatch" and not d.ok


def test_blocked_comes_before_trusted_and_before_an_invite(
    alice: Identity, presented: Presented
) -> None:
    record = PeerRecord(alice.node_id, alice.public_key, trusted=True, blocked=True)
    d = decide(with_(presented, token=TOKEN, remote_addr="10.0.0.2"), OPEN_LAN, record=record,
               invite=invite(), guest_pending=True)
    assert d.reason == "blocked" and not d.ok


def test_known_trusted_peer_is_trusted_without_new_effects(
    alice: Identity, presented: Presented
) -> None:
    record = PeerRecord(alice.node_id, alice.public_key, trusted=True)
    d = decide(presented, record=record)
    assert d.level == "trusted" and not d.store_trusted and d.redeem_invite is None


def test_known_untrusted_peer_continues_down_the_ladder(
    alice: Identity, presented: Presented
) -> None:
    record = PeerRecord(alice.node_id, alice.public_key)
    assert decide(presented, record=record).reason == "pairing_required"
    assert decide(presented, record=record, guest_pending=True).level == "guest"


def test_valid_invite_trusts_and_asks_to_store_the_peer_and_redeem(
    presented: Presented,
) -> None:
    d = decide(with_(presented, token=TOKEN), invite=invite())
    assert d.level == "trusted" and d.store_trusted
    assert d.redeem_invite == hash_token(TOKEN)


def test_invite_beats_a_pending_guest_admission(presented: Presented) -> None:
    d = decide(with_(presented, token=TOKEN), invite=invite(), guest_pending=True)
    assert d.level == "trusted" and d.store_trusted


@pytest.mark.parametrize(
    "record_kw, token",
    [
        ({"exp": NOW}, TOKEN),  # expires at now: expired
        ({"exp": NOW - 1}, TOKEN),
        ({"revoked": True}, TOKEN),
        ({"redeemed_by": "zzzzzzzzzzzzzzzz"}, TOKEN),  # another node owns it
        ({}, TOKEN + "x"),  # wrong token
        ({}, ""),
    ],
    ids=["exp==now", "expired", "revoked", "redeemed-by-another", "wrong-token", "empty"],
)
def test_unusable_invite_does_not_admit(
    presented: Presented, record_kw: dict[str, Any], token: str
) -> None:
    d = decide(with_(presented, token=token), invite=invite(**record_kw))
    assert d.reason == "pairing_required" and not d.store_trusted and d.redeem_invite is None


def test_unusable_invite_still_falls_through_to_guest(presented: Presented) -> None:
    d = decide(with_(presented, token=TOKEN), invite=invite(revoked=True), guest_pending=True)
    assert d.level == "guest" and not d.store_trusted


def test_the_redeeming_node_may_redeem_again_until_expiry(
    alice: Identity, presented: Presented
) -> None:
    d = decide(with_(presented, token=TOKEN), invite=invite(redeemed_by=alice.node_id))
    assert d.level == "trusted"
    late = decide(with_(presented, token=TOKEN), invite=invite(redeemed_by=alice.node_id),
                  now=NOW + 1000)
    assert late.reason == "pairing_required"


def test_token_without_a_stored_invite_does_not_admit(presented: Presented) -> None:
    assert decide(with_(presented, token=TOKEN), invite=None).reason == "pairing_required"


# --- directory attestations -------------------------------------------------------------


@pytest.fixture
def lobby(rng_factory: Any) -> Identity:
    return Identity.generate(rng_factory("lobby"))


def directory(lobby: Identity) -> Policy:
    return Policy(trust_mode="directory", directory_key=lobby.public_key)


def test_valid_attestation_in_directory_mode_trusts_for_the_session_only(
    lobby: Identity, alice: Identity, presented: Presented
) -> None:
    att = issue_attestation(lobby, alice.node_id, alice.public_key, NOW + 1)
    d = decide(with_(presented, attest=att), directory(lobby))
    assert d.level == "trusted" and not d.store_trusted


def test_attestation_is_ignored_outside_directory_mode(
    lobby: Identity, alice: Identity, presented: Presented
) -> None:
    att = issue_attestation(lobby, alice.node_id, alice.public_key, NOW + 1)
    p = with_(presented, attest=att)
    assert decide(p, Policy(directory_key=lobby.public_key)).reason == "pairing_required"
    assert decide(p, Policy(trust_mode="directory")).reason == "pairing_required"  # no key


def test_expired_attestation_does_not_admit(
    lobby: Identity, alice: Identity, presented: Presented
) -> None:
    att = issue_attestation(lobby, alice.node_id, alice.public_key, NOW)
    assert decide(with_(presented, attest=att), directory(lobby)).reason == "pairing_required"


def test_attestation_from_another_issuer_does_not_admit(
    lobby: Identity, carol: Identity, alice: Identity, presented: Presented
) -> None:
    att = issue_attestation(carol, alice.node_id, alice.public_key, NOW + 10)
    assert decide(with_(presented, attest=att), directory(lobby)).reason == "pairing_required"


def test_attestation_for_another_key_or_node_does_not_admit(
    lobby: Identity, alice: Identity, bob: Identity, presented: Presented
) -> None:
    for node_id, key in ((alice.node_id, bob.public_key), (bob.node_id, bob.public_key)):
        att = issue_attestation(lobby, node_id, key, NOW + 10)
        d = decide(with_(presented, attest=att), directory(lobby))
        assert d.reason == "pairing_required"


def test_verify_attestation_checks_signature_issuer_and_shape(
    lobby: Identity, alice: Identity, carol: Identity
) -> None:
    good = issue_attestation(lobby, alice.node_id, alice.public_key, NOW + 10)
    args = (lobby.public_key, alice.node_id, alice.public_key, NOW)
    assert verify_attestation(good, *args)
    assert good["sig"] == lobby.sign(b"hd1-attest\n" + canonical_json(good["cert"]))
    tampered = {"cert": {**good["cert"], "exp": NOW + 10**9}, "sig": good["sig"]}
    assert not verify_attestation(tampered, *args)
    # Signed by carol but claiming the lobby as issuer.
    cert = dict(good["cert"])
    forged = {"cert": cert, "sig": carol.sign(b"hd1-attest\n" + canonical_json(cert))}
    assert not verify_attestation(forged, *args)


def test_attestation_naming_another_issuer_is_refused_even_if_signed_by_the_lobby(
    lobby: Identity, alice: Identity, carol: Identity
) -> None:
    cert = {"node_id": alice.node_id, "public_key": alice.public_key,
            "issuer": carol.node_id, "exp": NOW + 10}
    att = {"cert": cert, "sig": lobby.sign(b"hd1-attest\n" + canonical_json(cert))}
    assert not verify_attestation(att, lobby.public_key, alice.node_id, alice.public_key, NOW)


@pytest.mark.parametrize(
    "attest",
    [{}, {"cert": None, "sig": "x"}, {"cert": {"node_id": 1}, "sig": "x"}, {"sig": "x"},
     {"cert": {"node_id": "a", "public_key": "b", "issuer": "c", "exp": 1.5}, "sig": "x"},
     {"cert": [], "sig": []}],
    ids=repr,
)
def test_verify_attestation_is_false_for_malformed_input(
    lobby: Identity, alice: Identity, attest: dict[str, Any]
) -> None:
    assert verify_attestation(attest, lobby.public_key, alice.node_id, alice.public_key, NOW) \
        is False


def test_attestation_with_non_integer_exp_is_refused(
    lobby: Identity, alice: Identity
) -> None:
    cert = {"node_id": alice.node_id, "public_key": alice.public_key,
            "issuer": lobby.node_id, "exp": str(NOW + 10)}
    att = {"cert": cert, "sig": lobby.sign(b"hd1-attest\n" + canonical_json(cert))}
    assert not verify_attestation(att, lobby.public_key, alice.node_id, alice.public_key, NOW)


# --- open-lan ---------------------------------------------------------------------------


PRIVATE = ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "172.31.255.254",
           "192.168.1.20", "169.254.10.10", "::1", "[::1]", "fe80::1", "fe80::1%eth0",
           "fd12:3456::1", "::ffff:192.168.1.5"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2001:4860:4860::8888", "::ffff:8.8.8.8",
          "example.com", "", None, "192.168.1.5:8766", "not an address"]


@pytest.mark.parametrize("addr", PRIVATE)
@pytest.mark.parametrize("link", ["direct", "lan"])
def test_open_lan_trusts_private_addresses_on_direct_and_lan_links_for_the_session(
    presented: Presented, addr: str, link: str
) -> None:
    d = decide(with_(presented, link=link, remote_addr=addr), OPEN_LAN)
    assert d.level == "trusted" and not d.store_trusted


@pytest.mark.parametrize("addr", PUBLIC)
def test_open_lan_does_not_trust_public_or_unknown_addresses(
    presented: Presented, addr: str | None
) -> None:
    d = decide(with_(presented, remote_addr=addr), OPEN_LAN)
    assert d.reason == "pairing_required"


@pytest.mark.parametrize("link", ["relay", "webrtc"])
def test_open_lan_does_not_trust_relayed_or_webrtc_links(presented: Presented, link: str) -> None:
    d = decide(with_(presented, link=link, remote_addr="192.168.1.20"), OPEN_LAN)
    assert d.reason == "pairing_required"


def test_private_address_is_not_enough_in_manual_mode(presented: Presented) -> None:
    assert decide(with_(presented, remote_addr="127.0.0.1")).reason == "pairing_required"


# --- guests -----------------------------------------------------------------------------


def test_pending_guest_admission_or_room_ticket_gives_guest(presented: Presented) -> None:
    for kw in ({"guest_pending": True}, {"room_ticket_ok": True}):
        d = decide(presented, **kw)
        assert d.level == "guest" and not d.store_trusted


def test_open_lan_trust_comes_before_guest(presented: Presented) -> None:
    d = decide(with_(presented, remote_addr="10.0.0.9"), OPEN_LAN, guest_pending=True)
    assert d.level == "trusted"


# --- the dialer's view ------------------------------------------------------------------


def view(alice: Identity, policy: Policy = MANUAL, **kw: Any) -> Any:
    args: dict[str, Any] = {"record": None}
    args.update(kw)
    return dialer_view(policy, alice.node_id, alice.public_key, **args)


def test_dialer_view_ladder(alice: Identity, bob: Identity) -> None:
    assert view(alice).reason == "pairing_required"
    assert view(alice, room_host=True).level == "guest"
    pinned = view(alice, invite_pinned=True, room_host=True)
    assert pinned.level == "trusted" and pinned.store_trusted
    lan = view(alice, OPEN_LAN, remote_addr="192.168.0.3")
    assert lan.level == "trusted" and not lan.store_trusted
    assert view(alice, OPEN_LAN, link="relay", remote_addr="192.168.0.3").reason == \
        "pairing_required"
    known = PeerRecord(alice.node_id, alice.public_key, trusted=True)
    assert view(alice, record=known).level == "trusted"


def test_dialer_view_refuses_a_pinned_record_with_another_key_or_blocked(
    alice: Identity, bob: Identity
) -> None:
    other = PeerRecord(alice.node_id, bob.public_key, trusted=True)
    assert view(alice, record=other, invite_pinned=True).reason == "key_mismatch"
    blocked = PeerRecord(alice.node_id, alice.public_key, trusted=True, blocked=True)
    assert view(alice, record=blocked, room_host=True).reason == "blocked"


def test_guest_is_never_escalated_to_stored_trust(alice: Identity, presented: Presented) -> None:
    for d in (decide(presented, guest_pending=True), view(alice, room_host=True),
              decide(with_(presented, remote_addr="::1"), OPEN_LAN)):
        assert not d.store_trusted


# --- tokens -----------------------------------------------------------------------------


def test_new_token_carries_at_least_128_bits_as_base64url(rng_factory: Any) -> None:
    rng = rng_factory("tok")
    tok = new_token(rng)
    raw = base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))
    assert raw == rng.outputs[-1] and len(raw) >= 16
    assert "=" not in tok and "+" not in tok and "/" not in tok
    with pytest.raises(ValueError):
        new_token(rng, 15)


def test_tokens_are_stored_hashed_and_compared_against_the_hash() -> None:
    h = hash_token(TOKEN)
    assert TOKEN not in h and len(h) == 64
    assert token_matches(TOKEN, h)
    assert not token_matches(TOKEN + "x", h)
    assert not token_matches(TOKEN, h.upper())


# --- invite strings (SPEC 4.2) ----------------------------------------------------------


@pytest.fixture
def invite_fields(alice: Identity) -> dict[str, Any]:
    return {
        "addrs": [make_candidate("host", "ws://192.168.1.5:8766/peer-ws"),
                  make_candidate("relay", "wss://relay.example/relay-ws")],
        "exp": NOW + 24 * 3600 * 1000,
        "node_id": alice.node_id,
        "public_key": alice.public_key,
        "token": TOKEN,
    }


def raw_invite(body: Any) -> str:
    raw = json.dumps(body, separators=(",", ":")).encode()
    return "hd1:" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_invite_round_trips(invite_fields: dict[str, Any]) -> None:
    text = encode_invite(**invite_fields)
    assert text.startswith("hd1:") and "=" not in text
    assert decode_invite(text) == invite_fields
    assert decode_invite("  " + text + "\n") == invite_fields
    body = base64.urlsafe_b64decode(text[4:] + "=" * (-len(text[4:]) % 4))
    assert body == canonical_json(invite_fields)


def test_invite_expiry_is_checked_against_now(invite_fields: dict[str, Any]) -> None:
    inv = decode_invite(encode_invite(**invite_fields))
    assert not invite_expired(inv, inv["exp"] - 1)
    assert invite_expired(inv, inv["exp"])


def mutate(fields: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    for k, v in change.items():
        if v is KeyError:
            out.pop(k)
        else:
            out[k] = v
    return out


BAD_BODIES = [
    {"token": "short"}, {"token": "t" * 257}, {"token": 5}, {"exp": -1}, {"exp": True},
    {"exp": "1"}, {"node_id": "nope"}, {"node_id": "aaaaaaaaaaaaaaaa"},
    {"public_key": "not a key"}, {"addrs": "ws://x"}, {"addrs": [{"type": "host"}]},
    {"addrs": [{"type": "turn", "url": "ws://x/peer-ws", "priority": 1}]},
    {"addrs": [{"type": "host", "url": "http://x/peer-ws", "priority": 1}]},
    {"addrs": [{"type": "host", "url": "ws://x/peer-ws", "priority": -1}]},
    {"addrs": [{"type": "host", "url": "ws://x/peer-ws", "priority": 2**32}]},
    {"addrs": [{"type": "host", "url": "ws://x/" + "p" * 600, "priority": 1}]},
    {"addrs": [{"type": "host", "url": "ws://x/peer-ws", "priority": 1}] * 17},
    {"extra": 1}, {"token": KeyError}, {"addrs": KeyError},
]


@pytest.mark.parametrize("change", BAD_BODIES, ids=lambda c: repr(c)[:40])
def test_decode_invite_refuses_a_bad_body(
    invite_fields: dict[str, Any], change: dict[str, Any]
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_invite(raw_invite(mutate(invite_fields, change)))
    assert info.value.code == "bad_invite"


@pytest.mark.parametrize("change", BAD_BODIES[:8], ids=lambda c: repr(c)[:40])
def test_encode_invite_refuses_bad_fields(
    invite_fields: dict[str, Any], change: dict[str, Any]
) -> None:
    with pytest.raises(ProtocolError):
        encode_invite(**mutate(invite_fields, change))


def test_decode_invite_accepts_a_raw_body_equal_to_the_encoder_output(
    invite_fields: dict[str, Any],
) -> None:
    # The control for the test above: the hand-built encoding itself is fine.
    assert decode_invite(raw_invite(invite_fields)) == invite_fields


@pytest.mark.parametrize(
    "text",
    ["", "hd1:", "hd2:eyJ9", "HD1:eyJ9", "eyJ9", "hd1:eyJ9==", "hd1:ab+/", "hd1:!!!!",
     "hd1:" + base64.urlsafe_b64encode(b"[1,2]").rstrip(b"=").decode(),
     "hd1:" + base64.urlsafe_b64encode(b'{"exp":1.5}').rstrip(b"=").decode(),
     "hd1:" + base64.urlsafe_b64encode(b"\xff\xfe").rstrip(b"=").decode(),
     "hd1:" + "A" * 9000, "hd1:a"],
    ids=lambda t: t[:16],
)
def test_decode_invite_refuses_malformed_strings(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_invite(text)
    assert info.value.code == "bad_invite"


def test_decode_invite_refuses_padding_and_the_standard_base64_alphabet(
    invite_fields: dict[str, Any],
) -> None:
    """SPEC 1.2: invites are base64url without padding; other spellings of the same
    body are refused rather than silently accepted."""
    padded = urlsafe = None
    for n in range(16, 64):  # "~" (0x7e) brings out the 6-bit groups 62 and 63
        text = encode_invite(**{**invite_fields, "token": "~" * n})
        body = text[4:]
        if padded is None and len(body) % 4:
            padded = (text, text + "=" * (-len(body) % 4))
        if urlsafe is None and ("-" in body or "_" in body):
            urlsafe = (text, "hd1:" + body.replace("-", "+").replace("_", "/"))
    assert padded is not None and urlsafe is not None
    for good, bad in (padded, urlsafe):
        assert decode_invite(good)["node_id"] == invite_fields["node_id"]
        with pytest.raises(ProtocolError) as info:
            decode_invite(bad)
        assert info.value.code == "bad_invite"


@pytest.mark.parametrize("value", [None, 5, b"hd1:eyJ9", ["hd1:"]])
def test_decode_invite_refuses_non_strings(value: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_invite(value)
    assert info.value.code == "bad_invite"


def test_open_lan_does_not_count_documentation_or_benchmark_ranges_as_lan() -> None:
    from hd_protocol.peer.admission import is_private_address

    doc = ("192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1", "8.8.8.8", "2001:db8::1")
    for addr in doc:
        assert not is_private_address(addr), addr
    for addr in ("10.0.0.1", "172.16.5.4", "192.168.0.2", "100.64.1.1", "169.254.1.1", "fd12::1"):
        assert is_private_address(addr), addr


def test_invite_with_a_stray_character_inside_is_refused() -> None:
    import json
    from pathlib import Path

    from hd_protocol import ProtocolError, decode_invite

    case = json.loads((Path(__file__).parents[1] / "vectors" / "invite.json").read_text())
    good = case["cases"][0]["invite"]
    assert decode_invite(good)["node_id"] == case["cases"][0]["decoded"]["node_id"]
    for bad in (good[:10] + " " + good[10:], good[:10] + "!" + good[10:], good + "."):
        try:
            decode_invite(bad)
        except ProtocolError as exc:
            assert exc.code == "bad_invite"
        else:
            raise AssertionError(f"accepted {bad!r}")
