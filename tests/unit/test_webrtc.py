"""The pure WebRTC rules (SPEC 8.4): fragments, signals, glare, ICE settings."""

from __future__ import annotations

import pytest

from hd_protocol import DialCandidate
from hd_protocol.errors import LocalProtocolError, RemoteProtocolError
from hd_protocol.reach.webrtc import (
    FLAG_LAST,
    FLAG_MORE,
    MAX_ATTEMPTS_PER_PEER,
    MAX_MESSAGE,
    Accept,
    Answered,
    Budget,
    Closed,
    Dropped,
    IceConfig,
    IceServer,
    Ignored,
    Reassembler,
    SendBye,
    Signaling,
    address_for,
    check_signal,
    fragment,
    host_candidates,
    ice_config,
    keep_candidates,
    keeps_own_offer,
    new_sid,
    peer_of,
)

SMALL = "aaaaaaaaaaaaaaaa"  # node ids: 16 of [a-z2-7]; SMALL < LARGE
LARGE = "zzzzzzzzzzzzzzzz"
OTHER = "mmmmmmmmmmmmmmmm"
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"
PREAUTH = Budget(max_message_size=32 * 1024, max_fragments=4, max_bytes=64 * 1024)


def reassemble(parts: list[str | bytes], r: Reassembler | None = None) -> list[str]:
    r = r or Reassembler(1 << 20)
    return [m for p in parts if (m := r.receive(p)) is not None]


# --- fragments ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 59_999, MAX_MESSAGE])
def test_a_message_that_fits_goes_as_one_text_message(size: int) -> None:
    assert fragment("x" * size) == ["x" * size]


def test_a_message_one_byte_over_goes_as_two_binary_fragments_with_flags() -> None:
    parts = fragment("x" * (MAX_MESSAGE + 1))
    assert [type(p) for p in parts] == [bytes, bytes]
    first, last = parts
    assert isinstance(first, bytes) and isinstance(last, bytes)
    assert first[0] == FLAG_MORE and len(first) == MAX_MESSAGE
    assert last[0] == FLAG_LAST and last[1:] == b"xx"


def test_a_300_kb_envelope_splits_into_parts_of_at_most_60000_bytes_and_comes_back() -> None:
    text = "é" * 150_000  # 300 000 UTF-8 bytes: slices cut through characters
    parts = fragment(text)
    assert len(parts) == 6 and all(len(p) <= MAX_MESSAGE for p in parts)
    assert [p[0] for p in parts if isinstance(p, bytes)] == [FLAG_MORE] * 5 + [FLAG_LAST]
    assert reassemble(parts) == [text]


def test_text_and_fragmented_envelopes_interleave_in_order() -> None:
    big = "b" * 200_000
    parts = [*fragment("one"), *fragment(big), *fragment("two")]
    assert reassemble(parts) == ["one", big, "two"]


@pytest.mark.parametrize(("messages", "code"), [
    ([b""], "bad_fragment"),  # no flag byte
    ([b"\x01"], "bad_fragment"),  # a flag and no data
    ([b"\x02abc"], "bad_fragment"),  # an unknown flag
    ([b"\x01abc", "text"], "bad_fragment"),  # text inside a fragmented envelope
    ([b"\x00\xff\xfe"], "bad_fragment"),  # not UTF-8
    (["x" * 1025], "too_large"),
    ([b"\x01" + b"x" * 600, b"\x01" + b"x" * 600], "too_large"),  # before the last one
])
def test_the_reassembler_refuses(messages: list[str | bytes], code: str) -> None:
    r = Reassembler(1024)
    with pytest.raises(RemoteProtocolError) as exc:
        for m in messages:
            r.receive(m)
    assert exc.value.code == code


def test_before_the_handshake_the_direct_links_budget_holds_and_lift_ends_it() -> None:
    r = Reassembler(1 << 20, PREAUTH)
    with pytest.raises(RemoteProtocolError, match="too_large"):
        r.receive("x" * (32 * 1024 + 1))
    r = Reassembler(1 << 20, PREAUTH)
    with pytest.raises(RemoteProtocolError, match="over_budget"):
        for _ in range(5):
            r.receive(b"\x01x")
    r = Reassembler(1 << 20, PREAUTH)
    with pytest.raises(RemoteProtocolError, match="over_budget"):
        for _ in range(3):
            r.receive("x" * 30_000)
    r = Reassembler(1 << 20, PREAUTH)
    r.receive("hello")
    r.lift()
    big = "y" * 500_000
    assert reassemble([*fragment(big)] * 3, r) == [big] * 3


def test_a_fragmented_envelope_at_the_size_limit_passes_and_one_byte_more_does_not() -> None:
    assert reassemble(fragment("z" * 100_000), Reassembler(100_000)) == ["z" * 100_000]
    with pytest.raises(RemoteProtocolError, match="too_large"):
        reassemble(fragment("z" * 100_001), Reassembler(100_000))


# --- signals ----------------------------------------------------------------------------

@pytest.mark.parametrize(("peer", "sid", "kind", "sdp"), [
    ("NOT-A-NODE", "s1", "offer", SDP),
    (OTHER, "", "offer", SDP),
    (OTHER, "x" * 65, "offer", SDP),
    (OTHER, "s p", "offer", SDP),
    (OTHER, "s1", "hello", SDP),
    (OTHER, "s1", "offer", ""),
    (OTHER, "s1", "answer", "not an sdp"),
    (OTHER, "s1", "offer", "v=0" + "x" * 32 * 1024),
    (OTHER, "s1", "bye", SDP),
])
def test_malformed_signals_are_refused(peer: str, sid: str, kind: str, sdp: str) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        check_signal(peer, sid, kind, sdp)
    assert exc.value.code == "bad_signal"
    with pytest.raises(RemoteProtocolError):
        Signaling(SMALL).receive(peer, sid, kind, sdp)


def test_an_offer_from_a_peer_we_are_not_calling_is_answered() -> None:
    s = Signaling(SMALL)
    assert s.receive(OTHER, "their", "offer", SDP) == [Accept(OTHER, "their", SDP)]
    assert s.receive(OTHER, "their", "offer", SDP) == [Ignored(OTHER, "their", "duplicate")]


def test_the_answer_to_our_offer_is_taken_once_and_a_stray_answer_gets_a_bye() -> None:
    s = Signaling(SMALL)
    s.offer(OTHER, "mine")
    assert s.receive(OTHER, "mine", "answer", SDP) == [Answered(OTHER, "mine", SDP)]
    assert s.receive(OTHER, "mine", "answer", SDP) == [SendBye(OTHER, "mine")]
    assert s.receive(OTHER, "nope", "answer", SDP) == [SendBye(OTHER, "nope")]
    # An answer to an offer of ours only counts from the node we sent it to.
    s.offer(OTHER, "again")
    assert s.receive(LARGE, "again", "answer", SDP) == [SendBye(LARGE, "again")]


def test_a_bye_closes_the_attempt_it_names_and_nothing_else() -> None:
    s = Signaling(SMALL)
    s.offer(LARGE, "mine")
    s.receive(OTHER, "their", "offer", SDP)
    assert s.receive(OTHER, "their", "bye", "") == [Closed(OTHER, "their")]
    assert s.receive(OTHER, "their", "bye", "") == [Ignored(OTHER, "their", "unknown")]
    assert s.receive(OTHER, "mine", "bye", "") == [Ignored(OTHER, "mine", "unknown")]
    assert s.offering(LARGE) == ["mine"]


def test_glare_the_smaller_node_id_keeps_its_offer() -> None:
    small, large = Signaling(SMALL), Signaling(LARGE)
    small.offer(LARGE, "s-offer")
    large.offer(SMALL, "l-offer")
    # Both offers cross in the lobby.
    assert small.receive(LARGE, "l-offer", "offer", SDP) == [
        Ignored(LARGE, "l-offer", "glare")]
    assert large.receive(SMALL, "s-offer", "offer", SDP) == [
        Dropped(SMALL, "l-offer", "s-offer"), Accept(SMALL, "s-offer", SDP)]
    assert small.offering(LARGE) == ["s-offer"] and large.offering(SMALL) == []
    # The large node's bye for its dropped offer is nothing to the small one.
    assert small.receive(LARGE, "l-offer", "bye", "") == [Ignored(LARGE, "l-offer", "unknown")]
    assert small.receive(LARGE, "s-offer", "answer", SDP) == [Answered(LARGE, "s-offer", SDP)]
    assert keeps_own_offer(SMALL, LARGE) and not keeps_own_offer(LARGE, SMALL)


def test_an_offer_after_ours_was_answered_is_no_glare() -> None:
    s = Signaling(LARGE)
    s.offer(SMALL, "mine")
    s.receive(SMALL, "mine", "answer", SDP)
    assert s.receive(SMALL, "their", "offer", SDP) == [Accept(SMALL, "their", SDP)]
    assert s.attempts_with(SMALL) == ["mine", "their"] and s.attempts_with(OTHER) == []
    s.ended(SMALL, "mine")
    assert s.attempts_with(SMALL) == ["their"]


def test_a_peer_gets_a_bounded_number_of_attempts_and_ended_frees_them() -> None:
    s = Signaling(SMALL)
    for i in range(MAX_ATTEMPTS_PER_PEER):
        assert isinstance(s.receive(OTHER, f"o{i}", "offer", SDP)[0], Accept)
    assert s.receive(OTHER, "more", "offer", SDP) == [Ignored(OTHER, "more", "too_many")]
    s.ended(OTHER, "o0")
    assert isinstance(s.receive(OTHER, "more", "offer", SDP)[0], Accept)
    assert isinstance(s.receive(LARGE, "l", "offer", SDP)[0], Accept)  # another peer


def test_our_own_sids_are_fresh_and_unique() -> None:
    s = Signaling(SMALL)
    s.offer(OTHER, "mine")
    with pytest.raises(LocalProtocolError):
        s.offer(OTHER, "mine")
    counter = iter(range(1000))
    sid = new_sid(lambda n: next(counter).to_bytes(n, "big"))
    assert len(sid) == 32 and check_signal(OTHER, sid, "bye", "") is None


# --- addresses and candidates -------------------------------------------------------------

def test_a_webrtc_address_names_the_node_to_signal() -> None:
    assert peer_of(address_for(OTHER)) == OTHER
    for bad in ("webrtc:", "webrtc:NOPE", "ws://x/peer-ws", OTHER):
        with pytest.raises(LocalProtocolError):
            peer_of(bad)


def test_a_room_host_gets_a_webrtc_candidate_only_when_its_entry_says_webrtc() -> None:
    entry = {"node_id": OTHER, "capabilities": ["collab", "webrtc"]}
    assert host_candidates(OTHER, entry) == [DialCandidate("webrtc", "webrtc:" + OTHER)]
    assert host_candidates(OTHER, {"capabilities": ["collab"]}) == []
    assert host_candidates(OTHER, {"capabilities": "webrtc"}) == []
    assert host_candidates(OTHER, None) == []


# --- ICE settings ----------------------------------------------------------------------------

def test_no_settings_mean_no_ice_server_at_all() -> None:
    assert ice_config() == IceConfig((), "all")


def test_ice_servers_come_from_the_settings() -> None:
    cfg = ice_config("127.0.0.1:3478", ["turn:127.0.0.1:3478", "turn:h:5349?transport=tcp"],
                     "u", "p", "relay")
    assert cfg == IceConfig((IceServer(("stun:127.0.0.1:3478",)),
                             IceServer(("turn:127.0.0.1:3478", "turn:h:5349?transport=tcp"),
                                       "u", "p")), "relay")
    assert ice_config("stun:example.org:3478").servers == (IceServer(("stun:example.org:3478",)),)
    # the port may be left out, as for the node's own STUN client (RFC 8489 §9)
    assert ice_config("example.org").servers == (IceServer(("stun:example.org:3478",)),)


@pytest.mark.parametrize(("args", "message"), [
    ({"policy": "some"}, "icePolicy"),
    ({"policy": "relay"}, "needs a TURN server"),
    ({"turn_urls": ["turn:h:1"]}, "turnUsername"),
    ({"turn_urls": ["http://h:1"], "username": "u", "credential": "p"}, "turnUrls"),
    ({"stun_server": "http://h"}, "stunServer"),
    ({"stun_server": "stuns:h:5349"}, "stunServer: STUN over TLS"),
    ({"stun_server": "h:0"}, "stunServer: port"),
    ({"stun_server": "[2001:db8::1]:3478"}, "not an IPv6 literal"),
])
def test_bad_ice_settings_say_what_is_wrong(args: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ice_config(**args)  # type: ignore[arg-type]


def test_relay_only_descriptions_keep_only_relay_candidates() -> None:
    sdp = ("v=0\r\na=mid:0\r\n"
           "a=candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host\r\n"
           "a=candidate:2 1 udp 1694498815 1.2.3.4 5000 typ srflx raddr 0.0.0.0 rport 9\r\n"
           "a=candidate:3 1 udp 16777215 5.6.7.8 6000 typ relay raddr 0.0.0.0 rport 9\r\n"
           "a=end-of-candidates\r\n")
    kept = keep_candidates(sdp, frozenset({"relay"}))
    assert "typ host" not in kept and "typ srflx" not in kept
    assert "typ relay" in kept and kept.startswith("v=0\r\na=mid:0\r\n")
    assert kept.endswith("a=end-of-candidates\r\n")
