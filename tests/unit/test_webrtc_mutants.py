"""WebRTC rules (SPEC 8.4): the exact limits, error codes and attempt bounds the main
tests leave open (issue 13)."""

from __future__ import annotations

import pytest

from hd_protocol.errors import LocalProtocolError, RemoteProtocolError
from hd_protocol.reach.webrtc import (
    FLAG_LAST,
    FLAG_MORE,
    MAX_ATTEMPTS,
    MAX_ATTEMPTS_PER_PEER,
    MAX_SDP,
    Accept,
    Budget,
    Dropped,
    IceServer,
    Ignored,
    Reassembler,
    Signaling,
    address_for,
    check_signal,
    fragment,
    ice_config,
    keep_candidates,
    keeps_own_offer,
    peer_of,
)

SMALL = "aaaaaaaaaaaaaaaa"
LARGE = "zzzzzzzzzzzzzzzz"
OTHER = "mmmmmmmmmmmmmmmm"
SDP = "v=0\r\n"


def node(i: int) -> str:
    """A node id per small integer (16 of [a-z2-7], all below LARGE)."""
    alphabet = "abcdefghijklmnopqrstuvwxy"
    return "b" * 14 + alphabet[i // 25] + alphabet[i % 25]


# --- fragments ------------------------------------------------------------------------


def test_bytes_that_fit_go_as_text_and_bytes_that_do_not_as_fragments() -> None:
    assert fragment(b"abc") == ["abc"]
    assert fragment(bytearray(b"abc")) == ["abc"]  # type: ignore[arg-type]
    assert fragment(b"abcdef", limit=4) == [bytes([FLAG_MORE]) + b"abc",
                                            bytes([FLAG_LAST]) + b"def"]


# --- the reassembler's exact limits ---------------------------------------------------


def test_the_preauth_byte_budget_is_inclusive() -> None:
    r = Reassembler(1 << 20, Budget(max_message_size=100, max_fragments=4, max_bytes=10))
    assert r.receive("x" * 10) == "x" * 10 and r.bytes_in == 10
    with pytest.raises(RemoteProtocolError) as exc:
        r.receive("y")
    assert exc.value.code == "over_budget"


def test_the_preauth_fragment_budget_is_inclusive() -> None:
    r = Reassembler(1 << 20, Budget(max_message_size=100, max_fragments=3, max_bytes=1000))
    assert r.receive(b"\x01a") is None and r.receive(b"\x01b") is None
    assert r.receive(b"\x00c") == "abc"
    for _ in range(3):
        r.receive(b"\x01z")
    with pytest.raises(RemoteProtocolError) as exc:
        r.receive(b"\x01z")
    assert exc.value.code == "over_budget"


def test_a_text_message_of_exactly_the_limit_passes() -> None:
    r = Reassembler(1024)
    assert r.receive("x" * 1024) == "x" * 1024
    assert r.pending == 0


# --- signals --------------------------------------------------------------------------


def test_an_sdp_of_exactly_32_kib_is_a_signal() -> None:
    sdp = "v=0" + "x" * (MAX_SDP - 3)
    check_signal(OTHER, "s1", "offer", sdp)  # no RemoteProtocolError


def test_only_a_strictly_smaller_id_keeps_its_offer() -> None:
    assert not keeps_own_offer(OTHER, OTHER)


def test_a_duplicate_own_sid_is_a_duplicate_sid_error() -> None:
    s = Signaling(SMALL)
    s.offer(OTHER, "mine")
    with pytest.raises(LocalProtocolError) as exc:
        s.offer(OTHER, "mine")
    assert exc.value.code == "duplicate_sid"


def test_ending_an_attempt_that_is_not_there_is_nothing() -> None:
    s = Signaling(SMALL)
    s.ended(OTHER, "never")
    assert len(s) == 0


def test_an_offer_we_accept_is_not_one_of_ours() -> None:
    s = Signaling(SMALL)
    s.receive(OTHER, "their", "offer", SDP)
    assert s.offering(OTHER) == [] and s.attempts_with(OTHER) == ["their"]


def test_our_own_offers_lost_to_glare_do_not_count_against_the_peer() -> None:
    s = Signaling(LARGE)  # loses every glare
    for i in range(MAX_ATTEMPTS_PER_PEER - 1):
        assert isinstance(s.receive(SMALL, f"o{i}", "offer", SDP)[0], Accept)
    s.offer(SMALL, "mine")
    assert s.receive(SMALL, "last", "offer", SDP) == [
        Dropped(SMALL, "mine", "last"), Accept(SMALL, "last", SDP)]


def test_there_are_at_most_max_attempts_in_all() -> None:
    s = Signaling(LARGE)
    for i in range(MAX_ATTEMPTS - 1):
        assert isinstance(s.receive(node(i), "s", "offer", SDP)[0], Accept), i
    s.offer(OTHER, "mine")  # ours, dropped by the next offer from OTHER
    out = s.receive(OTHER, "x", "offer", SDP)
    assert out == [Dropped(OTHER, "mine", "x"), Accept(OTHER, "x", SDP)]
    assert len(s) == MAX_ATTEMPTS
    assert s.receive(SMALL, "y", "offer", SDP) == [Ignored(SMALL, "y", "too_many")]
    s.ended(OTHER, "x")
    assert isinstance(s.receive(SMALL, "y", "offer", SDP)[0], Accept)


# --- addresses --------------------------------------------------------------------------


def test_a_webrtc_address_needs_its_exact_prefix() -> None:
    for bad in ("WEBRTC:" + OTHER, "webrtx:" + OTHER, "xxxxxxx" + OTHER):
        with pytest.raises(LocalProtocolError) as exc:
            peer_of(bad)
        assert exc.value.code == "bad_address"
    assert peer_of(address_for(SMALL)) == SMALL


# --- ICE settings ----------------------------------------------------------------------


def test_turn_needs_both_a_username_and_a_credential() -> None:
    with pytest.raises(ValueError, match="turnUsername"):
        ice_config(turn_urls=["turn:h:1"], username="u")
    with pytest.raises(ValueError, match="turnUsername"):
        ice_config(turn_urls=["turn:h:1"], credential="p")
    assert ice_config(turn_urls=["turn:h:1"], username="u", credential="p").servers == (
        IceServer(("turn:h:1",), "u", "p"),)


def test_a_candidate_line_ending_in_its_type_is_kept() -> None:
    sdp = "v=0\r\na=candidate:3 1 udp 16777215 5.6.7.8 6000 typ relay\r\n"
    assert keep_candidates(sdp, frozenset({"relay"})) == sdp
    assert keep_candidates(sdp, frozenset({"host"})) == "v=0\r\n"
