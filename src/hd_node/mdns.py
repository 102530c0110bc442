"""zeroconf, as ``hd_node.lan`` uses it: where it listens, what we announce, and one
lookup turned into plain data. Every function here blocks (sockets, zeroconf's own
loop thread): call them from a worker thread, never from trio's.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from zeroconf import InterfaceChoice, IPVersion, Zeroconf

from hd_protocol.lan import SERVICE_TYPE

from .addresses import interface_addresses

log = logging.getLogger("hd_node.lan")


def open_zeroconf(host: str) -> Zeroconf:
    """zeroconf on the peer listener's interface (all of them when it is bound to all).
    ``ValueError`` for a host name: mDNS needs an address to bind to."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - bound to all is a fact here
        return Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
    if host == "::":
        return Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.All)
    ip = ipaddress.ip_address(host)
    return Zeroconf(interfaces=[str(ip)],
                    ip_version=IPVersion.V4Only if ip.version == 4 else IPVersion.V6Only)


def announced_addresses(host: str, include_loopback: bool) -> list[str]:
    """The addresses we announce: the listener's bound address, or, bound to all, the
    machine's interface addresses (loopback only if nothing else is there)."""
    if host not in ("", "0.0.0.0", "::"):  # noqa: S104
        return [host]
    addrs = [a for a in interface_addresses(include_loopback)
             if host == "::" or ":" not in a]
    return addrs or ["127.0.0.1"]


@dataclass(frozen=True)
class Resolved:
    """What one lookup found, as plain data for ``hd_protocol.lan.parse_announcement``."""

    properties: dict[bytes, bytes | None]
    addresses: list[str]
    port: int | None


def lookup(zc: Zeroconf, name: str, timeout_ms: int) -> Resolved | None:
    """The service ``name`` from zeroconf's cache, else asked on the network (at most
    ``timeout_ms``); None when nothing answered or zeroconf is closing under us."""
    try:
        info = zc.get_service_info(SERVICE_TYPE, name, timeout=timeout_ms)
    except Exception as exc:  # zeroconf closed meanwhile, a name it refuses: nothing found
        log.debug("lan lookup failed service=%s error=%s", name, type(exc).__name__)
        return None
    if info is None:
        return None
    return Resolved(dict(info.properties), info.parsed_scoped_addresses(), info.port)
