"""The WebRTC transport (SPEC 8.4) on the link seam: kind ``webrtc``.

Optional: it exists only when the ``webrtc`` extra (aiortc) imports and
``enableWebRtc`` is set. aiortc runs on its own asyncio loop in a dedicated thread
(``hd_shell.aiothread``); this module is the trio side: links, attempts, deadlines.

- **Signalling** goes through the lobby (``signal {to, sid, kind, sdp}``, SPEC 7.5),
  non-trickle: an offer and an answer each carry every candidate. What an inbound
  signal means — and glare, both nodes offering at once — is decided by
  ``hd_protocol.reach.webrtc.Signaling``; a fresh ``sid`` names each attempt.
- **Dialling** (``open``): offer, wait for the answer, wait for the ``hd-peer``
  channel to open, all within the connect deadline (10 s). An attempt that loses the
  glare waits for the peer's link (answered by us, so inbound) to authenticate and
  then fails with ``duplicate``: the connector takes that session as its result.
- **Accepting**: an offer takes a handshake slot from the hub (``reserve``) before any
  work, is answered, and once the channel is open the link goes to the hub
  (``accept``) under the same pre-authentication budget as a direct link.
- **Replies have a budget.** What we signal because a peer signalled (an answer and the
  ``bye`` that ends that attempt; a ``bye`` for an answer to no offer of ours, or for
  an offer refused as busy) draws on token buckets well under the lobby's rate limit
  for our connection (SPEC 7): room guests cannot make the lobby close it, and our
  rooms with it. An offer past the budget is refused before any work; a ``bye`` past
  it is not sent (the peer's attempt ends at its own deadline). Every signal refused
  or ignored is logged and counted (``hd_connections_refused{why="webrtc_..."}``).
- **A link** carries the same text envelopes and the same handshake as any other, so
  no path is less safe: envelopes over 60 000 bytes travel as fragments and are
  reassembled up to the envelope size limit; a violation closes the link. Closing
  either side tears the peer connection down on the asyncio thread and says ``bye``.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from hd_protocol import DialCandidate, Identity
from hd_protocol.brokers.frames import TokenBucket
from hd_protocol.errors import LocalProtocolError, RemoteProtocolError
from hd_protocol.limits import DEFAULT_LIMITS, Limits
from hd_protocol.reach.webrtc import (
    Accept,
    Answered,
    Budget,
    Closed,
    Dropped,
    IceConfig,
    Ignored,
    SendBye,
    Signaling,
    address_for,
    new_sid,
    peer_of,
)
from hd_shell.aiothread import AsyncioThread, trio_caller
from hd_shell.listener import PREAUTH

from ...config import Settings
from ...metrics import NodeMetrics
from ..seam import DialFailed, InboundGate, Link, LinkClosed, Ticket
from .link import WebRtcLink

log = logging.getLogger("hd_node.webrtc")

CONNECT_TIMEOUT_S = 10.0  # ICE gathering + connectivity + the channel opening
CLOSE_TIMEOUT_S = 2.0

SendSignal = Callable[[str, str, str, str], bool]
Rate = tuple[float, int]  # frames per second, burst


def reply_budgets(limits: Limits = DEFAULT_LIMITS) -> tuple[Rate, Rate]:
    """What we may signal in reply to peers, out of the lobby's rate limit per connection
    (50/s, bursts of 200): answers and the byes ending those attempts (2 an offer), 2/5
    of the rate and half the burst; byes for signals that opened nothing, a tenth. The
    rest is our own (heartbeats, rooms, our offers)."""
    rate, burst = limits.rate_per_s, limits.rate_burst
    return (rate * 2 / 5, burst // 2), (rate / 10, burst // 10)


def webrtc_available() -> bool:
    """Whether the ``webrtc`` extra (aiortc) is installed."""
    try:
        import aiortc  # noqa: F401
    except ImportError:
        return False
    return True


def webrtc_transport(identity: Identity, settings: Settings, limits: Limits,
                     metrics: NodeMetrics, send_signal: SendSignal) -> WebRtcTransport | None:
    """The node's WebRTC transport, signalling through ``send_signal`` — or None: not
    enabled (``enableWebRtc``, default false) or the ``webrtc`` extra is not installed."""
    if not settings.enable_webrtc:
        return None
    if not webrtc_available():
        log.warning("enableWebRtc is set but the webrtc extra (aiortc) is not installed: "
                    "no WebRTC (pip install 'hd-fabric[webrtc]')")
        return None
    return WebRtcTransport(
        identity, ice=settings.ice(), max_envelope_bytes=limits.max_envelope_bytes,
        # The same budget as a direct link's before its peer authenticated.
        preauth=Budget(PREAUTH.max_message_size, PREAUTH.max_fragments, PREAUTH.max_bytes),
        rng=os.urandom, host_addresses=_loopback_only(settings.peer_host),
        budgets=reply_budgets(limits),
        count=lambda why: metrics.refused.labels(f"webrtc_{why}").inc(),
        send_signal=send_signal)


def _loopback_only(host: str) -> list[str] | None:
    """A peer listener bound to loopback (a test's) offers nothing else, and neither do
    ICE host candidates (SPEC 8.1); aioice on its own never gathers loopback."""
    if host == "localhost":
        return ["127.0.0.1"]
    try:
        return [host] if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None


@dataclass
class _Offer:
    """Our offer waiting for its answer (or for the glare to be settled)."""

    answer: str | None = None
    lost_to: str | None = None  # the peer's sid we answer instead (glare)
    wake: trio.Event = field(default_factory=trio.Event)


class WebRtcTransport:
    kind = "webrtc"
    remembers_addresses = False  # a signalling target, not an address worth storing

    def __init__(self, identity: Identity, *, ice: IceConfig, max_envelope_bytes: int,
                 preauth: Budget, rng: Callable[[int], bytes],
                 host_addresses: list[str] | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 budgets: tuple[Rate, Rate] | None = None,
                 count: Callable[[str], None] = lambda why: None,
                 send_signal: SendSignal = lambda to, sid, kind, sdp: False) -> None:
        """``send_signal``: how our signals reach the peer (the node's lobby link)."""
        self.identity = identity
        self.ice = ice
        self.max_envelope_bytes = max_envelope_bytes
        self.preauth = preauth
        self.rng = rng
        self.host_addresses = host_addresses
        self.connect_timeout_s = connect_timeout_s
        self.send_signal = send_signal
        self.signaling = Signaling(identity.node_id)
        self.thread = AsyncioThread("hd-webrtc")
        self.links: dict[tuple[str, str], WebRtcLink] = {}
        self._offers: dict[tuple[str, str], _Offer] = {}
        self._gate: InboundGate | None = None
        self._nursery: trio.Nursery | None = None
        self.to_trio: Callable[..., None] = lambda fn, *args: None
        self.count = count  # a signal refused or ignored, by why
        self.budgets = budgets or reply_budgets()
        self._replies: TokenBucket | None = None  # made on the trio run (its clock)
        self._courtesy: TokenBucket | None = None

    # --- life --------------------------------------------------------------------------------

    async def serve(self, gate: InboundGate, *,
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        if self.host_addresses is not None:
            _gather_only(self.host_addresses)
        # aiortc takes ~0.4 s to import: now, in a worker thread, not in the first dial.
        await trio.to_thread.run_sync(importlib.import_module, "hd_node.transports.webrtc.peer")
        self.thread.start()
        try:
            async with trio.open_nursery() as n:
                self._gate, self._nursery, self.to_trio = gate, n, trio_caller()
                now = _now_ms()
                self._replies = TokenBucket(*self.budgets[0], now)
                self._courtesy = TokenBucket(*self.budgets[1], now)
                log.info("webrtc transport ready ice_servers=%d policy=%s",
                         len(self.ice.servers), self.ice.policy)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                with trio.move_on_after(CLOSE_TIMEOUT_S + 1):
                    for link in list(self.links.values()):
                        await link.aclose(1001, "shutdown")
                await self.thread.stop()

    async def release(self, link: WebRtcLink) -> None:
        """A link is closing: forget its attempt, tell the peer, close the connection."""
        key = (link.peer, link.sid)
        if self.links.get(key) is link:
            del self.links[key]
        self.signaling.ended(link.peer, link.sid)
        if link.signalled and not link.reason.startswith("bye"):
            self.send_signal(link.peer, link.sid, "bye", "")
        rtc, link.rtc = link.rtc, None
        if rtc is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                try:
                    await self.thread.run(rtc.close)
                except Exception as exc:
                    log.info("webrtc close failed peer=%s: %s", link.peer, exc)

    # --- signals from the lobby ---------------------------------------------------------------

    def on_signal(self, peer: str, sid: str, kind: str, sdp: str) -> None:
        """A ``signal`` the lobby delivered (called from the lobby's reader)."""
        if self._nursery is None:
            return
        try:
            outs = self.signaling.receive(peer, sid, kind, sdp)
        except RemoteProtocolError as exc:
            log.info("webrtc signal dropped peer=%s code=%s", peer, exc.code)
            self.count(exc.code)
            return
        for out in outs:
            key = (out.peer, out.sid)
            if isinstance(out, Accept):
                self._accept(out)
            elif isinstance(out, Answered | Dropped):
                offer = self._offers.get(key)
                if offer is not None:
                    if isinstance(out, Answered):
                        offer.answer = out.sdp
                    else:
                        log.info("webrtc glare peer=%s kept=theirs sid=%s", peer, out.for_sid)
                        offer.lost_to = out.for_sid
                    offer.wake.set()
            elif isinstance(out, SendBye):  # an answer to no offer of ours (any more)
                sent = self._courtesy_bye(out.peer, out.sid)
                log.info("webrtc signal ignored peer=%s sid=%s reason=no_offer bye=%s", peer,
                         sid, sent)
                self.count("no_offer")
            elif isinstance(out, Closed):
                link = self.links.get(key)
                if link is not None:
                    link.lost("bye from the peer")
                if (offer := self._offers.get(key)) is not None:
                    offer.wake.set()
            elif isinstance(out, Ignored):
                log.info("webrtc signal ignored peer=%s sid=%s reason=%s%s", peer, sid,
                         out.reason, " kept=ours" if out.reason == "glare" else "")
                if out.reason != "glare":  # glare is the protocol at work, not a refusal
                    self.count(out.reason)

    def _courtesy_bye(self, peer: str, sid: str) -> bool:
        """A bye for a signal that opened nothing, if the budget allows it."""
        assert self._courtesy is not None
        return self._courtesy.take(_now_ms()) and self.send_signal(peer, sid, "bye", "")

    def _accept(self, out: Accept) -> None:
        assert self._gate is not None and self._nursery is not None
        assert self._replies is not None
        ticket = self._gate.reserve(address_for(out.peer))
        if ticket is None:  # SPEC 4: past the handshakes in flight
            sent = self._courtesy_bye(out.peer, out.sid)
            log.info("webrtc offer refused peer=%s sid=%s reason=busy bye=%s", out.peer,
                     out.sid, sent)
            self.signaling.ended(out.peer, out.sid)
            self.count("busy")
            return
        if not self._replies.take(_now_ms(), 2):  # its answer, and the bye that ends it
            log.info("webrtc offer refused peer=%s sid=%s reason=rate", out.peer, out.sid)
            ticket.release()
            self.signaling.ended(out.peer, out.sid)
            self.count("rate")
            return
        link = self.links[(out.peer, out.sid)] = WebRtcLink(self, out.peer, out.sid, "answerer")
        self._nursery.start_soon(self._answer, link, out.sdp, ticket)

    async def _answer(self, link: WebRtcLink, offer: str, ticket: Ticket) -> None:
        from .peer import Peer

        t0 = trio.current_time()
        handed = False
        try:
            try:
                with trio.fail_after(self.connect_timeout_s):
                    link.rtc = await self.thread.run(Peer.create, self.ice, link.events)
                    answer = await self.thread.run(link.rtc.answer, offer)
                    if link.gone.is_set():  # the peer said bye meanwhile: nobody to answer
                        raise LinkClosed(link.reason)
                    if not self.send_signal(link.peer, link.sid, "answer", answer):
                        raise LinkClosed("no lobby connection to answer through")
                    link.signalled = True
                    await link.wait_open()
            except Exception as exc:  # aiortc's errors, a timeout, the link gone
                log.info("webrtc answer failed peer=%s sid=%s reason=%s", link.peer, link.sid,
                         "timeout" if isinstance(exc, trio.TooSlowError)
                         else str(exc) or type(exc).__name__)
                return
            log.info("webrtc link open peer=%s sid=%s role=answerer ms=%d", link.peer,
                     link.sid, (trio.current_time() - t0) * 1000)
            assert self._gate is not None
            handed = True
            await self._gate.accept(link, ticket)  # the link's whole life
        finally:
            if not handed:
                ticket.release()
            with trio.CancelScope(shield=True):
                await link.aclose()

    # --- dialling -----------------------------------------------------------------------------

    async def open(self, candidate: DialCandidate, *, timeout_s: float,
                   peer_id: str | None = None) -> Link:
        try:
            peer = peer_of(candidate.address)
        except LocalProtocolError as exc:
            raise DialFailed("bad_address", exc.message) from None
        if peer_id is not None and peer != peer_id:
            raise DialFailed("bad_address", "the webrtc address names another node")
        if self._nursery is None or not self.thread.running:
            raise DialFailed("unsupported", "the webrtc transport is not running")
        for other in self.signaling.attempts_with(peer):
            if (under_way := self.links.get((peer, other))) is not None:
                # One link per peer: the one already being made (either way) is it.
                log.info("webrtc dial waits for the link under way peer=%s sid=%s role=%s",
                         peer, other, under_way.role)
                with trio.move_on_after(min(timeout_s, self.connect_timeout_s)):
                    await under_way.settled.wait()
                raise DialFailed("duplicate", "a webrtc link with that node was under way")
        sid = new_sid(self.rng)
        key = (peer, sid)
        self.signaling.offer(peer, sid)
        offer = self._offers[key] = _Offer()
        link = self.links[key] = WebRtcLink(self, peer, sid, "offerer")
        t0 = trio.current_time()
        try:
            with trio.fail_after(min(timeout_s, self.connect_timeout_s)):
                await self._offer(link, offer)
                if offer.lost_to is not None:
                    await link.aclose(1000, "glare")
                    await self._glare_lost(peer, offer.lost_to)
                await self.thread.run(link.rtc.accept, offer.answer)
                await link.wait_open()
        except DialFailed:
            raise
        except trio.TooSlowError:
            raise DialFailed("timeout", "no webrtc data channel within the deadline") from None
        except Exception as exc:  # aiortc's errors, the link gone, the loop stopped
            raise DialFailed("unreachable", f"webrtc: {exc}") from None
        finally:
            self._offers.pop(key, None)
            if not link.opened.is_set() or link.gone.is_set():
                with trio.CancelScope(shield=True):
                    await link.aclose()
        log.info("webrtc link open peer=%s sid=%s role=offerer ms=%d", peer, sid,
                 (trio.current_time() - t0) * 1000)
        return link

    async def _offer(self, link: WebRtcLink, offer: _Offer) -> None:
        """Make and send our offer, then wait for its answer (or the glare's end)."""
        from .peer import Peer

        link.rtc = await self.thread.run(Peer.create, self.ice, link.events)
        sdp = await self.thread.run(link.rtc.offer)
        if offer.lost_to is not None:
            return  # the peer's offer came while we gathered, and it wins
        if not self.send_signal(link.peer, link.sid, "offer", sdp):
            raise DialFailed("unreachable", "no lobby connection to signal through")
        link.signalled = True
        while offer.answer is None and offer.lost_to is None:
            if link.gone.is_set():
                raise DialFailed("unreachable", f"webrtc: {link.reason}")
            offer.wake = trio.Event()
            await offer.wake.wait()

    async def _glare_lost(self, peer: str, their_sid: str) -> None:
        """Our offer lost the glare: the link the peer offered is the one. Wait until it
        authenticated (or failed), then say so; the connector picks up that session."""
        inbound = self.links.get((peer, their_sid))
        if inbound is not None:
            await inbound.settled.wait()
        raise DialFailed("duplicate", "the peer's simultaneous offer won (glare)")


def _now_ms() -> int:
    return int(trio.current_time() * 1000)


def _gather_only(addresses: list[str]) -> None:
    """ICE host candidates from exactly these addresses (aioice never gathers loopback:
    a node bound to loopback, like a test's, must offer only that, SPEC 8.1)."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addresses)
