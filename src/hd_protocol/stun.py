"""STUN Binding (RFC 5389 / RFC 8489), sans IO: the codec and a client (SPEC 8.3).

``encode_binding_request`` builds a Binding request (optionally with SOFTWARE,
USERNAME, MESSAGE-INTEGRITY and FINGERPRINT); ``decode_message`` reads any STUN
message strictly — anything malformed is a ``StunError``, never another exception —
and reports the mapped address (XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS), whether the
FINGERPRINT matched and, given a key, whether MESSAGE-INTEGRITY did.

``StunClient`` runs one Binding transaction on ``now``: it sends at once, resends after
an RTO of 500 ms doubling each time (at most 7 sends), waits 16 RTOs after the last,
and ends with the mapped address, the server's error, or ``timeout``. The shell moves
the datagrams and calls ``on_timer`` at ``next_deadline()``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import zlib
from dataclasses import dataclass
from typing import Final

from .errors import ProtocolError

MAGIC_COOKIE: Final = 0x2112A442
HEADER_BYTES: Final = 20
DEFAULT_PORT: Final = 3478  # RFC 8489 §9: STUN over UDP
MAX_MESSAGE_BYTES: Final = 4096  # a Binding exchange is a few hundred bytes
BINDING: Final = 0x001
REQUEST, INDICATION, SUCCESS, ERROR = 0b00, 0b01, 0b10, 0b11

MAPPED_ADDRESS: Final = 0x0001
USERNAME: Final = 0x0006
MESSAGE_INTEGRITY: Final = 0x0008
ERROR_CODE: Final = 0x0009
UNKNOWN_ATTRIBUTES: Final = 0x000A
XOR_MAPPED_ADDRESS: Final = 0x0020
SOFTWARE: Final = 0x8022
FINGERPRINT: Final = 0x8028
FINGERPRINT_XOR: Final = 0x5354554E
_FAMILY_V4, _FAMILY_V6 = 0x01, 0x02

Address = tuple[str, int]
_HEADER = struct.Struct("!HHI")  # type, length, magic cookie
_ATTR = struct.Struct("!HH")  # type, length
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class StunError(ProtocolError):
    """A malformed STUN message (or a bad argument to the encoder)."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_stun", message)


@dataclass(frozen=True, slots=True)
class StunMessage:
    method: int
    cls: int  # REQUEST, INDICATION, SUCCESS or ERROR
    txid: bytes
    attributes: tuple[tuple[int, bytes], ...]  # in order, values without padding
    xor_mapped_address: Address | None
    mapped_address: Address | None
    software: str | None
    error_code: tuple[int, str] | None  # (code, reason) of an error response
    unknown_required: tuple[int, ...]  # comprehension-required types we do not know
    fingerprint_ok: bool | None  # None: no FINGERPRINT
    integrity_ok: bool | None  # None: no MESSAGE-INTEGRITY, or no key given

    @property
    def address(self) -> Address | None:
        """The mapped address: XOR-MAPPED-ADDRESS, else the RFC 3489 MAPPED-ADDRESS."""
        return self.xor_mapped_address or self.mapped_address


def message_type(method: int, cls: int) -> int:
    """RFC 5389 §6: the class bits C1 C0 sit at bits 8 and 4 among the method bits."""
    return ((method & 0xF80) << 2) | ((method & 0x070) << 1) | (method & 0x00F) | (
        (cls & 0b10) << 7) | ((cls & 0b01) << 4)


def _split_type(t: int) -> tuple[int, int]:
    method = ((t >> 2) & 0xF80) | ((t >> 1) & 0x070) | (t & 0x00F)
    return method, ((t >> 7) & 0b10) | ((t >> 4) & 0b01)


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """RFC 5389 §15.4 long-term credential key (the password already SASLprep'd)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode(),  # noqa: S324 - the RFC's
                       usedforsecurity=False).digest()


# --- encoding -------------------------------------------------------------------------------


def _attr(t: int, value: bytes) -> bytes:
    return _ATTR.pack(t, len(value)) + value + b"\x00" * (-len(value) % 4)


def encode_binding_request(txid: bytes, *, software: str | None = None,
                           fingerprint: bool = True, username: str | None = None,
                           key: bytes | None = None) -> bytes:
    """A Binding request. ``key`` adds MESSAGE-INTEGRITY (short-term: the password's
    bytes; long-term: ``long_term_key``), ``fingerprint`` a FINGERPRINT, last."""
    if type(txid) is not bytes or len(txid) != 12:
        raise StunError("a transaction id is 12 bytes")
    body = b""
    if software is not None:
        if len(software) >= 128:  # 127 characters are at most 508 bytes (RFC: 763)
            raise StunError("SOFTWARE is under 128 characters")
        body = _attr(SOFTWARE, software.encode())
    if username is not None:
        raw = username.encode()
        if len(raw) > 512:
            raise StunError("USERNAME is at most 512 bytes")
        body += _attr(USERNAME, raw)
    msg_type = message_type(BINDING, REQUEST)
    if key is not None:
        head = _HEADER.pack(msg_type, len(body) + 24, MAGIC_COOKIE) + txid
        body += _attr(MESSAGE_INTEGRITY, hmac.new(key, head + body, hashlib.sha1).digest())
    if fingerprint:
        head = _HEADER.pack(msg_type, len(body) + 8, MAGIC_COOKIE) + txid
        crc = (zlib.crc32(head + body) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
        body += _attr(FINGERPRINT, _U32.pack(crc))
    return _HEADER.pack(msg_type, len(body), MAGIC_COOKIE) + txid + body


def encode_xor_address(host: str, port: int, txid: bytes) -> bytes:
    """An XOR-MAPPED-ADDRESS value (a server's side; used by tests and fakes)."""
    ip = ipaddress.ip_address(host)
    x_port = port ^ (MAGIC_COOKIE >> 16)
    family = _FAMILY_V4 if ip.version == 4 else _FAMILY_V6
    return bytes((0, family)) + _U16.pack(x_port) + _xor(ip.packed, txid)


def _xor(data: bytes, txid: bytes) -> bytes:
    """``data`` XOR the magic cookie and the transaction id (RFC 5389 §15.2)."""
    mask = (_U32.pack(MAGIC_COOKIE) + txid)[:len(data)]
    return (int.from_bytes(data) ^ int.from_bytes(mask)).to_bytes(len(data))


# --- decoding -------------------------------------------------------------------------------


def decode_message(data: bytes, *, key: bytes | None = None,
                   max_bytes: int = MAX_MESSAGE_BYTES) -> StunMessage:
    """Strictly decode one STUN message (RFC 5389 §6, §15)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise StunError("a STUN message is bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise StunError(f"a STUN message of at most {max_bytes} bytes")
    if len(data) < HEADER_BYTES:
        raise StunError("shorter than a STUN header")
    msg_type, length, cookie = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise StunError("the first two bits of a STUN message are zero")
    if cookie != MAGIC_COOKIE:
        raise StunError("no magic cookie")
    if length % 4 or length != len(data) - HEADER_BYTES:
        raise StunError("the length does not match the message")
    txid = data[8:20]
    method, cls = _split_type(msg_type)
    attrs: list[tuple[int, bytes]] = []
    fingerprint_ok: bool | None = None
    integrity_ok: bool | None = None
    integrity: bytes | None = None  # the MESSAGE-INTEGRITY value, once seen
    pos = HEADER_BYTES
    while pos < len(data):  # pos and len(data) are multiples of 4: a header fits
        if fingerprint_ok is not None:
            raise StunError("FINGERPRINT is the last attribute")
        t, n = _ATTR.unpack_from(data, pos)
        end = pos + 4 + n
        if end > len(data):  # then its padding fits too: len(data) is a multiple of 4
            raise StunError("an attribute runs past the end")
        value = data[pos + 4:end]
        if t == FINGERPRINT:
            if n != 4:
                raise StunError("FINGERPRINT is 4 bytes")
            crc = (zlib.crc32(_with_length(data[:pos], end - HEADER_BYTES))
                   ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            fingerprint_ok = _U32.unpack(value)[0] == crc
        elif integrity is not None:
            pass  # RFC 5389 §15.4: only FINGERPRINT may follow MESSAGE-INTEGRITY
        elif t == MESSAGE_INTEGRITY:
            if n != 20:
                raise StunError("MESSAGE-INTEGRITY is 20 bytes")
            integrity = value
            if key is not None:
                mac = hmac.new(key, _with_length(data[:pos], end - HEADER_BYTES),
                               hashlib.sha1).digest()
                integrity_ok = hmac.compare_digest(mac, value)
        if integrity is None or t in (MESSAGE_INTEGRITY, FINGERPRINT):
            attrs.append((t, value))
        pos = end + (-n % 4)
    return _message(method, cls, txid, tuple(attrs), fingerprint_ok, integrity_ok)


def _with_length(head_and_body: bytes, length: int) -> bytes:
    """The message so far with its header length set as MI and FINGERPRINT need."""
    return head_and_body[:2] + _U16.pack(length) + head_and_body[4:]


def _message(method: int, cls: int, txid: bytes, attrs: tuple[tuple[int, bytes], ...],
             fingerprint_ok: bool | None, integrity_ok: bool | None) -> StunMessage:
    xor_mapped = mapped = None
    software: str | None = None
    error: tuple[int, str] | None = None
    unknown: list[int] = []
    for t, v in attrs:
        if t == XOR_MAPPED_ADDRESS and xor_mapped is None:
            xor_mapped = _address(v, txid)
        elif t == MAPPED_ADDRESS and mapped is None:
            mapped = _address(v, None)
        elif t == SOFTWARE and software is None:
            software = _text(v, "SOFTWARE")
        elif t == ERROR_CODE and error is None:
            if len(v) < 4 or v[0] or v[1] or not 3 <= v[2] <= 6 or v[3] > 99:
                raise StunError("a malformed ERROR-CODE")
            error = (v[2] * 100 + v[3], _text(v[4:], "ERROR-CODE reason"))
        elif t < 0x8000 and t not in (USERNAME, MESSAGE_INTEGRITY, UNKNOWN_ATTRIBUTES,
                                      XOR_MAPPED_ADDRESS, MAPPED_ADDRESS, ERROR_CODE):
            unknown.append(t)
    return StunMessage(method, cls, txid, attrs, xor_mapped, mapped, software, error,
                       tuple(unknown), fingerprint_ok, integrity_ok)


def _text(v: bytes, what: str) -> str:
    try:
        return v.decode()
    except UnicodeDecodeError:
        raise StunError(f"{what} is not UTF-8") from None


def _address(v: bytes, txid: bytes | None) -> Address:
    """A (XOR-)MAPPED-ADDRESS value; ``txid`` given: XOR-MAPPED-ADDRESS."""
    if len(v) not in (8, 20) or v[0] != 0:
        raise StunError("a malformed address attribute")
    family, port = v[1], _U16.unpack_from(v, 2)[0]
    size = {_FAMILY_V4: 4, _FAMILY_V6: 16}.get(family)
    if size is None or len(v) != 4 + size:
        raise StunError("an address is IPv4 (8 bytes) or IPv6 (20 bytes)")
    raw = v[4:]
    if txid is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = _xor(raw, txid)
    ip = ipaddress.IPv4Address(raw) if size == 4 else ipaddress.IPv6Address(raw)
    return str(ip), port


# --- the client ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StunResult:
    """How a transaction ended: ``address`` (host, port), or ``error``."""

    address: Address | None
    error: str | None  # "timeout", "error 4xx: reason", "unknown_attributes", ...
    sends: int


class StunClient:
    """One Binding transaction (RFC 5389 §7.2.1 retransmissions, configurable)."""

    def __init__(self, txid: bytes, *, rto_ms: int = 500, max_sends: int = 7,
                 last_wait_rtos: int = 16, software: str | None = None,
                 key: bytes | None = None) -> None:
        if rto_ms <= 0 or max_sends <= 0 or last_wait_rtos <= 0:
            raise ValueError("rto_ms, max_sends and last_wait_rtos are positive")
        self.request = encode_binding_request(txid, software=software, key=key)
        self.txid = txid
        self.key = key
        self.max_sends = max_sends
        self.last_wait_ms = last_wait_rtos * rto_ms
        self.sends = 0
        self.ignored = 0  # datagrams that were not this transaction's answer
        self.result: StunResult | None = None
        self._deadline: int | None = None
        self._wait = rto_ms

    def start(self, now: int) -> bytes:
        """The first request (send it now)."""
        if self.sends:
            raise ValueError("already started")
        return self._send(now)

    def _send(self, now: int) -> bytes:
        self.sends += 1
        last = self.sends >= self.max_sends
        self._deadline = now + (self.last_wait_ms if last else self._wait)
        self._wait *= 2
        return self.request

    def next_deadline(self) -> int | None:
        return None if self.result is not None else self._deadline

    def on_timer(self, now: int) -> bytes | None:
        """A retransmission to send, or None (the transaction may have just failed)."""
        if self.result is not None or self._deadline is None or now < self._deadline:
            return None
        if self.sends >= self.max_sends:
            self.result = StunResult(None, "timeout", self.sends)
            return None
        return self._send(now)

    def receive(self, data: bytes, now: int) -> StunResult | None:
        """A datagram from the server: the result if it answers this transaction."""
        del now  # nothing here depends on time once an answer is in
        if self.result is not None:
            return None
        try:
            msg = decode_message(data, key=self.key)
        except StunError:
            self.ignored += 1
            return None
        if (msg.txid != self.txid or msg.method != BINDING or msg.cls not in (SUCCESS, ERROR)
                or msg.fingerprint_ok is False
                or (self.key is not None and msg.integrity_ok is not True)):
            self.ignored += 1  # not ours, not a response, corrupted or forged
            return None
        if msg.unknown_required:
            self.result = StunResult(None, "unknown_attributes", self.sends)
        elif msg.cls == ERROR:
            code, reason = msg.error_code or (0, "")
            self.result = StunResult(None, f"error {code}: {reason}", self.sends)
        elif msg.address is None:
            self.result = StunResult(None, "no mapped address", self.sends)
        else:
            self.result = StunResult(msg.address, None, self.sends)
        return self.result


def parse_server(text: str) -> tuple[str, int]:
    """``host:port`` as (host, port): an IPv6 literal goes in brackets
    (``[2001:db8::1]:3478``); the port may be left out (3478, RFC 8489 §9) and a
    ``stun:`` prefix is allowed (the STUN URI form WebRTC settings use). A ValueError
    says in one line what is wrong."""
    form = "host:port (an IPv6 address in brackets: [2001:db8::1]:3478)"
    if text.startswith("stuns:"):
        raise ValueError("STUN over TLS (stuns:) is not supported: give host:port (UDP)")
    rest = text.removeprefix("stun:")
    if not rest or any(ch.isspace() or ch in "/@?#" for ch in rest):
        raise ValueError(f"must be {form}")
    port_text = str(DEFAULT_PORT)
    if rest.startswith("["):
        host, sep, after = rest[1:].partition("]")
        if not sep or (after and not after.startswith(":")):
            raise ValueError(f"must be {form}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
        if after:
            port_text = after[1:]
    else:
        host, sep, after = rest.partition(":")
        if sep:
            port_text = after
        if not host or "[" in host or "]" in host:
            raise ValueError(f"must be {form}")
        if ":" in after:
            raise ValueError(f"must be {form}")
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not 1..65535")
    return host, int(port_text)
