"""STUN (SPEC 8.3, RFC 5389/8489): the RFC 5769 sample messages, the codec's strictness
and the client's retransmission schedule, all without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hd_protocol.stun import (
    BINDING,
    ERROR,
    ERROR_CODE,
    FINGERPRINT,
    MAGIC_COOKIE,
    MAPPED_ADDRESS,
    REQUEST,
    SOFTWARE,
    SUCCESS,
    XOR_MAPPED_ADDRESS,
    StunClient,
    StunError,
    decode_message,
    encode_binding_request,
    encode_xor_address,
    long_term_key,
    message_type,
)

# RFC 5769 §2.1-2.4, byte for byte.
TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "80220010" "5354554e207465737420636c69656e74"
    "00240004" "6e0001ff"
    "80290008" "932ff9b151263b36"
    "00060009" "6576746a3a68367659202020"
    "00080014" "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004" "e57a3bcf")
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b" "7465737420766563746f7220"
    "00200008" "0001a147e112a643"
    "00080014" "2b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004" "c07d4c96")
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b" "7465737420766563746f7220"
    "00200014" "0002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014" "a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004" "c8fb0b4c")
SAMPLE_LONG_TERM = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e"
    "00060012" "e3839ee38388e383aae38383e382afe382b90000"
    "0015001c" "662f2f3439396b393534643"
    "64f4c33346f4c39465354767936347341"
    "0014000b" "6578616d706c652e6f726700"
    "00080014" "f67024656dd64a3e02b8e0712e85c9a28ca89666")


def test_the_rfc_5769_request_parses_with_its_fingerprint_and_integrity() -> None:
    m = decode_message(SAMPLE_REQUEST, key=PASSWORD)
    assert (m.method, m.cls, m.txid) == (BINDING, REQUEST, TXID)
    assert m.software == "STUN test client"
    assert m.fingerprint_ok is True and m.integrity_ok is True
    assert [t for t, _ in m.attributes] == [SOFTWARE, 0x0024, 0x8029, 0x0006, 0x0008,
                                            FINGERPRINT]
    assert m.unknown_required == (0x0024,)  # PRIORITY: ICE's, not ours
    assert decode_message(SAMPLE_REQUEST, key=b"wrong").integrity_ok is False
    assert decode_message(SAMPLE_REQUEST).integrity_ok is None  # no key: not checked


@pytest.mark.parametrize(("sample", "address"), [
    (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
    (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
])
def test_the_rfc_5769_responses_give_their_mapped_address(sample: bytes,
                                                         address: tuple[str, int]) -> None:
    m = decode_message(sample, key=PASSWORD)
    assert (m.method, m.cls, m.txid) == (BINDING, SUCCESS, TXID)
    assert m.xor_mapped_address == address and m.address == address
    assert m.mapped_address is None
    assert m.software == "test vector"
    assert m.fingerprint_ok is True and m.integrity_ok is True
    assert m.unknown_required == ()


def test_the_rfc_5769_long_term_request_checks_with_the_derived_key() -> None:
    key = long_term_key("マトリックス", "example.org", "TheMatrIX")  # SASLprep'd already
    m = decode_message(SAMPLE_LONG_TERM, key=key)
    assert m.integrity_ok is True and m.fingerprint_ok is None
    assert decode_message(SAMPLE_LONG_TERM, key=long_term_key(
        "マトリックス", "example.org", "TheMatrix")).integrity_ok is False


@pytest.mark.parametrize("sample", [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE,
                                    SAMPLE_IPV6_RESPONSE])
def test_a_flipped_bit_fails_the_fingerprint(sample: bytes) -> None:
    for byte in range(HEADER_END := 20, len(sample) - 8):
        bad = bytearray(sample)
        bad[byte] ^= 0x01
        try:
            m = decode_message(bytes(bad), key=PASSWORD)
        except StunError:
            continue  # some flips break the structure itself
        assert m.fingerprint_ok is False, byte
        assert m.integrity_ok is False or byte >= len(sample) - 32, byte
    assert HEADER_END == 20


def test_the_encoder_reproduces_the_rfc_5769_request_fields() -> None:
    req = encode_binding_request(TXID, software="STUN test client", username="evtj:h6vY",
                                 key=PASSWORD)
    m = decode_message(req, key=PASSWORD)
    assert (m.method, m.cls, m.txid, m.software) == (BINDING, REQUEST, TXID,
                                                     "STUN test client")
    assert m.fingerprint_ok is True and m.integrity_ok is True
    # Without PRIORITY and ICE-CONTROLLED the sample's own MI cannot be reproduced, but
    # our MI and FINGERPRINT are computed exactly as the RFC's are (checked above).
    plain = encode_binding_request(TXID, fingerprint=False)
    assert plain == struct.pack("!HHI", 0x0001, 0, MAGIC_COOKIE) + TXID


def test_message_types_interleave_the_class_bits() -> None:
    assert message_type(BINDING, REQUEST) == 0x0001
    assert message_type(BINDING, SUCCESS) == 0x0101
    assert message_type(BINDING, ERROR) == 0x0111
    assert message_type(0x003, 0b01) == 0x0013  # an Allocate indication shape (TURN)


# --- strictness -------------------------------------------------------------------------------


def _response(*attrs: tuple[int, bytes], txid: bytes = TXID, cls: int = SUCCESS) -> bytes:
    body = b"".join(struct.pack("!HH", t, len(v)) + v + b"\0" * (-len(v) % 4)
                    for t, v in attrs)
    return struct.pack("!HHI", message_type(BINDING, cls), len(body), MAGIC_COOKIE) + txid + body


@pytest.mark.parametrize(("data", "why"), [
    (b"", "short"), (b"\x00" * 19, "short"),
    (b"\xc0" + SAMPLE_IPV4_RESPONSE[1:], "first two bits"),
    (SAMPLE_IPV4_RESPONSE[:4] + b"\x21\x12\xa4\x43" + SAMPLE_IPV4_RESPONSE[8:], "cookie"),
    (SAMPLE_IPV4_RESPONSE[:-1], "length"), (SAMPLE_IPV4_RESPONSE + b"\0\0\0\0", "length"),
    (SAMPLE_IPV4_RESPONSE[:2] + b"\x00\x3d" + SAMPLE_IPV4_RESPONSE[4:], "length"),
    (_response((XOR_MAPPED_ADDRESS, b"\x00\x01\xa1\x47\xe1\x12\xa6")), "address"),
    (_response((XOR_MAPPED_ADDRESS, b"\x00\x03\xa1\x47\xe1\x12\xa6\x43")), "family"),
    (_response((MAPPED_ADDRESS, b"\x01\x01\x00\x50\x7f\x00\x00\x01")), "reserved"),
    (_response((FINGERPRINT, b"\0\0\0")), "fingerprint size"),
    (_response((FINGERPRINT, b"\0\0\0\0"), (SOFTWARE, b"x")), "fingerprint last"),
    (_response((0x0008, b"\0" * 19)), "integrity size"),
    (_response((SOFTWARE, b"\xff\xfe")), "utf-8"),
    (_response((ERROR_CODE, b"\0\0\x07\x00"), cls=ERROR), "error class"),
    (_response((ERROR_CODE, b"\0\0\x04\x64"), cls=ERROR), "error number"),
    (_response((ERROR_CODE, b"\0\0\x04"), cls=ERROR), "error size"),
    (_response()[:2] + b"\x00\x08" + _response()[4:] + b"\x00\x20\x00\x08", "runs past"),
    (b"\0" * 5000, "too large"),
])
def test_malformed_messages_are_stun_errors(data: bytes, why: str) -> None:
    with pytest.raises(StunError):
        decode_message(data)


def test_mapped_address_is_the_fallback_and_unknown_required_attributes_are_listed() -> None:
    m = decode_message(_response((MAPPED_ADDRESS, b"\x00\x01\x00\x50\x7f\x00\x00\x01"),
                                 (0x7FFF, b"??")))
    assert m.xor_mapped_address is None and m.address == ("127.0.0.1", 80)
    assert m.unknown_required == (0x7FFF,)
    m = decode_message(_response((0xC001, b"optional")))  # comprehension-optional
    assert m.unknown_required == ()


def test_attributes_after_message_integrity_are_ignored_except_fingerprint() -> None:
    mi = (0x0008, b"\0" * 20)
    m = decode_message(_response(mi, (XOR_MAPPED_ADDRESS, encode_xor_address(
        "10.0.0.1", 9, TXID))))
    assert m.address is None and [t for t, _ in m.attributes] == [0x0008]


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_stun_error(data: bytes) -> None:
    try:
        decode_message(data, key=b"k")
    except StunError:
        pass


@given(st.ip_addresses(), st.integers(0, 65535), st.binary(min_size=12, max_size=12))
def test_xor_addresses_round_trip(ip: object, port: int, txid: bytes) -> None:
    m = decode_message(_response((XOR_MAPPED_ADDRESS, encode_xor_address(str(ip), port,
                                                                         txid)), txid=txid))
    assert m.xor_mapped_address == (str(ip), port)


# --- the client ------------------------------------------------------------------------------


def _answer(client: StunClient, addr: tuple[str, int] = ("203.0.113.7", 40000),
            **kw: object) -> bytes:
    return _response((XOR_MAPPED_ADDRESS, encode_xor_address(*addr, client.txid)), **kw)


def test_the_client_resends_from_500_ms_doubling_seven_times_then_gives_up() -> None:
    c = StunClient(TXID)
    sent = [0] if c.start(0) else []
    t = 0
    while c.result is None:
        dl = c.next_deadline()
        assert dl is not None and dl > t
        assert c.on_timer(dl - 1) is None  # nothing early
        t = dl
        if c.on_timer(t) is not None:
            sent.append(t)
    # RFC 5389 §7.2.1: 0, 500, 1500, 3500, 7500, 15500, 31500; give up at 39500.
    assert sent == [0, 500, 1500, 3500, 7500, 15500, 31500]
    assert t == 39500 and c.result.error == "timeout" and c.result.sends == 7
    assert c.next_deadline() is None and c.on_timer(10**9) is None


def test_the_schedule_is_configurable() -> None:
    c = StunClient(TXID, rto_ms=100, max_sends=3, last_wait_rtos=2)
    c.start(0)
    times = []
    while c.result is None:
        dl = c.next_deadline()
        assert dl is not None
        if c.on_timer(dl) is not None:
            times.append(dl)
    assert times == [100, 300] and c.result.sends == 3
    with pytest.raises(ValueError):
        StunClient(TXID, max_sends=0)


def test_the_client_takes_its_own_answer_and_ignores_everything_else() -> None:
    c = StunClient(TXID, software="hd")
    req = decode_message(c.start(0))
    assert (req.cls, req.software, req.fingerprint_ok) == (REQUEST, "hd", True)
    other = bytes(12)
    corrupted = bytearray(SAMPLE_IPV4_RESPONSE)  # our txid, a bad FINGERPRINT
    corrupted[45] ^= 0x10
    for junk in (b"junk", _answer(c, txid=other), SAMPLE_REQUEST, bytes(corrupted)):
        assert c.receive(junk, 10) is None
    assert c.ignored == 4 and c.result is None
    res = c.receive(_answer(c), 20)
    assert res is not None and res.address == ("203.0.113.7", 40000) and res.error is None
    assert c.receive(_answer(c, ("1.2.3.4", 5)), 30) is None  # one result only
    assert c.result == res and c.next_deadline() is None


def test_a_server_error_ends_the_transaction_with_its_code() -> None:
    c = StunClient(TXID)
    c.start(0)
    res = c.receive(_response((ERROR_CODE, b"\0\0\x04\x14" + b"Unknown Attribute"),
                              cls=ERROR), 5)
    assert res is not None and res.error == "error 420: Unknown Attribute"


def test_with_a_key_only_an_authentic_answer_counts() -> None:
    c = StunClient(TXID, key=PASSWORD)
    c.start(0)
    assert c.receive(_answer(c), 5) is None  # no MESSAGE-INTEGRITY
    assert c.receive(SAMPLE_IPV4_RESPONSE, 6) is not None  # the RFC's, signed with the key
    assert c.result is not None and c.result.address == ("192.0.2.1", 32853)


def test_unknown_required_attributes_fail_the_transaction() -> None:
    c = StunClient(TXID)
    c.start(0)
    res = c.receive(_response((XOR_MAPPED_ADDRESS, encode_xor_address("1.1.1.1", 1, TXID)),
                              (0x7ABC, b"x")), 5)
    assert res is not None and res.error == "unknown_attributes"
