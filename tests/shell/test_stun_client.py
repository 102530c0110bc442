"""The trio shell of the STUN client (hd_node.transports.stun) over a fake socket, on trio's
virtual clock: the machine's resend schedule is kept, only the server's address reaches
the machine, and nothing a server sends (or a socket does) becomes an exception.
The same shell against a real coturn: tests/integration/test_stun_coturn.py."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from hd_node.transports.stun import (
    RECV_BYTES,
    Mapped,
    StunFailed,
    binding,
)
from hd_protocol.stun import (
    BINDING,
    ERROR,
    ERROR_CODE,
    MAGIC_COOKIE,
    SUCCESS,
    XOR_MAPPED_ADDRESS,
    decode_message,
    encode_xor_address,
    message_type,
    parse_server,
)

SERVER = ("192.0.2.10", 3478)
STRANGER = ("192.0.2.66", 3478)
PUBLIC = ("203.0.113.7", 40001)
LOCAL = ("0.0.0.0", 50000)


def _attr(t: int, value: bytes) -> bytes:
    return struct.pack("!HH", t, len(value)) + value + b"\x00" * (-len(value) % 4)


def answer(request: bytes, mapped: tuple[str, int] = PUBLIC, *, cls: int = SUCCESS,
           body: bytes | None = None) -> bytes:
    """The server's response to ``request`` (same transaction id)."""
    txid = request[8:20]
    if body is None:
        body = _attr(XOR_MAPPED_ADDRESS, encode_xor_address(*mapped, txid))
    return struct.pack("!HHI", message_type(BINDING, cls), len(body), MAGIC_COOKIE) + txid + body


Reply = list[tuple[float, bytes, tuple[str, int]]]  # (after s, datagram, from)


class FakeSocket:
    """A UDP socket whose peer is ``script(n, request) -> replies``, run on each send."""

    def __init__(self, script: Callable[[int, bytes], Reply] = lambda n, req: [],
                 fail_send: int | None = None) -> None:
        self.script = script
        self.fail_send = fail_send
        self.sent: list[tuple[float, bytes, Any]] = []
        self.bound: Any = None
        self.closed = False
        self.waits = 0
        self._in, self._out = trio.open_memory_channel[tuple[bytes, Any]](100)
        self.nursery: trio.Nursery | None = None

    def __enter__(self) -> FakeSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True

    async def bind(self, address: Any) -> None:
        self.bound = address

    def getsockname(self) -> Any:
        return LOCAL

    async def sendto(self, data: bytes, address: Any) -> int:
        await trio.lowlevel.checkpoint()
        self.sent.append((trio.current_time(), data, address))
        if self.fail_send is not None and len(self.sent) >= self.fail_send:
            raise OSError(101, "Network is unreachable")
        assert self.nursery is not None
        for delay, datagram, source in self.script(len(self.sent), data):
            self.nursery.start_soon(self._deliver, delay, datagram, source)
        return len(data)

    async def _deliver(self, delay: float, datagram: bytes, source: Any) -> None:
        await trio.sleep(delay)
        await self._in.send((datagram, source))

    async def recvfrom(self, bufsize: int) -> tuple[bytes, Any]:
        self.waits += 1
        assert self.waits < 10_000, "the shell spins instead of sleeping"
        data, source = await self._out.receive()
        return data[:bufsize], source  # UDP: a longer datagram arrives truncated


async def _binding(sock: FakeSocket, **kw: Any) -> Mapped | StunFailed:
    async with trio.open_nursery() as n:
        sock.nursery = n
        out = await binding(SERVER, open_socket=lambda family: sock, **kw)
        n.cancel_scope.cancel()
    return out


# --- the server's address -------------------------------------------------------------


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:3478", ("127.0.0.1", 3478)),
    ("stun.example.org:19302", ("stun.example.org", 19302)),
    ("[2001:db8::1]:3478", ("2001:db8::1", 3478)),
    ("[::1]:1", ("::1", 1)),
    ("stun.example.org", ("stun.example.org", 3478)),  # RFC 8489: the default port
    ("[2001:db8::1]", ("2001:db8::1", 3478)),
    ("stun:10.0.0.1:3479", ("10.0.0.1", 3479)),  # the STUN URI form of WebRTC settings
    ("stun:[::1]:3479", ("::1", 3479)),
])
def test_a_stun_server_is_host_and_port(text: str, address: tuple[str, int]) -> None:
    assert parse_server(text) == address


@pytest.mark.parametrize(("text", "says"), [
    ("", "host:port"), (":3478", "host:port"), ("stun:", "host:port"),
    ("2001:db8::1:3478", "in brackets"), ("[2001:db8::1]3478", "host:port"),
    ("[not-v6]:3478", "not an IPv6 address"), ("host:0", "1..65535"), ("host:", "1..65535"),
    ("host:65536", "1..65535"), ("host:34x", "1..65535"), ("stun:stun:host:3478", "host:port"),
    ("host :3478", "host:port"), ("stun://host:3478", "host:port"), ("u@host:3478", "host:port"),
    ("stuns:host:5349", "not supported"), ("[::1]:3478]", "1..65535"),
])
def test_a_malformed_stun_server_is_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=r"^[^\n]+$") as err:
        parse_server(text)
    assert says in str(err.value)


# --- one transaction ------------------------------------------------------------------


async def test_the_mapped_address_comes_back_from_one_round_trip(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sock = FakeSocket(lambda n, req: [(0.02, answer(req), SERVER)])
    out = await _binding(sock)
    assert isinstance(out, Mapped), out
    assert (out.host, out.port, out.sends) == (*PUBLIC, 1)
    assert out.local == LOCAL and out.server == SERVER
    assert out.elapsed_ms == pytest.approx(20, abs=1)
    assert sock.bound == ("0.0.0.0", 0) and sock.closed
    request = decode_message(sock.sent[0][1])
    assert request.method == BINDING and request.software and request.fingerprint_ok


async def test_unanswered_requests_are_resent_on_the_rto_schedule_then_it_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sock = FakeSocket()
    t0 = trio.current_time()
    out = await _binding(sock)
    assert out == StunFailed("timeout", "timeout", 7)
    # SPEC 8.3: RTO 500 ms doubling, 7 sends, 16 RTOs after the last.
    assert [round(t - t0, 3) for t, _, _ in sock.sent] == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert trio.current_time() - t0 == pytest.approx(39.5, abs=0.01)
    assert len({req for _, req, _ in sock.sent}) == 1  # the same transaction each time
    assert {addr for _, _, addr in sock.sent} == {SERVER}


async def test_the_schedule_is_configurable(autojump_clock: trio.testing.MockClock) -> None:
    sock = FakeSocket()
    t0 = trio.current_time()
    out = await _binding(sock, rto_ms=20, max_sends=3, last_wait_rtos=2)
    assert isinstance(out, StunFailed) and (out.reason, out.sends) == ("timeout", 3)
    assert [round(t - t0, 3) for t, _, _ in sock.sent] == [0, 0.02, 0.06]
    assert trio.current_time() - t0 == pytest.approx(0.1, abs=0.005)


async def test_a_lost_answer_is_made_up_by_the_resend(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sock = FakeSocket(lambda n, req: [] if n == 1 else [(0.01, answer(req), SERVER)])
    out = await _binding(sock)
    assert isinstance(out, Mapped) and out.sends == 2
    assert out.elapsed_ms == pytest.approx(510, abs=1)


async def test_an_answer_from_another_address_never_reaches_the_machine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stranger who guessed the transaction id still cannot choose our address."""
    def script(n: int, req: bytes) -> Reply:
        return [(0.001, answer(req, ("198.51.100.1", 1)), STRANGER),
                (0.001, answer(req, ("198.51.100.2", 2)), (SERVER[0], 9999)),
                (0.05, answer(req), SERVER)]

    out = await _binding(FakeSocket(script))
    assert isinstance(out, Mapped) and (out.host, out.port) == PUBLIC


def _junk(req: bytes) -> list[bytes]:
    other = bytearray(req)
    other[8] ^= 0xFF  # another transaction
    return [b"", b"\x00", b"\xff" * 19, b"junk" * 50, req, answer(bytes(other)),
            answer(req)[:-4], answer(req) + b"\x00" * 4,
            answer(req, body=_attr(XOR_MAPPED_ADDRESS, b"\x00\x09\x00\x00")),  # bad family
            answer(req) + b"\x00" * (RECV_BYTES + 100),  # over the size limit
            bytes(range(256)) * 20]


async def test_garbage_from_the_server_is_ignored_and_the_real_answer_still_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(n: int, req: bytes) -> Reply:
        return [(0.001 * i, j, SERVER) for i, j in enumerate(_junk(req), 1)] + [
            (0.1, answer(req), SERVER)]

    out = await _binding(FakeSocket(script))
    assert isinstance(out, Mapped) and (out.host, out.port, out.sends) == (*PUBLIC, 1)


async def test_only_garbage_ends_as_a_timeout_not_an_exception(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(n: int, req: bytes) -> Reply:
        return [(0.001 * i, j, SERVER) for i, j in enumerate(_junk(req), 1)]

    out = await _binding(FakeSocket(script), rto_ms=50, max_sends=3)
    assert isinstance(out, StunFailed) and (out.reason, out.sends) == ("timeout", 3)


@pytest.mark.parametrize(("body", "reason", "message"), [
    (_attr(ERROR_CODE, b"\x00\x00\x04\x01Unauthorized"), "error", "error 401: Unauthorized"),
    (b"", "no_address", "no mapped address"),
    (_attr(0x7FFF, b"\x00" * 4), "unknown_attributes", "unknown_attributes"),
])
async def test_an_answer_without_an_address_is_a_typed_failure(
    autojump_clock: trio.testing.MockClock, body: bytes, reason: str, message: str,
) -> None:
    cls = ERROR if reason == "error" else SUCCESS
    out = await _binding(FakeSocket(lambda n, req: [(0.01, answer(req, cls=cls, body=body),
                                                     SERVER)]))
    assert out == StunFailed(reason, message, 1)


async def test_a_socket_that_cannot_send_is_a_socket_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    out = await _binding(FakeSocket(fail_send=2))
    assert isinstance(out, StunFailed) and out.reason == "socket" and out.sends == 2
    assert "unreachable" in out.message


async def test_a_name_that_does_not_resolve_is_an_unresolvable_failure(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_name(*args: Any, **kw: Any) -> Any:
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(trio.socket, "getaddrinfo", no_name)
    out = await binding(("stun.invalid", 3478))
    assert isinstance(out, StunFailed) and (out.reason, out.sends) == ("unresolvable", 0)
    assert "stun.invalid" in out.message


@pytest.mark.parametrize(("start", "rto_ms"), [(0, 1001), (1234.5678, 7), (0.0007, 3)])
async def test_the_schedule_holds_whatever_the_clock_reads(
    autojump_clock: trio.testing.MockClock, start: float, rto_ms: int,
) -> None:
    """Deadlines are whole ms and the clock is a float (1.001 s reads as 1000 ms):
    waking at a deadline must count as reaching it, else the shell spins short of it."""
    autojump_clock.jump(start)
    sock = FakeSocket()
    out = await _binding(sock, rto_ms=rto_ms, max_sends=3, last_wait_rtos=1)
    assert isinstance(out, StunFailed) and out.sends == 3 and sock.waits < 10
