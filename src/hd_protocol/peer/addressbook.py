"""Where a known peer can be reached: a small address book per peer, as pure functions.

Addresses come from two places that deserve different trust: the **user** (an invite
they redeemed, an address they typed, one that worked when we dialled it) and the
**peer** itself (``presence.addrs``, which anyone who completed a handshake with us can
fill with whatever they like — including an address that answers HTTP 403 to every
dial). So:

- a peer's addresses are data: each is checked (``check_peer_url``), at most ``limit``
  are kept, and the peer's latest presence replaces what it said before;
- a peer never overrides the user: user addresses are tried first and a presence
  cannot remove or demote them;
- an address that fails is demoted (tried after those that did not) and one that
  works goes back to the front, so a dead address costs one ladder step, not a loop.

The book is a tuple of ``KnownAddress``, stored as JSON by the shell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from ..errors import RemoteProtocolError

Source = Literal["user", "peer"]
MAX_URL_CHARS = 256
PEER_PATH = "/peer-ws"


@dataclass(frozen=True, slots=True)
class KnownAddress:
    url: str
    source: Source
    fails: int = 0  # failed dials in a row


Book = tuple[KnownAddress, ...]


def check_peer_url(url: object) -> str:
    """A ``ws://host:port/peer-ws`` address a peer may give us, or ``bad_address``.

    Scheme ws or wss, a host (name, IPv4 or bracketed IPv6), an explicit port in
    1..65535, the path ``/peer-ws``, nothing else (no user info, query or fragment),
    printable ASCII, at most 256 characters."""
    if type(url) is not str or len(url) > MAX_URL_CHARS:  # "" fails the scheme check
        raise RemoteProtocolError("bad_address", "an address is a string of 1..256 chars")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise RemoteProtocolError("bad_address", "an address is printable ASCII")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RemoteProtocolError("bad_address", "not a URL") from None
    if parts.scheme not in ("ws", "wss"):
        raise RemoteProtocolError("bad_address", "the scheme is ws or wss")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise RemoteProtocolError("bad_address", "an address names a host, nothing else")
    if not port:  # None or 0; urlsplit itself refuses a port over 65535
        raise RemoteProtocolError("bad_address", "an address has a port in 1..65535")
    if parts.path != PEER_PATH or parts.query or parts.fragment or "#" in url:
        raise RemoteProtocolError("bad_address", f"the path is {PEER_PATH}, with no query")
    return url


def learn(book: Book, urls: Iterable[str], source: Source, *, limit: int = 16) -> Book:
    """``book`` after ``source`` told us ``urls``.

    User addresses are added (or promoted from peer-learned) at the front of the user
    group. Peer addresses replace the peer-learned group (failure counts kept for the
    ones that stay) and never touch a user address. Each group keeps ``limit``."""
    urls = list(dict.fromkeys(urls))
    users = [a for a in book if a.source == "user"]
    peers = [a for a in book if a.source == "peer"]
    if source == "user":
        known = {a.url: a for a in book}
        fresh = [replace(known[u], source="user") if u in known else KnownAddress(u, "user")
                 for u in urls]
        users = fresh + [a for a in users if a.url not in urls]
        peers = [a for a in peers if a.url not in urls]
    else:
        user_urls = {a.url for a in users}
        old = {a.url: a for a in peers}
        peers = [old.get(u, KnownAddress(u, "peer")) for u in urls if u not in user_urls]
    return tuple(users[:limit]) + tuple(peers[:limit])


def record(book: Book, url: str, ok: bool) -> Book:
    """A dial to ``url`` worked (failures reset) or failed (one more)."""
    return tuple(replace(a, fails=0 if ok else a.fails + 1) if a.url == url else a
                 for a in book)


def dial_order(book: Book) -> list[str]:
    """User addresses before peer-learned ones; within each, those that failed least
    first (a stable sort keeps the most recent first among equals)."""
    return [a.url for a in sorted(book, key=lambda a: (a.source == "peer", a.fails))]


def to_json(book: Book) -> list[dict[str, Any]]:
    return [{"url": a.url, "source": a.source, "fails": a.fails} for a in book]


def from_json(value: object) -> Book:
    """A stored book; a plain list of URLs (what older nodes stored) counts as user
    addresses. Entries that do not parse are skipped."""
    out: list[KnownAddress] = []
    for item in value if isinstance(value, list) else []:
        if type(item) is str:
            out.append(KnownAddress(item, "user"))
        elif (isinstance(item, dict) and type(item.get("url")) is str
              and item.get("source") in ("user", "peer")
              and type(fails := item.get("fails", 0)) is int):
            out.append(KnownAddress(item["url"], item["source"], max(0, fails)))
    return tuple(out)


def urls(book: Sequence[KnownAddress]) -> list[str]:
    return [a.url for a in book]
