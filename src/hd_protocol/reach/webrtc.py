"""WebRTC data-channel links (SPEC 8.4): the rules, without aiortc or a loop.

- **Fragments.** A data-channel message is at most ``MAX_MESSAGE`` (60 000) bytes. An
  envelope that fits goes as one text message; a longer one goes as binary fragments
  of 1 flag byte (``FLAG_MORE`` / ``FLAG_LAST``) and a non-empty slice of its UTF-8
  bytes. ``Reassembler`` rebuilds them up to the envelope size limit, under the same
  pre-authentication budget as every other inbound link until the handshake is done;
  anything else is a violation (``RemoteProtocolError``) and the link is closed.
- **Signals.** Non-trickle offer/answer in lobby ``signal {to, sid, kind, sdp}`` frames
  (SPEC 7.5), a fresh ``sid`` per attempt. ``Signaling`` decides what an inbound
  signal means; glare — both nodes offer at once — is settled without talking: the
  node with the smaller node id keeps its offer, the other drops its own and answers.
- **Settings.** ``ice_config`` checks ``stunServer``/``turnUrls``/credentials/
  ``icePolicy``; nothing is configured by default, so nothing reaches a public server.
- **Candidates.** A room host that registered with the capability ``webrtc`` gets a
  ladder candidate ``DialCandidate("webrtc", "webrtc:<node id>")``: the address is the
  lobby signalling target, not a wire candidate (SPEC 8.1 candidates stay ws://).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import LocalProtocolError, RemoteProtocolError
from ..identity import is_node_id
from ..peer.candidates import DialCandidate
from ..stun import parse_server

LABEL = "hd-peer"
CAPABILITY = "webrtc"
KIND = "webrtc"
ADDRESS_PREFIX = "webrtc:"
MAX_MESSAGE = 60_000  # bytes on the channel per message, the flag byte included
FLAG_LAST = 0x00
FLAG_MORE = 0x01
SIGNAL_KINDS = ("offer", "answer", "bye")
MAX_SDP = 32 * 1024  # what the lobby relays (hd_protocol.brokers.lobby.MAX_SDP)
MAX_ATTEMPTS_PER_PEER = 8
MAX_ATTEMPTS = 64
ICE_POLICIES = ("all", "relay")
_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")


# --- fragments ------------------------------------------------------------------------

def fragment(message: str | bytes, limit: int = MAX_MESSAGE) -> list[str | bytes]:
    """What to put on the channel for one envelope: itself (as text) when it fits in
    ``limit`` bytes, else binary fragments ``flag ‖ slice`` of at most ``limit`` bytes."""
    data = message.encode() if isinstance(message, str) else bytes(message)
    if len(data) <= limit:
        return [data.decode()]
    step = limit - 1
    out: list[str | bytes] = []
    for start in range(0, len(data), step):
        last = start + step >= len(data)
        out.append(bytes([FLAG_LAST if last else FLAG_MORE]) + data[start:start + step])
    return out


@dataclass(frozen=True, slots=True)
class Budget:
    """What a link may carry before its peer authenticated: the message size, the
    fragments per message and the bytes in all (the direct link's pre-auth budget)."""

    max_message_size: int
    max_fragments: int
    max_bytes: int


class Reassembler:
    """Whole envelopes out of data-channel messages, within the limits.

    ``receive`` returns the envelope a message completes (text), or None while a
    fragmented one is still coming; a violation raises ``RemoteProtocolError``
    (``too_large``, ``bad_fragment``, ``over_budget``) and the link must close."""

    def __init__(self, max_message_size: int, preauth: Budget | None = None) -> None:
        self._max = max_message_size
        self._preauth = preauth
        self._parts: list[bytes] = []
        self._size = 0
        self.bytes_in = 0

    def lift(self) -> None:
        """The handshake is done: from now on only the envelope size limit holds."""
        self._preauth = None

    @property
    def pending(self) -> int:
        """Bytes of an unfinished fragmented envelope."""
        return self._size

    def receive(self, message: str | bytes) -> str | None:
        size = len(message.encode()) if isinstance(message, str) else len(message)
        self.bytes_in += size
        budget = self._preauth
        limit = self._max if budget is None else min(self._max, budget.max_message_size)
        if budget is not None and self.bytes_in > budget.max_bytes:
            raise RemoteProtocolError("over_budget", "too many bytes before the handshake")
        if isinstance(message, str):
            if self._parts:
                raise RemoteProtocolError("bad_fragment", "a text message inside a fragmented one")
            if size > limit:
                raise RemoteProtocolError("too_large", f"message over {limit} bytes")
            return message
        if len(message) < 2 or message[0] not in (FLAG_LAST, FLAG_MORE):
            raise RemoteProtocolError("bad_fragment", "a fragment is a flag byte and data")
        self._size += len(message) - 1
        self._parts.append(bytes(message[1:]))
        if self._size > limit:
            raise RemoteProtocolError("too_large", f"message over {limit} bytes")
        if budget is not None and len(self._parts) > budget.max_fragments:
            raise RemoteProtocolError("over_budget", "too many fragments before the handshake")
        if message[0] == FLAG_MORE:
            return None
        data = b"".join(self._parts)
        self._parts, self._size = [], 0
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise RemoteProtocolError("bad_fragment", "an envelope is UTF-8 text") from None


# --- candidates and addresses ------------------------------------------------------------

def address_for(node_id: str) -> str:
    return ADDRESS_PREFIX + node_id


def peer_of(address: str) -> str:
    """The node id a ``webrtc:<node id>`` address signals to."""
    node_id = address[len(ADDRESS_PREFIX):]
    if not address.startswith(ADDRESS_PREFIX) or not is_node_id(node_id):
        raise LocalProtocolError("bad_address", f"not a webrtc:<node id> address: {address!r}")
    return node_id


def host_candidates(node_id: str, entry: Mapping[str, object] | None) -> list[DialCandidate]:
    """The WebRTC ladder candidate for a room host, if its lobby entry says it can."""
    caps = entry.get("capabilities") if entry is not None else None
    if not isinstance(caps, list) or CAPABILITY not in caps or not is_node_id(node_id):
        return []
    return [DialCandidate(KIND, address_for(node_id))]


# --- ICE settings -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class IceConfig:
    servers: tuple[IceServer, ...] = ()
    policy: str = "all"


def ice_config(stun_server: str = "", turn_urls: Sequence[str] = (), username: str = "",
               credential: str = "", policy: str = "all") -> IceConfig:
    """The ICE servers and policy the settings name (SPEC 8.4, 10); ``ValueError`` says
    what is wrong. Empty settings give no server at all: nothing public by default."""
    if policy not in ICE_POLICIES:
        raise ValueError("icePolicy must be all or relay")
    servers: list[IceServer] = []
    if stun_server:
        try:  # the grammar the node's own STUN client reads (one setting, one meaning)
            host, port = parse_server(stun_server)
        except ValueError as exc:
            raise ValueError(f"stunServer: {exc}") from None
        if ":" in host:  # the WebRTC library's ICE URI grammar has no IPv6 literal
            raise ValueError("stunServer: WebRTC needs a host name or IPv4 address, "
                             "not an IPv6 literal")
        servers.append(IceServer((f"stun:{host}:{port}",)))
    turns = tuple(u for u in turn_urls if u)
    for url in turns:
        if not re.fullmatch(r"turns?:[^\s?:/]+(:\d{1,5})?(\?transport=(udp|tcp))?", url):
            raise ValueError(f"turnUrls: {url!r} is not a turn:host:port URL")
    if turns:
        if not username or not credential:
            raise ValueError("turnUrls need turnUsername and turnCredential")
        servers.append(IceServer(turns, username, credential))
    if policy == "relay" and not turns:
        raise ValueError("icePolicy relay needs a TURN server (turnUrls)")
    return IceConfig(tuple(servers), policy)


def keep_candidates(sdp: str, types: frozenset[str]) -> str:
    """``sdp`` without the ``a=candidate`` lines whose type is not in ``types`` (how
    ``icePolicy relay`` is enforced where the WebRTC library has no transport policy)."""
    lines = sdp.split("\r\n")
    kept = [ln for ln in lines if not ln.startswith("a=candidate:")
            or _candidate_type(ln) in types]
    return "\r\n".join(kept)


def _candidate_type(line: str) -> str | None:
    parts = line.split()
    for i, part in enumerate(parts[:-1]):
        if part == "typ":
            return parts[i + 1]
    return None


# --- signals and glare ------------------------------------------------------------------

def new_sid(rng: Callable[[int], bytes]) -> str:
    return rng(16).hex()


def keeps_own_offer(own_id: str, peer_id: str) -> bool:
    """Glare (SPEC 8.4): both offered at once; the smaller node id keeps its offer."""
    return own_id < peer_id


def check_signal(peer: str, sid: str, kind: str, sdp: str) -> None:
    """A signal as the lobby delivered it (``signal {from, sid, kind, sdp}``)."""
    if not is_node_id(peer):
        raise RemoteProtocolError("bad_signal", "from is not a node id")
    if not _SID.fullmatch(sid):
        raise RemoteProtocolError("bad_signal", "sid is 1..64 of [A-Za-z0-9_-]")
    if kind not in SIGNAL_KINDS:
        raise RemoteProtocolError("bad_signal", "kind is offer, answer or bye")
    if len(sdp) > MAX_SDP:
        raise RemoteProtocolError("bad_signal", "sdp over 32 KiB")
    if kind == "bye" and sdp:
        raise RemoteProtocolError("bad_signal", "a bye carries no sdp")
    if kind != "bye" and not sdp.startswith("v=0"):
        raise RemoteProtocolError("bad_signal", "an offer or answer carries an SDP")


@dataclass(frozen=True, slots=True)
class Accept:
    """A peer's offer to answer: a new inbound link (if the node has a slot for it)."""

    peer: str
    sid: str
    sdp: str


@dataclass(frozen=True, slots=True)
class Answered:
    """The answer to our offer ``sid``."""

    peer: str
    sid: str
    sdp: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """Our offer ``sid`` lost the glare: stop it (and say ``bye``); the peer's offer
    ``for_sid`` is answered instead and becomes the link with that peer."""

    peer: str
    sid: str
    for_sid: str


@dataclass(frozen=True, slots=True)
class SendBye:
    """Tell the peer to drop ``sid`` (it answered an offer we no longer have)."""

    peer: str
    sid: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer said ``bye``: tear the attempt or link ``sid`` down."""

    peer: str
    sid: str


@dataclass(frozen=True, slots=True)
class Ignored:
    peer: str
    sid: str
    reason: str  # glare (we keep our offer), duplicate, too_many, unknown


SignalOutput = Accept | Answered | Dropped | SendBye | Closed | Ignored


@dataclass(slots=True)
class _Attempt:
    offerer: bool = False  # we sent the offer
    answered: bool = False  # an offer of ours got its answer (no glare any more)


class Signaling:
    """Which attempt an inbound signal belongs to, and what it means (SPEC 8.4).

    Attempts are keyed by (peer, sid): a sid only names an attempt with the node that
    sent it. The shell registers its own offers (``offer``), feeds every inbound
    signal (``receive``) and reports every attempt that ended (``ended``)."""

    def __init__(self, own_id: str) -> None:
        self.own_id = own_id
        self._attempts: dict[tuple[str, str], _Attempt] = {}

    def __len__(self) -> int:
        return len(self._attempts)

    def offer(self, peer: str, sid: str) -> None:
        """We start an attempt: an offer goes to ``peer`` under ``sid``."""
        if (peer, sid) in self._attempts:
            raise LocalProtocolError("duplicate_sid", "a sid names one attempt")
        self._attempts[(peer, sid)] = _Attempt(offerer=True)

    def ended(self, peer: str, sid: str) -> None:
        self._attempts.pop((peer, sid), None)

    def attempts_with(self, peer: str) -> list[str]:
        """Every attempt with ``peer``, ours or its, in progress or open. A node starts
        no second one while one is under way (it would only make a duplicate)."""
        return [s for (p, s) in self._attempts if p == peer]

    def offering(self, peer: str) -> list[str]:
        """Our offers to ``peer`` still waiting for an answer."""
        return [s for (p, s), a in self._attempts.items() if p == peer and a.offerer
                and not a.answered]

    def receive(self, peer: str, sid: str, kind: str, sdp: str) -> list[SignalOutput]:
        """One inbound signal; ``RemoteProtocolError`` if it is malformed."""
        check_signal(peer, sid, kind, sdp)
        key = (peer, sid)
        attempt = self._attempts.get(key)
        if kind == "bye":
            if attempt is None:
                return [Ignored(peer, sid, "unknown")]
            del self._attempts[key]
            return [Closed(peer, sid)]
        if kind == "answer":
            if attempt is None or not attempt.offerer or attempt.answered:
                return [SendBye(peer, sid)]  # an offer we no longer have (or never had)
            attempt.answered = True
            return [Answered(peer, sid, sdp)]
        if attempt is not None:
            return [Ignored(peer, sid, "duplicate")]
        mine = self.offering(peer)
        if mine and keeps_own_offer(self.own_id, peer):
            return [Ignored(peer, sid, "glare")]  # the peer drops its offer and answers ours
        if (sum(1 for p, _ in self._attempts if p == peer) - len(mine) >= MAX_ATTEMPTS_PER_PEER
                or len(self._attempts) - len(mine) >= MAX_ATTEMPTS):
            return [Ignored(peer, sid, "too_many")]
        out: list[SignalOutput] = []
        for own_sid in mine:
            del self._attempts[(peer, own_sid)]
            out.append(Dropped(peer, own_sid, sid))
        self._attempts[key] = _Attempt()
        out.append(Accept(peer, sid, sdp))
        return out
