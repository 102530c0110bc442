"""The relay transport (SPEC 7.7, 8.1): sessions through a relay broker, on the link seam.

The node's side of the relay protocol is ``hd_protocol.brokers.relay_client.RelayClient``: when
to dial, the attach, routing what arrives, and which stored envelopes to acknowledge.
This module is its shell: one ``Attachment`` per relay URL runs the machine (its timers
wake on the machine's own deadline, not on a poll), dials the WebSocket it asks for,
writes what it sends, and hands each ``Deliver`` to a *virtual link*, one per peer.

What a link sends becomes ``relay {to: peer, envelope}``; what arrives from a peer is
that peer's link's input. The handshake and the sealed session run on a virtual link
exactly as on a WebSocket — the relay sees types, ids and sizes, never a payload, and
cannot forge, re-address or replay anything the session would accept. A virtual link
outlives a reconnect to its relay. A stored envelope is acknowledged only once its link
took it: one its link had no room for yet stays held (or in the relay's mailbox) and is
offered again. A ``relay`` from a peer we have no link with opens an inbound one, but
only with a ``hello``, and only when the hub has a handshake slot for it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from hd_protocol import DEFAULT_LIMITS, DialCandidate, Envelope, Identity
from hd_protocol.brokers.relay_client import (
    DIAL_TIMEOUT_MS,
    Attached,
    Close,
    Deliver,
    Dial,
    Dropped,
    Output,
    Queued,
    RelayClient,
    RelayError,
)
from hd_protocol.effects import Send
from hd_protocol.errors import LocalProtocolError
from hd_shell.clock import mono_ms, trio_deadline
from hd_shell.ws.link import DialError, WsLink, dial_ws

from .seam import DialFailed, InboundGate, Link, LinkClosed

log = logging.getLogger("hd_node.relay")

LINK_QUEUE = 256  # envelopes waiting for a virtual link's reader; then the machine holds


class RelayLink:
    """One peer's virtual link through one attachment."""

    kind = "relay"

    def __init__(self, att: Attachment, peer: str) -> None:
        self.att = att
        self.peer = peer
        self.remote_addr: str | None = f"relay:{peer}"
        self._send, self._recv = trio.open_memory_channel[Envelope](LINK_QUEUE)
        self.closed = False

    def feed(self, env: Envelope) -> bool:
        """An envelope for this link; False if its reader is behind or it is gone."""
        if self.closed:
            return False
        try:
            self._send.send_nowait(env)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def receive_some(self) -> list[str | bytes | Envelope]:
        try:
            out: list[str | bytes | Envelope] = [await self._recv.receive()]
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise LinkClosed("the virtual link is closed") from None
        while True:
            try:
                out.append(self._recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return out

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        if self.closed:
            raise LinkClosed("the virtual link is closed")
        await self.att.send(self.peer, messages)

    def authenticated(self) -> None:
        pass

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self._send.close()
            self.att.link_closed(self)


class Attachment:
    """Our attachment to one relay: the machine's shell, carrying virtual links."""

    def __init__(self, transport: RelayTransport, url: str) -> None:
        self.transport = transport
        self.url = url
        self.client = RelayClient(transport.identity, rng=transport.rng,
                                  limits=transport.limits)
        self.links: dict[str, RelayLink] = {}
        self.ws: WsLink | None = None
        self.attached = trio.Event()
        self._write_lock = trio.Lock()
        self._changed = trio.Event()  # set when the connection comes or goes
        self._wake = trio.Event()  # set when the machine's deadline may have moved
        self._conn: trio.CancelScope | None = None
        self._close_with: tuple[int, str] = (1000, "")
        self._nursery: trio.Nursery | None = None

    # --- links ---------------------------------------------------------------------------

    def new_link(self, peer: str) -> RelayLink:
        link = self.links[peer] = RelayLink(self, peer)
        self.client.open_link(peer)
        return link

    def link_closed(self, link: RelayLink) -> None:
        if self.links.get(link.peer) is link:
            del self.links[link.peer]
            self.client.close_link(link.peer, mono_ms())
            self._wake.set()

    async def send(self, peer: str, messages: Sequence[str | bytes]) -> None:
        """Write a link's envelopes; waits (the caller's write deadline bounds it) while
        the relay connection is down — a reconnect resumes it."""
        if not messages:
            return
        while True:
            ws = self.ws
            if ws is not None and self.client.attached:
                try:
                    frames = [o.wire for o in self.client.send(peer, messages)]
                except LocalProtocolError:
                    frames = []
                if frames:
                    async with self._write_lock:
                        try:
                            await ws.send_many(frames)
                            return
                        except LinkClosed:
                            pass
            self._changed = trio.Event()
            await self._changed.wait()

    # --- the machine's shell ---------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as n:
            self._nursery = n
            while True:  # wakes on the machine's deadline, or when another task moved it
                self._wake = trio.Event()
                await self._apply(self.client.on_timer(mono_ms()))
                with trio.move_on_at(trio_deadline(self.client.next_deadline())):
                    await self._wake.wait()

    async def _step(self, outs: list[Output]) -> None:
        """Outputs from a task other than ``run``: applied, then ``run`` looks again at
        the deadline (``run``'s own outputs must not wake it: it would never sleep)."""
        await self._apply(outs)
        self._wake.set()

    async def _connection(self) -> None:
        t = self.transport
        with trio.CancelScope() as scope:
            self._conn = scope
            ws: WsLink | None = None
            try:
                ws = await dial_ws(self.url, timeout_s=DIAL_TIMEOUT_MS / 1000,
                                   max_message_size=t.max_frame, kind="relay")
                self.ws = ws
                await self._step(self.client.connected(mono_ms()))
                while True:
                    for raw in await ws.receive_some():
                        await self._step(self.client.receive(raw, mono_ms()))
            except (DialError, LinkClosed) as exc:
                log.info("relay connection lost url=%s reason=%s", self.url, exc)
            except Exception:  # a bug of ours: logged, and the attachment carries on
                log.exception("relay connection failed url=%s", self.url)
            finally:
                if ws is not None:
                    with trio.CancelScope(shield=True):
                        await ws.aclose(*self._close_with)
        self._conn, self.ws, self._close_with = None, None, (1000, "")
        self.attached = trio.Event()
        self._changed.set()
        await self._step(self.client.disconnected(mono_ms()))

    async def _apply(self, outs: list[Output]) -> None:
        for o in outs:
            if isinstance(o, Send):
                await self._write(o.wire)
            elif isinstance(o, Deliver):
                taken = self._deliver(o)
                await self._apply(self.client.delivered(o, taken, mono_ms()))
            elif isinstance(o, Dial):
                assert self._nursery is not None
                self._nursery.start_soon(self._connection)
            elif isinstance(o, Close):
                log.info("relay connection closed url=%s reason=%s", self.url, o.reason)
                self._close_with = (o.code, o.reason)
                if self._conn is not None:
                    self._conn.cancel()
            elif isinstance(o, Attached):
                log.info("relay attached url=%s queued=%s", self.url, o.queued)
                self.attached.set()
                self._changed.set()
            elif isinstance(o, RelayError):
                log.info("relay error url=%s code=%s", self.url, o.code)
            elif isinstance(o, Dropped):
                log.info("relay frame dropped url=%s code=%s", self.url, o.code)
            elif isinstance(o, Queued):
                log.debug("relay stored an envelope for later url=%s", self.url)

    async def _write(self, wire: str) -> None:
        ws = self.ws
        if ws is None:
            return  # the connection went: the machine hears ``disconnected``
        async with self._write_lock:
            try:
                await ws.send_many([wire])
            except LinkClosed:
                pass

    def _deliver(self, d: Deliver) -> int:
        """Hand ``d`` to its peer's link, in order; how many it took."""
        link = self.links.get(d.peer)
        if link is None:
            if not d.opens:
                return 0
            link = self.transport.inbound(self, d.peer)
            if link is None:
                return 0  # no handshake slot now: the machine offers it again later
        taken = 0
        for it in d.items:
            if not link.feed(it.envelope):
                break
            taken += 1
        return taken


class RelayTransport:
    kind = "relay"
    remembers_addresses = False

    def __init__(self, identity: Identity, *, max_envelope_bytes: int,
                 rng: Callable[[int], bytes], default_url: Callable[[], str | None]) -> None:
        self.identity = identity
        self.rng = rng
        self.limits = dataclasses.replace(DEFAULT_LIMITS, max_envelope_bytes=max_envelope_bytes)
        self.max_frame = max_envelope_bytes + 4096
        self.default_url = default_url
        self.attachments: dict[str, Attachment] = {}
        self._gate: InboundGate | None = None
        self._nursery: trio.Nursery | None = None
        self._default_moved = trio.Event()

    def default_url_changed(self) -> None:
        """What ``default_url`` answers may have changed (the settings or the lobby we use
        moved): the transport attaches to it now."""
        self._default_moved.set()

    def attachment(self, url: str) -> Attachment:
        att = self.attachments.get(url)
        if att is None:
            assert self._nursery is not None, "the relay transport is not running"
            att = self.attachments[url] = Attachment(self, url)
            self._nursery.start_soon(att.run)
        return att

    async def serve(self, gate: InboundGate, *,
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            self._gate, self._nursery = gate, n
            task_status.started()
            while True:  # our own relay follows the settings (and the lobby we use)
                moved = self._default_moved = trio.Event()
                url = self.default_url()
                if url:
                    self.attachment(url)
                await moved.wait()

    async def open(self, candidate: DialCandidate, *, timeout_s: float,
                   peer_id: str | None = None) -> Link:
        if peer_id is None:
            raise DialFailed("bad_address", "a relay link needs the node id it goes to")
        if self._nursery is None:
            raise DialFailed("unsupported", "the relay transport is not running")
        att = self.attachment(candidate.address)
        with trio.move_on_after(timeout_s):
            await att.attached.wait()
        if not att.attached.is_set():
            raise DialFailed("unreachable", f"cannot attach to the relay {candidate.address}")
        old = att.links.get(peer_id)
        if old is not None:
            await old.aclose()
        return att.new_link(peer_id)

    def inbound(self, att: Attachment, peer: str) -> RelayLink | None:
        """A peer's ``hello`` with no link yet: a new inbound link, if the hub has room."""
        if self._gate is None or self._nursery is None:
            return None
        ticket = self._gate.reserve(f"relay:{peer}")
        if ticket is None:
            return None
        link = att.new_link(peer)
        self._nursery.start_soon(self._gate.accept, link, ticket)
        return link
