"""Our own candidates (SPEC 8.1) for invites, presence and the lobby.

Host candidates: ``--advertise`` if given; else, when the peer listener is bound to one
address, that address with the real port; when bound to 0.0.0.0 / ::, the machine's
interface addresses (via ifaddr), loopback and link-local left out unless enabled.

The server-reflexive candidate: with ``iceEnabled`` and a ``stunServer`` (and a peer
listener: not with ``enableDirect = false``), ``Reflexive`` learns the public IP the
STUN server sees, and ``ws://<that IP>:<peer port>/peer-ws`` joins the candidates.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import ifaddr
import trio

from hd_protocol import make_candidate, sort_candidates
from hd_protocol.stun import parse_server
from hd_shell.errors import url_host

from ..config import Settings
from ..metrics import NodeMetrics
from .stun import Address, Mapped, StunOutcome, binding

log = logging.getLogger("hd_node.addresses")

# A NAT may hand us another public address at any time; ask again every few minutes.
REFRESH_S = 300.0
# However often we are asked to ask again (each lobby reconnection), never more often.
MIN_INTERVAL_S = 30.0
# How long the first lobby registration waits for the first answer, so that it carries
# the srflx candidate (a STUN server answers in one round trip; a lost first request
# costs 500 ms).
FIRST_GATHER_WAIT_S = 2.0


def _url(host: str, port: int) -> str:
    return f"ws://{url_host(host)}:{port}/peer-ws"


def interface_addresses(include_loopback: bool) -> list[str]:
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            raw = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                addr = ipaddress.ip_address(raw)
            except ValueError:
                continue
            if addr.is_link_local or addr.is_multicast or addr.is_unspecified:
                continue
            if addr.is_loopback and not include_loopback:
                continue
            out.append(str(addr))
    return out


def own_candidates(settings: Settings, peer_url: str, bound_host: str,
                   reflexive: str | None = None) -> list[dict[str, Any]]:
    """Our listener's candidates, best first; ``reflexive``: our public IP from STUN.
    A srflx URL equal to a host one (a machine with a public address, or loopback in
    tests) is dropped: the host candidate says the same, with a higher priority."""
    port = int(peer_url.rsplit(":", 1)[1].split("/", 1)[0])
    cands: list[dict[str, Any]] = []
    if settings.advertise:
        cands.append(make_candidate("host", settings.advertise, 65535))
    pref = 65534
    if bound_host in ("0.0.0.0", "::", ""):  # noqa: S104 - bound-to-all is a fact here
        hosts = interface_addresses(settings.allow_loopback_candidates)
    else:
        hosts = [bound_host]
    for h in hosts:
        cands.append(make_candidate("host", _url(h, port), max(pref, 0)))
        pref -= 1
    if reflexive and settings.enable_direct:
        cands.append(make_candidate("srflx", _url(reflexive, port), 65535))
    return sort_candidates(cands)


class Reflexive:
    """Our server-reflexive IP (SPEC 8.1), from the configured STUN server.

    Learned at start, again every ``refresh_s``, and soon after ``kick()`` (the hub
    kicks when the lobby connection is re-made: a new connection may mean a new
    network) — never more often than every ``min_interval_s``. ``on_change`` hears of
    every new address. A failed binding keeps what we knew: a STUN server that missed
    one round is no evidence that our address changed, and peers still try the old one
    before the relay.
    """

    def __init__(self, server: Address, *, on_change: Callable[[], None],
                 metrics: NodeMetrics | None = None, refresh_s: float = REFRESH_S,
                 min_interval_s: float = MIN_INTERVAL_S,
                 ask: Callable[[Address], Awaitable[StunOutcome]] = binding) -> None:
        self.server = server
        self.on_change = on_change
        self.metrics = metrics
        self.refresh_s = refresh_s
        self.min_interval_s = min_interval_s
        self.ask = ask
        self.host: str | None = None
        self.last: StunOutcome | None = None
        self.gathered = trio.Event()  # the first binding ended, either way
        self._kicked = trio.Event()

    def kick(self) -> None:
        self._kicked.set()

    async def run(self) -> None:
        while True:
            started = trio.current_time()
            await self.gather()
            self.gathered.set()
            with trio.move_on_after(self.refresh_s):
                await self._kicked.wait()
                await trio.sleep_until(started + self.min_interval_s)
            self._kicked = trio.Event()

    async def gather(self) -> StunOutcome:
        """One binding; tells ``on_change`` when it brought a new address."""
        server = f"{self.server[0]}:{self.server[1]}"
        outcome = self.last = await self.ask(self.server)
        if self.metrics is not None:
            self.metrics.stun_bindings.labels(
                "ok" if isinstance(outcome, Mapped) else outcome.reason).inc()
        if not isinstance(outcome, Mapped):
            log.info("stun binding failed server=%s reason=%s sends=%d message=%s keeping=%s",
                     server, outcome.reason, outcome.sends, outcome.message, self.host or "-")
            return outcome
        log.info("stun binding server=%s mapped=%s:%d local_port=%d sends=%d ms=%.1f", server,
                 outcome.host, outcome.port, outcome.local[1], outcome.sends,
                 outcome.elapsed_ms)
        if outcome.host != self.host:
            log.info("srflx address learned ip=%s was=%s", outcome.host, self.host or "-")
            self.host = outcome.host
            self.on_change()
        return outcome


def reflexive_for(settings: Settings, metrics: NodeMetrics | None,
                  on_change: Callable[[], None]) -> Reflexive | None:
    """The gatherer the settings ask for: none without ``iceEnabled`` and a
    ``stunServer``, and none with ``enableDirect = false`` (no listener to offer)."""
    if not (settings.ice_enabled and settings.stun_server and settings.enable_direct):
        return None
    return Reflexive(parse_server(settings.stun_server), on_change=on_change,
                     metrics=metrics)
