"""One aiortc ``RTCPeerConnection`` and its ``hd-peer`` data channel (SPEC 8.4).

Everything here runs on the asyncio thread (``hd_shell.aiothread``); what happens to the
connection is reported through ``events(kind, value)`` — ``("open", None)``,
``("message", str | bytes)``, ``("closed", reason)`` — which the trio side turns into
calls on its own run. Imported only when the ``webrtc`` extra is installed.

The configuration is always explicit: the ICE servers the settings name, and none when
they name none (aiortc's default would reach a public STUN server).

A peer's description is checked (``remote``) before aiortc takes it: aiortc accepts some
that it then fails on in tasks of its own, where no caller hears of it (an uncaught
exception in the log, an attempt that lingers until its deadline) — one with no DTLS
fingerprint, a candidate port out of range, no data-channel section at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import aiortc
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from hd_protocol.reach.webrtc import LABEL, IceConfig, keep_candidates

# aiortc >= 1.10 has the ICE transport policy; before it, relay-only is enforced by
# dropping every other candidate from both descriptions.
_POLICY: Any = getattr(aiortc, "RTCIceTransportPolicy", None)
HIGH_WATER = 1 << 20  # queued bytes on the channel before a sender waits
LOW_WATER = 256 * 1024

Events = Callable[[str, Any], None]


def rtc_configuration(ice: IceConfig) -> RTCConfiguration:
    servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
               for s in ice.servers]
    if ice.policy == "relay" and _POLICY is not None:
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=_POLICY.RELAY)
    return RTCConfiguration(iceServers=servers)


def remote(sdp: str) -> str:
    """``sdp`` if it is a description to connect to: a data-channel section, and on
    every section a DTLS fingerprint and candidates with ports in range; else
    ``ValueError`` (or aiortc's own parse error) now, before aiortc starts on it."""
    desc = SessionDescription.parse(sdp)
    if not any(m.kind == "application" for m in desc.media):
        raise ValueError("no data channel in the description")
    for m in desc.media:
        if m.dtls is None or not m.dtls.fingerprints:
            raise ValueError("no DTLS fingerprint in the description")
        if any(not 0 < c.port < 65536 for c in m.ice_candidates):
            raise ValueError("a candidate port out of range")
    return sdp


class Peer:
    """Create with ``await Peer.create(...)`` on the loop; then ``offer`` + ``accept``
    (the offerer) or ``answer`` (the answerer), ``send``, ``close``."""

    def __init__(self, ice: IceConfig, events: Events) -> None:
        self.pc = RTCPeerConnection(configuration=rtc_configuration(ice))
        self._relay_only = ice.policy == "relay" and _POLICY is None
        self.events = events
        self.channel: Any = None
        self._low = asyncio.Event()
        self._closed = False
        self.pc.on("connectionstatechange", self._state)

    @classmethod
    async def create(cls, ice: IceConfig, events: Events) -> Peer:
        return cls(ice, events)  # built on the loop: aiortc binds its objects to it

    # --- offer / answer (non-trickle: the descriptions carry every candidate) ------------

    async def offer(self) -> str:
        ch = self.pc.createDataChannel(LABEL, ordered=True)
        ch.on("open", lambda: self._opened(ch))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self._local()

    async def answer(self, sdp: str) -> str:
        self.pc.on("datachannel", self._datachannel)
        await self.pc.setRemoteDescription(RTCSessionDescription(remote(self._filter(sdp)),
                                                                 "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self._local()

    async def accept(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(remote(self._filter(sdp)),
                                                                 "answer"))

    def _local(self) -> str:
        desc = self.pc.localDescription
        return self._filter(desc.sdp) if desc is not None else ""

    def _filter(self, sdp: str) -> str:
        return keep_candidates(sdp, frozenset({"relay"})) if self._relay_only else sdp

    # --- the channel ----------------------------------------------------------------------

    def _datachannel(self, ch: Any) -> None:
        # One ordered, reliable channel with our label; anything else is not hd.
        if (self.channel is not None or ch.label != LABEL or not ch.ordered
                or ch.maxRetransmits is not None or ch.maxPacketLifeTime is not None):
            self._fail("unexpected data channel")
            return
        self._opened(ch)

    def _opened(self, ch: Any) -> None:
        if self._closed:
            return
        self.channel = ch
        ch.bufferedAmountLowThreshold = LOW_WATER
        ch.on("message", lambda m: self.events("message", m))
        ch.on("close", lambda: self._fail("data channel closed"))
        ch.on("bufferedamountlow", self._low.set)
        self.events("open", None)

    def _state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._fail(f"connection {self.pc.connectionState}")

    def _fail(self, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self.events("closed", reason)  # the trio side then closes the connection

    async def send(self, messages: Sequence[str | bytes]) -> None:
        """Queue messages on the channel; wait while more than ``HIGH_WATER`` is queued
        (the caller's write deadline bounds the wait)."""
        ch = self.channel
        if ch is None or self._closed or ch.readyState != "open":
            raise ConnectionError("the data channel is not open")
        for m in messages:
            ch.send(m)
        while ch.bufferedAmount > HIGH_WATER:
            self._low.clear()
            await self._low.wait()
            if self._closed:
                raise ConnectionError("the data channel closed")

    async def close(self) -> None:
        self._closed = True
        await self.pc.close()
