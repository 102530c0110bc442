"""Our own candidates (SPEC 8.1) for invites and presence.

``--advertise`` if given; else, when the peer listener is bound to one address, that
address with the real port; when bound to 0.0.0.0 / ::, the machine's interface
addresses (via ifaddr), loopback and link-local left out unless enabled.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import ifaddr

from hd_protocol import make_candidate, sort_candidates

from .config import Settings


def _url(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"ws://{host}:{port}/peer-ws"


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


def own_candidates(settings: Settings, peer_url: str, bound_host: str) -> list[dict[str, Any]]:
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
    return sort_candidates(cands)
