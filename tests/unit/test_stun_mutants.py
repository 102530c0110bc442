"""STUN (SPEC 8.3): the codec's and the client's edges the main tests leave open —
exact bounds, every class and method bit, reserved bits, and each way a transaction
ends (issue 13)."""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Any

import pytest

from hd_protocol.stun import (
    BINDING,
    ERROR,
    ERROR_CODE,
    FINGERPRINT,
    MAGIC_COOKIE,
    MESSAGE_INTEGRITY,
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
    parse_server,
)

TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
KEY = b"VOkJxbRl1RmTxUk/WvJxBt"


def _attrs(*attrs: tuple[int, bytes]) -> bytes:
    return b"".join(struct.pack("!HH", t, len(v)) + v + b"\0" * (-len(v) % 4)
                    for t, v in attrs)


def _msg(*attrs: tuple[int, bytes], cls: int = SUCCESS, method: int = BINDING,
         txid: bytes = TXID, length: int | None = None) -> bytes:
    body = _attrs(*attrs)
    n = len(body) if length is None else length
    return struct.pack("!HHI", message_type(method, cls), n, MAGIC_COOKIE) + txid + body


def _with_fingerprint(msg: bytes) -> bytes:
    """``msg`` with a correct FINGERPRINT appended (RFC 5389 §15.5)."""
    head = msg[:2] + struct.pack("!H", len(msg) - 20 + 8) + msg[4:]
    crc = (zlib.crc32(head) ^ 0x5354554E) & 0xFFFFFFFF
    return head + struct.pack("!HHI", FINGERPRINT, 4, crc)


# --- the header ------------------------------------------------------------------------


METHODS = [0x001, 0x002, 0x004, 0x00F, 0x070, 0xF80, 0x0F0, 0xF0F, 0xABC, 0xFFF]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cls", [REQUEST, 0b01, SUCCESS, ERROR])
def test_every_method_and_class_bit_survives_a_round_trip(method: int, cls: int) -> None:
    m = decode_message(_msg(cls=cls, method=method))
    assert (m.method, m.cls) == (method, cls)


def test_message_types_place_each_method_bit_as_rfc_5389_figure_3_does() -> None:
    assert message_type(0xF80, REQUEST) == 0x3E00
    assert message_type(0x070, REQUEST) == 0x00E0
    assert message_type(0x00F, REQUEST) == 0x000F
    assert message_type(0xFFF, ERROR) == 0x3FFF


def test_a_header_alone_is_a_whole_message_and_its_length_must_match() -> None:
    m = decode_message(_msg())
    assert m.attributes == () and m.address is None
    with pytest.raises(StunError):  # the header says no attributes, but there is one
        decode_message(_msg((SOFTWARE, b"abcd"), length=0))


def test_a_message_of_exactly_max_bytes_is_read() -> None:
    msg = _msg((SOFTWARE, b"x" * 40))
    assert decode_message(msg, max_bytes=len(msg)).software == "x" * 40
    with pytest.raises(StunError):
        decode_message(msg, max_bytes=len(msg) - 1)


def test_lengths_over_32_kib_are_read_unsigned_when_the_caller_allows_them() -> None:
    msg = _with_fingerprint(_msg((0xC001, b"o" * 40_000)))
    m = decode_message(msg, max_bytes=50_000)
    assert m.fingerprint_ok is True and len(m.attributes[0][1]) == 40_000


def test_an_empty_last_attribute_is_fine_and_comprehension_optional_starts_at_0x8000(
        ) -> None:
    m = decode_message(_msg((SOFTWARE, b"sw"), (0x8000, b"")))
    assert m.attributes == ((SOFTWARE, b"sw"), (0x8000, b""))
    assert m.unknown_required == ()
    assert decode_message(_msg((0x7FFF, b""))).unknown_required == (0x7FFF,)


def test_an_attribute_whose_value_runs_past_the_end_is_refused() -> None:
    good = _msg((SOFTWARE, b"abcd"))
    bad = good[:22] + b"\x00\x08" + good[24:]  # says 8 bytes of value, has 4
    with pytest.raises(StunError):
        decode_message(bad)


# --- ERROR-CODE -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "code"), [
    (b"\0\0\x04\x00", (400, "")),  # no reason phrase at all
    (b"\0\0\x03\x00" + b"Try Alternate", (300, "Try Alternate")),
    (b"\0\0\x06\x63" + b"x", (699, "x")),
])
def test_error_codes_300_to_699_with_any_reason_are_read(value: bytes,
                                                         code: tuple[int, str]) -> None:
    assert decode_message(_msg((ERROR_CODE, value), cls=ERROR)).error_code == code


@pytest.mark.parametrize("value", [
    b"\x01\0\x04\x00",  # reserved bits in the first byte
    b"\0\x01\x04\x00",  # ... in the second
    b"\0\0\x0c\x00",  # ... in the class byte's upper bits
    b"\0\0\x02\x00",  # class 2
    b"\0\0\x04\x64",  # number 100
])
def test_error_codes_with_reserved_bits_or_out_of_range_are_refused(value: bytes) -> None:
    with pytest.raises(StunError):
        decode_message(_msg((ERROR_CODE, value), cls=ERROR))


# --- the encoder ----------------------------------------------------------------------


def test_the_encoder_takes_only_a_12_byte_transaction_id() -> None:
    for bad in (b"x" * 11, b"x" * 13, bytearray(12)):
        with pytest.raises(StunError):
            encode_binding_request(bad)  # type: ignore[arg-type]


def test_software_is_under_128_characters() -> None:
    req = encode_binding_request(TXID, software="s" * 127, username="u")
    m = decode_message(req)
    assert m.software == "s" * 127 and (0x0006, b"u") in m.attributes
    with pytest.raises(StunError):
        encode_binding_request(TXID, software="s" * 128)


def test_username_is_at_most_512_bytes() -> None:
    m = decode_message(encode_binding_request(TXID, username="u" * 512))
    assert (0x0006, b"u" * 512) in m.attributes
    with pytest.raises(StunError):
        encode_binding_request(TXID, username="u" * 513)


def test_a_stun_error_is_a_bad_stun_protocol_error_with_its_message() -> None:
    with pytest.raises(StunError) as exc:
        decode_message(b"short")
    assert exc.value.code == "bad_stun"
    assert "STUN header" in str(exc.value)


def test_the_long_term_key_is_md5_not_for_security(monkeypatch: pytest.MonkeyPatch) -> None:
    # A FIPS-mode Python refuses MD5 unless it is declared not for security.
    real = hashlib.md5

    def fips_md5(data: bytes = b"", **kw: Any) -> Any:
        if kw.get("usedforsecurity") is not False:
            raise ValueError("[digital envelope routines] unsupported")
        return real(data, **kw)

    monkeypatch.setattr(hashlib, "md5", fips_md5)
    assert long_term_key("u", "r", "p") == real(b"u:r:p").digest()


# --- the client -----------------------------------------------------------------------


def test_the_client_checks_every_setting_is_at_least_one() -> None:
    for kw in ({"rto_ms": 0}, {"max_sends": 0}, {"last_wait_rtos": 0}):
        with pytest.raises(ValueError):
            StunClient(TXID, **kw)  # type: ignore[arg-type]
    c = StunClient(TXID, rto_ms=1, max_sends=1, last_wait_rtos=1)
    c.start(0)
    assert c.next_deadline() == 1
    assert c.on_timer(1) is None and c.result is not None and c.result.error == "timeout"


def test_before_start_there_is_no_deadline_and_no_timer() -> None:
    c = StunClient(TXID)
    assert c.next_deadline() is None
    assert c.on_timer(10**9) is None and c.sends == 0 and c.result is None
    c.start(0)
    with pytest.raises(ValueError):
        c.start(1)


def test_after_an_answer_the_timer_sends_nothing_more() -> None:
    c = StunClient(TXID)
    c.start(0)
    res = c.receive(_msg((XOR_MAPPED_ADDRESS, encode_xor_address("1.2.3.4", 5, TXID))), 1)
    assert res is not None and res.address == ("1.2.3.4", 5) and res.sends == 1
    assert c.on_timer(10**9) is None and c.sends == 1


def test_with_a_key_the_request_carries_message_integrity() -> None:
    m = decode_message(StunClient(TXID, key=KEY).start(0), key=KEY)
    assert m.integrity_ok is True and m.fingerprint_ok is True
    assert [t for t, _ in m.attributes] == [MESSAGE_INTEGRITY, FINGERPRINT]


def test_a_success_without_an_address_ends_the_transaction_without_one() -> None:
    c = StunClient(TXID)
    c.start(0)
    c.on_timer(500)  # a second send
    res = c.receive(_msg((SOFTWARE, b"srv")), 600)
    assert res is not None and (res.address, res.error, res.sends) == (
        None, "no mapped address", 2)
    assert c.result == res


def test_an_error_response_without_error_code_and_the_send_count_of_each_failure() -> None:
    c = StunClient(TXID)
    c.start(0)
    res = c.receive(_msg(cls=ERROR), 5)
    assert res is not None and (res.error, res.sends) == ("error 0: ", 1)
    c = StunClient(TXID)
    c.start(0)
    res = c.receive(_msg((ERROR_CODE, b"\0\0\x04\x00" + b"Bad Request"), cls=ERROR), 5)
    assert res is not None and res.sends == 1
    c = StunClient(TXID)
    c.start(0)
    res = c.receive(_msg((0x7ABC, b"x")), 5)
    assert res is not None and (res.error, res.sends) == ("unknown_attributes", 1)


def test_each_ignored_datagram_is_counted() -> None:
    c = StunClient(TXID)
    c.start(0)
    assert c.receive(b"junk", 1) is None and c.receive(b"more junk", 2) is None
    assert c.ignored == 2


# --- parse_server --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("[2001:db8::1]:3478", ("2001:db8::1", 3478)),
    ("[::1]", ("::1", 3478)),
    ("[::1]:19302", ("::1", 19302)),
    ("X.example:1", ("X.example", 1)),
    ("h:65535", ("h", 65535)),
])
def test_servers_parse_to_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", [
    "h st", "h\tst:1", "host/x:1", "[::1", "a[b", "a]b", "h:65536", "h:0",
])
def test_bad_servers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_server(text)


def test_an_ipv6_address_without_brackets_is_told_to_use_them() -> None:
    form = r"must be host:port \(an IPv6 address in brackets: \[2001:db8::1\]:3478\)"
    with pytest.raises(ValueError, match=form):
        parse_server("2001:db8::1")
    with pytest.raises(ValueError, match=form):
        parse_server("h st")


@pytest.mark.parametrize("value", [
    b"\x00\x01\x00\x50" + bytes(16),  # IPv4 family, IPv6 length
    b"\x00\x02\x00\x50" + bytes(4),  # IPv6 family, IPv4 length
    b"\x00\x01\x00\x50" + bytes(3),  # too short for either
])
@pytest.mark.parametrize("attr", [XOR_MAPPED_ADDRESS, 0x0001])
def test_an_address_whose_length_does_not_fit_its_family_is_refused(value: bytes,
                                                                    attr: int) -> None:
    with pytest.raises(StunError):
        decode_message(_msg((attr, value)))
