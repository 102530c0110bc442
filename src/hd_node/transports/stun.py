"""The trio shell of ``hd_protocol.stun.StunClient`` (SPEC 8.3): one Binding
transaction over one UDP socket.

The machine decides everything — what to send, when to resend, when to give up, which
answer is ours. This shell resolves the server's name, opens one socket, sends what the
machine returns, hands it the datagrams that come *from the server's address* (anything
else on the socket is dropped unread: a stranger cannot even make the machine look at
a forged answer) and sleeps until the machine's next deadline. The wait is bounded by
the machine itself (RTO 500 ms doubling, 7 sends, 16 RTOs after the last: 39.5 s by
default), and the result is a ``Mapped`` address or a ``StunFailed`` with a reason —
never an exception for anything the server (or the network) does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import trio

from hd_protocol.stun import (
    MAX_MESSAGE_BYTES,
    StunClient,
    StunResult,
)
from hd_shell.clock import mono_ms, trio_deadline

from .. import __version__

log = logging.getLogger("hd_node.stun")

Address = tuple[str, int]
SOFTWARE = f"hd-node/{__version__}"
RESOLVE_TIMEOUT_S = 5.0
# One byte over the codec's limit: a longer datagram arrives truncated to this and is
# then refused for its size, instead of being parsed as a shorter message.
RECV_BYTES = MAX_MESSAGE_BYTES + 1


@dataclass(frozen=True, slots=True)
class Mapped:
    """The server saw our datagrams come from ``host``:``port`` (server-reflexive)."""

    host: str
    port: int
    local: Address  # the socket we asked from (on loopback: port == local port)
    server: Address  # the server's address, resolved
    sends: int
    elapsed_ms: float  # from the first send to the answer


@dataclass(frozen=True, slots=True)
class StunFailed:
    """No mapped address. ``reason``: ``timeout`` (no answer after every send),
    ``error`` (the server answered with an error), ``unknown_attributes``,
    ``no_address`` (a success without an address), ``unresolvable`` (the server's name),
    ``socket`` (the local socket refused: no route, no permission)."""

    reason: str
    message: str
    sends: int


StunOutcome = Mapped | StunFailed


class DatagramSocket(Protocol):
    """What the shell needs of a socket: trio's UDP socket, or a test's fake."""

    def __enter__(self) -> Self: ...
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None, /) -> None: ...
    def bind(self, address: Any, /) -> Awaitable[None]: ...
    def getsockname(self) -> Any: ...
    def sendto(self, data: bytes, address: Any, /) -> Awaitable[int]: ...
    def recvfrom(self, bufsize: int, /) -> Awaitable[tuple[bytes, Any]]: ...


def udp_socket(family: int) -> DatagramSocket:
    sock: DatagramSocket = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
    return sock


def _same_address(a: Any, b: Any) -> bool:
    """Host and port of two socket addresses (IPv6 ones carry flow info and scope)."""
    return tuple(a[:2]) == tuple(b[:2])


async def transact(sock: DatagramSocket, server: Any, client: StunClient) -> StunResult:
    """Run ``client`` to its end over ``sock``: send now, hand it what ``server`` sends,
    resend at its deadlines. Socket errors propagate (``binding`` turns them into a
    ``socket`` failure)."""
    await sock.sendto(client.start(mono_ms()), server)
    while client.result is None:
        deadline = client.next_deadline()
        got: tuple[bytes, Any] | None = None
        with trio.move_on_at(trio_deadline(deadline)):
            got = await sock.recvfrom(RECV_BYTES)
        now = mono_ms()
        if got is not None:
            data, source = got
            if _same_address(source, server):
                client.receive(data, now)
            else:
                log.debug("stun datagram from a stranger dropped source=%s", source)
        elif deadline is not None:
            now = max(now, deadline)  # woken by the deadline: never a spin short of it
        if client.result is None and deadline is not None and now >= deadline:
            wire = client.on_timer(now)
            if wire is not None:
                await sock.sendto(wire, server)
    assert client.result is not None
    return client.result


def outcome_of(result: StunResult, *, local: Any, server: Any,
               elapsed_ms: float) -> StunOutcome:
    """The machine's result as this module's types."""
    if result.address is not None:
        return Mapped(result.address[0], result.address[1], (str(local[0]), int(local[1])),
                      (str(server[0]), int(server[1])), result.sends, elapsed_ms)
    error = result.error or "no mapped address"
    reason = ("timeout" if error == "timeout" else "error" if error.startswith("error ")
              else "unknown_attributes" if error == "unknown_attributes" else "no_address")
    return StunFailed(reason, error, result.sends)


async def binding(server: Address, *, rto_ms: int = 500, max_sends: int = 7,
                  last_wait_rtos: int = 16, software: str | None = SOFTWARE,
                  rng: Callable[[int], bytes] = os.urandom,
                  resolve_timeout_s: float = RESOLVE_TIMEOUT_S,
                  open_socket: Callable[[int], DatagramSocket] = udp_socket) -> StunOutcome:
    """Ask ``server`` (host, port) where our datagrams come from (RFC 8489 Binding).

    One fresh UDP socket on the wildcard address of the server's family: the address
    the internet sees is the NAT's whichever local address the kernel picks, and a
    socket tied to one address could not reach a server behind another interface.
    """
    host, port = server
    try:
        with trio.fail_after(resolve_timeout_s):
            infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
    except (OSError, trio.TooSlowError) as exc:
        why = str(exc) or "timed out"
        return StunFailed("unresolvable", f"cannot resolve {host}: {why}", 0)
    if not infos:
        return StunFailed("unresolvable", f"{host} has no address", 0)
    family, _, _, _, sockaddr = infos[0]
    client = StunClient(rng(12), rto_ms=rto_ms, max_sends=max_sends,
                        last_wait_rtos=last_wait_rtos, software=software)
    try:
        with open_socket(family) as sock:
            wildcard = "::" if family == trio.socket.AF_INET6 else "0.0.0.0"  # noqa: S104
            await sock.bind((wildcard, 0))
            local = sock.getsockname()
            started = trio.current_time()
            result = await transact(sock, sockaddr, client)
            elapsed_ms = (trio.current_time() - started) * 1000
    except OSError as exc:
        return StunFailed("socket", f"{exc.strerror or exc}", client.sends)
    return outcome_of(result, local=local, server=sockaddr, elapsed_ms=elapsed_ms)
