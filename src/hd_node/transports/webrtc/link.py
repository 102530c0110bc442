"""One WebRTC link: the ``hd-peer`` data channel as the link seam sees it (SPEC 8.4).

Envelopes arrive in order; fragments (over 60 000 bytes) are reassembled up to the
envelope size limit, within the pre-authentication budget until the handshake is done
(``authenticated``); a violation closes the link. What the asyncio side reports
(``open``, ``message``, ``closed``) is queued on the trio run in order, as calls to
``on_event``. The transport that made the link owns its peer connection: ``aclose``
hands the link back to it (``release``), which says ``bye`` and closes the connection.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from hd_protocol import Envelope
from hd_protocol.errors import RemoteProtocolError
from hd_protocol.reach.webrtc import Budget, Reassembler, address_for, fragment
from hd_shell.aiothread import AsyncioThread

from ..seam import LinkClosed

log = logging.getLogger("hd_node.webrtc")

QUEUE_BYTES = 8 << 20  # envelopes waiting for the link's reader before the link closes


class LinkOwner(Protocol):
    max_envelope_bytes: int
    preauth: Budget
    thread: AsyncioThread
    to_trio: Callable[..., None]

    async def release(self, link: WebRtcLink) -> None: ...


class WebRtcLink:
    """One ``hd-peer`` data channel: envelopes in order, fragments reassembled."""

    kind = "webrtc"

    def __init__(self, transport: LinkOwner, peer: str, sid: str, role: str) -> None:
        self.transport = transport
        self.peer, self.sid, self.role = peer, sid, role
        self.remote_addr: str | None = address_for(peer)
        self.rtc: Any = None  # webrtc_peer.Peer, on the asyncio thread
        self.signalled = False  # we sent an offer or answer under sid: the peer hears bye
        self._reasm = Reassembler(transport.max_envelope_bytes, transport.preauth)
        self._ready: deque[str] = deque()
        self._queued = 0
        self._wake = trio.Event()
        self.opened = trio.Event()  # set when the channel opens, or the link is gone
        self.settled = trio.Event()  # set when the handshake is done, or the link is gone
        self.gone = trio.Event()
        self.reason = ""
        self._closing = False
        to_trio = transport.to_trio

        def events(kind: str, value: Any) -> None:  # called on the asyncio thread
            to_trio(self.on_event, kind, value)

        self.events = events

    # --- what the asyncio side reports (run on trio, in order) -----------------------------

    def on_event(self, kind: str, value: Any) -> None:
        if self.gone.is_set():
            return
        if kind == "open":
            self.opened.set()
        elif kind == "message":
            self._message(value)
        elif kind == "closed":
            self.lost(str(value))

    def _message(self, message: str | bytes) -> None:
        try:
            env = self._reasm.receive(message)
        except RemoteProtocolError as exc:
            log.info("webrtc link violation peer=%s code=%s", self.peer, exc.code)
            self.lost(f"violation: {exc.code}")
            return
        if env is None:
            return
        self._ready.append(env)
        self._queued += len(env)
        if self._queued > QUEUE_BYTES:
            self.lost("inbound queue full")
            return
        self._wake.set()

    def lost(self, reason: str) -> None:
        """The link is unusable (closed by either side, broken, a violation)."""
        if not self.gone.is_set():
            self.reason = reason
            self.gone.set()
            self.opened.set()
            self.settled.set()
            self._wake.set()

    async def wait_open(self) -> None:
        await self.opened.wait()
        if self.gone.is_set():
            raise LinkClosed(f"the data channel did not open: {self.reason}")

    # --- Link -------------------------------------------------------------------------------

    async def receive_some(self) -> list[str | bytes | Envelope]:
        while not self._ready:
            if self.gone.is_set():
                raise LinkClosed(f"the webrtc link is closed: {self.reason}")
            self._wake = trio.Event()
            await self._wake.wait()
        out: list[str | bytes | Envelope] = list(self._ready)
        self._ready.clear()
        self._queued = 0
        return out

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        if self.gone.is_set() or self.rtc is None:
            raise LinkClosed(f"the webrtc link is closed: {self.reason}")
        parts = [p for m in messages for p in fragment(m)]
        try:
            await self.transport.thread.run(self.rtc.send, parts)
        except Exception as exc:  # aiortc's own errors, or the loop going away
            self.lost(f"send failed: {exc}")
            raise LinkClosed(f"the webrtc link is closed: {self.reason}") from None
        except BaseException:
            self.lost("write interrupted")  # what reached the channel is unknown now
            raise

    def authenticated(self) -> None:
        self._reasm.lift()
        self.settled.set()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self._closing:
            return
        self._closing = True
        self.lost(reason or "closed")
        await self.transport.release(self)


