"""LAN discovery decisions (SPEC 8.5): what an mDNS / DNS-SD announcement says, whether
to believe it, and whether to dial the node it names.

The shell (``hd_node.lan``) owns zeroconf, its threads and the clock; it hands this
module plain data — a service's name, TXT properties, addresses and port — and gets
back validated announcements, a bounded table of them with expiry and retry times, and
a dial decision per announcement. Time comes in as a monotonic ``now`` (ms).

An announcement is only a hint: every dial it leads to pins the announced id and key
(the handshake then proves them, SPEC 4), so a forged announcement can at worst make
us dial an address that cannot answer as the node it names.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..errors import ProtocolError, RemoteProtocolError
from ..identity import is_node_id, node_id_for
from ..peer.admission import PeerRecord, Policy, is_private_address

SERVICE_TYPE = "_hd-peer._tcp.local."
TXT_VERSION = "1"
PEER_PATH = "/peer-ws"
MAX_LAN_PEERS = 256
MAX_SERVICES_PER_NODE = 4  # one node's announcements we hold (a name clash renames one)
MAX_URLS = 4  # addresses of one announcement we try (a host may list many interfaces)
MAX_TXT_KEYS = 16
MAX_NAME_CHARS = 64
ENTRY_TTL_MS = 150_000  # an entry nobody confirmed for this long is gone
RETRY_MIN_MS = 1_000
RETRY_MAX_MS = 60_000

# Why an announcement was not taken (the label of ``hd_lan_ignored_total``).
IGNORE_REASONS = ("malformed", "version", "id_mismatch", "own", "no_address", "full")
_PATH_RE = re.compile(r"/[A-Za-z0-9._~/-]{0,63}\Z")
# Close reasons after which a LAN peer is not redialled by itself (as SPEC 5's).
NO_REDIAL = frozenset({"disconnect", "untrusted", "duplicate"})


@dataclass(frozen=True, slots=True)
class LanAnnouncement:
    """One validated announcement: ``service`` is its DNS-SD instance name (the table
    key), ``urls`` the ``ws://`` addresses to dial, best first."""

    service: str
    node_id: str
    public_key: str
    urls: tuple[str, ...]
    node_name: str | None = None


def service_name(node_id: str) -> str:
    """Our instance name: ASCII, unique per node, far below DNS's 63-byte label."""
    return f"hd-{node_id}.{SERVICE_TYPE}"


def announcement_txt(node_id: str, public_key: str, node_name: str | None = None,
                     path: str = PEER_PATH) -> dict[str, str]:
    """The TXT record we announce (SPEC 8.5), plus our display name when it fits."""
    txt = {"v": TXT_VERSION, "id": node_id, "pk": public_key, "path": path}
    name = _clean_name(node_name)
    if name is not None and len(name.encode()) <= 200:  # one TXT string is ≤ 255 bytes
        txt["name"] = name
    return txt


def _text(value: bytes | str | None) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        raise RemoteProtocolError("malformed", "a TXT key without a value")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise RemoteProtocolError("malformed", "a TXT value is not UTF-8") from None


def _clean_name(name: object) -> str | None:
    """A display name from a TXT record, or None when it is unusable (never fatal: the
    name is decoration, the id and key are what count)."""
    if type(name) is not str:
        return None
    name = name.strip()
    if not 0 < len(name) <= MAX_NAME_CHARS:
        return None
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        return None
    return name


def parse_txt(properties: Mapping[bytes, bytes | None] | Mapping[str, str | None]
              ) -> dict[str, str]:
    """TXT properties as a ``{key: value}`` of text with lowercase keys (DNS-SD keys
    are case-insensitive). ``malformed`` on anything that is not plain text."""
    if len(properties) > MAX_TXT_KEYS:
        raise RemoteProtocolError("malformed", "too many TXT keys")
    out: dict[str, str] = {}
    for raw_key, raw_value in properties.items():
        key = _text(raw_key).lower()
        if not key.isascii() or key in out:
            raise RemoteProtocolError("malformed", "a TXT key is repeated or not ASCII")
        out[key] = _text(raw_value)
    return out


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _address_rank(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[bool, bool]:
    # Private IPv4 first (what a LAN is), then other IPv4, then IPv6; loopback last
    # among its family unless it is all there is.
    return ip.version == 6, ip.is_loopback


def candidate_urls(addresses: Sequence[str], port: int, path: str) -> tuple[str, ...]:
    """``ws://`` URLs for an announcement's addresses, best first, at most ``MAX_URLS``.
    Unusable addresses (multicast, unspecified, IPv6 link-local: it needs a scope we
    cannot carry in a URL) are skipped."""
    found: list[tuple[tuple[bool, bool], int, str]] = []
    seen: set[str] = set()
    for i, text in enumerate(addresses):
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.is_multicast or ip.is_unspecified or (ip.version == 6 and ip.is_link_local):
            continue
        if str(ip) in seen:
            continue
        seen.add(str(ip))
        found.append((_address_rank(ip), i, f"ws://{_url_host(str(ip))}:{port}{path}"))
    return tuple(url for _, _, url in sorted(found)[:MAX_URLS])


def parse_announcement(service: str, properties: Mapping[bytes, bytes | None],
                       addresses: Sequence[str], port: int | None, *,
                       own_id: str) -> LanAnnouncement:
    """Validate what zeroconf resolved for ``service``. Raises ``RemoteProtocolError``
    whose ``code`` is one of ``IGNORE_REASONS``:

    - ``malformed``: TXT not text, a field missing or not what it must be, a bad port;
    - ``version``: ``v`` is not ``1`` (a later protocol: not ours to guess at);
    - ``id_mismatch``: ``id`` is not the node id of ``pk`` (SPEC 2) — a forgery, since
      a node id is only ever trusted with the key it derives from;
    - ``own``: our own announcement (or one that claims our id);
    - ``no_address``: nothing we could dial.
    """
    txt = parse_txt(properties)
    if txt.get("v") != TXT_VERSION:
        raise RemoteProtocolError("version" if "v" in txt else "malformed",
                                  f"TXT v is {txt.get('v')!r}, not {TXT_VERSION}")
    node_id, key, path = txt.get("id"), txt.get("pk"), txt.get("path")
    if node_id is None or not is_node_id(node_id):
        raise RemoteProtocolError("malformed", "TXT id is required")
    if key is None:
        raise RemoteProtocolError("malformed", "TXT pk is required")
    if path is None or _PATH_RE.match(path) is None:
        raise RemoteProtocolError("malformed", "TXT path must be a short absolute path")
    try:
        derived = node_id_for(key)
    except ProtocolError:
        raise RemoteProtocolError("malformed", "TXT pk is not a public key") from None
    if derived != node_id:
        raise RemoteProtocolError("id_mismatch", "TXT id is not the node id of pk")
    if node_id == own_id:
        raise RemoteProtocolError("own", "our own announcement")
    if type(port) is not int or not 0 < port <= 65535:
        raise RemoteProtocolError("malformed", "no usable port")
    urls = candidate_urls(addresses, port, path)
    if not urls:
        raise RemoteProtocolError("no_address", "no usable address")
    return LanAnnouncement(service, node_id, key, urls, _clean_name(txt.get("name")))


def announced_from(ann: LanAnnouncement, remote_ip: str | None) -> bool:
    """Whether a link from ``remote_ip`` comes from an address ``ann`` announced (an
    inbound link from a LAN peer is then a ``lan`` link, as the peer's dial is)."""
    if not remote_ip:
        return False
    return any(url.startswith(f"ws://{_url_host(remote_ip)}:") for url in ann.urls)


# --- whether to dial ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LanDecision:
    """``dial``: dial ``urls`` pinning the announced id and ``expected_key``; ``reason``
    says why (or why not), for the log and the tests."""

    dial: bool
    reason: str
    urls: tuple[str, ...] = ()
    expected_key: str | None = None


def decide_lan_dial(ann: LanAnnouncement, *, policy: Policy, record: PeerRecord | None,
                    connected: bool, user_disconnected: bool) -> LanDecision:
    """SPEC 8.5: known trusted peers seen on the LAN are reconnected; unknown ones are
    dialled only in ``open-lan`` mode (and only at private addresses: open-lan admits
    nothing else, SPEC 4.1 step 5); everything else is listed, not dialled."""
    if connected:
        return LanDecision(False, "connected")
    if record is not None and record.public_key != ann.public_key:
        return LanDecision(False, "key_mismatch")  # never dial a key we did not pin
    if record is not None and record.blocked:
        return LanDecision(False, "blocked")
    if user_disconnected:
        return LanDecision(False, "user_disconnected")
    if record is not None and record.trusted:
        return LanDecision(True, "reconnect", ann.urls, record.public_key)
    if policy.trust_mode == "open-lan":
        private = tuple(u for u in ann.urls if is_private_address(urlsplit(u).hostname))
        if not private:
            return LanDecision(False, "not_private")
        return LanDecision(True, "open_lan", private, ann.public_key)
    return LanDecision(False, "pairing_required")


# --- the table of what was seen ------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    ann: LanAnnouncement
    expires: int
    due: int | None  # when to consider dialling it; None: not until something changes
    failures: int = 0
    keep: bool = False  # a peer we trust: it may take the place of one we do not


@dataclass
class LanTable:
    """Discovered announcements by service name: bounded (``max_entries``, and
    ``max_per_node`` of any one node id), each expiring ``ttl_ms`` after it was last
    confirmed, each with the time it is due for a dial decision (at once when new or
    changed, after backoff when a dial failed or its session ended).

    Anyone on the LAN can fill the table with fresh identities; the announcements of
    peers we trust (``keep``) are never shut out by them: ``evict_for`` gives such an
    announcement the place of one that is not kept."""

    max_entries: int = MAX_LAN_PEERS
    max_per_node: int = MAX_SERVICES_PER_NODE
    ttl_ms: int = ENTRY_TTL_MS
    retry_min_ms: int = RETRY_MIN_MS
    retry_max_ms: int = RETRY_MAX_MS
    _entries: dict[str, _Entry] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._entries)

    def announcements(self) -> list[LanAnnouncement]:
        return sorted((e.ann for e in self._entries.values()),
                      key=lambda a: (a.node_id, a.service))

    def get(self, service: str) -> LanAnnouncement | None:
        e = self._entries.get(service)
        return e.ann if e is not None else None

    def by_node(self, node_id: str) -> list[LanAnnouncement]:
        return [e.ann for e in self._entries.values() if e.ann.node_id == node_id]

    def seen(self, ann: LanAnnouncement, now: int, *, keep: bool = False) -> bool:
        """An announcement was (re)confirmed. True when what it says changed (new, or
        another id, key, address or name); ``full`` when the table, or the room for
        one node's announcements, has no place for a new one (see ``evict_for``).
        ``keep``: it names a peer we trust (the shell knows; it says so every time)."""
        e = self._entries.get(ann.service)
        if e is None:
            if len(self.by_node(ann.node_id)) >= self.max_per_node:
                raise RemoteProtocolError(
                    "full", f"over {self.max_per_node} LAN announcements of one node")
            if len(self._entries) >= self.max_entries:
                raise RemoteProtocolError("full", f"over {self.max_entries} LAN peers")
            self._entries[ann.service] = _Entry(ann, now + self.ttl_ms, now, keep=keep)
            return True
        e.expires = now + self.ttl_ms
        e.keep = keep
        if e.ann == ann:
            return False
        identity_changed = (e.ann.node_id, e.ann.public_key, e.ann.urls) != (
            ann.node_id, ann.public_key, ann.urls)
        e.ann = ann
        if identity_changed:
            e.due, e.failures = now, 0
        return True

    def evict_for(self, ann: LanAnnouncement) -> LanAnnouncement | None:
        """Make room for ``ann``, the announcement of a peer we trust, that ``seen``
        found no place for: drop the entry not kept that was confirmed longest ago
        (ties: the first service name) and return it. None when ``ann`` is in already,
        the table is not full, its node has all the announcements it may have (an
        eviction would not let it in), or every entry is kept."""
        if ann.service in self._entries or len(self._entries) < self.max_entries:
            return None
        if len(self.by_node(ann.node_id)) >= self.max_per_node:
            return None
        victims = [(e.expires, s) for s, e in self._entries.items() if not e.keep]
        if not victims:
            return None
        return self._entries.pop(min(victims)[1]).ann

    def removed(self, service: str) -> bool:
        return self._entries.pop(service, None) is not None

    def expire(self, now: int) -> list[LanAnnouncement]:
        gone = [s for s, e in self._entries.items() if e.expires <= now]
        return [self._entries.pop(s).ann for s in gone]

    def due(self, now: int, busy: frozenset[str] | set[str] = frozenset()
            ) -> list[LanAnnouncement]:
        """Announcements whose dial decision is due, taken off the schedule (the shell
        reports back with ``dial_failed``/``poke``). ``busy``: node ids being dialled
        now; theirs wait for the next call."""
        out: list[LanAnnouncement] = []
        for e in self._entries.values():
            if e.due is not None and e.due <= now and e.ann.node_id not in busy:
                e.due = None
                out.append(e.ann)
        return out

    def dial_failed(self, service: str, now: int) -> None:
        """Try again later: ``retry_min_ms`` doubling to ``retry_max_ms``."""
        e = self._entries.get(service)
        if e is None:
            return
        step = min(self.retry_max_ms, self.retry_min_ms * 2 ** min(e.failures, 20))
        e.failures += 1
        e.due = now + step

    def dial_succeeded(self, service: str) -> None:
        e = self._entries.get(service)
        if e is not None:
            e.failures = 0

    def poke(self, node_id: str, now: int, delay_ms: int | None = None) -> None:
        """Something about ``node_id`` changed (its session ended): decide again after
        ``delay_ms`` (default ``retry_min_ms``)."""
        at = now + (self.retry_min_ms if delay_ms is None else delay_ms)
        for e in self._entries.values():
            if e.ann.node_id == node_id:
                e.due = at if e.due is None else min(e.due, at)

    def next_deadline(self) -> int | None:
        times = [e.expires for e in self._entries.values()]
        times += [e.due for e in self._entries.values() if e.due is not None]
        return min(times) if times else None
