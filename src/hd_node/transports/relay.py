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

Our own relay may be several instances of one relay (``relayUrl`` as a list, or the
relays beside the instances of our lobby: issue 19): one attachment serves them all, on
one instance at a time (``failover.Failover``); when its connection there is lost it
attaches at the next, and its virtual links go on through that one. A peer's relay
candidate naming any of them goes through that attachment too.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from hd_protocol import DEFAULT_LIMITS, DialCandidate, Envelope, Identity, reconnect_delay_ms
from hd_protocol.brokers.relay_client import (
    DIAL_TIMEOUT_MS,
    REDELIVER,
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

from ..failover import SWITCH_MS, Failover
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
    """Our attachment to one relay (on one of its instances): the machine's shell,
    carrying virtual links."""

    def __init__(self, transport: RelayTransport, urls: Sequence[str]) -> None:
        self.transport = transport
        self.ring = Failover(urls, transport.rng)
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
        self._moved = False  # the connection ends because we move to another instance
        self._attached_at: str | None = None  # the instance we last attached at
        self._nursery: trio.Nursery | None = None

    @property
    def url(self) -> str:
        """The instance in use (or being dialled)."""
        return self.ring.current

    def serve_urls(self, urls: Sequence[str]) -> None:
        """From now on this attachment is our own relay's, on any of ``urls``; it stays
        on the instance it is on."""
        self.ring = Failover(urls, self.transport.rng, start=self.url)

    def move_to(self, url: str) -> None:
        """Use the instance ``url`` (the lobby we follow moved): a connection elsewhere is
        let go and the attachment is made there."""
        if self.ring.move_to(url) and self._conn is not None:
            log.info("relay moves url=%s", url)
            self._moved = True
            self._conn.cancel()

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
        url = self.url
        with trio.CancelScope() as scope:
            self._conn = scope
            ws: WsLink | None = None
            try:
                ws = await dial_ws(url, timeout_s=DIAL_TIMEOUT_MS / 1000,
                                   max_message_size=t.max_frame, kind="relay")
                self.ws = ws
                await self._step(self.client.connected(mono_ms()))
                while True:
                    for raw in await ws.receive_some():
                        await self._step(self.client.receive(raw, mono_ms()))
            except (DialError, LinkClosed) as exc:
                log.info("relay connection lost url=%s reason=%s", url, exc)
            except Exception:  # a bug of ours: logged, and the attachment carries on
                log.exception("relay connection failed url=%s", url)
            finally:
                if ws is not None:
                    with trio.CancelScope(shield=True):
                        await ws.aclose(*self._close_with)
        closed_for = self._close_with[1]
        self._conn, self.ws, self._close_with = None, None, (1000, "")
        self.attached = trio.Event()
        self._changed.set()
        await self._step(self.client.disconnected(mono_ms(),
                                                  retry_in_ms=self._retry(url, closed_for)))

    def _retry(self, url: str, closed_for: str) -> int | None:
        """How soon to dial again when there are several instances (None: the machine's
        own backoff, as with one). A lost connection moves on to the next instance; one
        we closed to have the mailbox sent again (``redeliver``) does not."""
        if self._moved:
            self._moved = False
            return reconnect_delay_ms(0, self.transport.rng, base_ms=SWITCH_MS)
        if len(self.ring) == 1 or closed_for == REDELIVER:
            return None
        delay_ms = self.ring.lost()
        log.info("relay failover from=%s to=%s in_ms=%d", url, self.url, delay_ms)
        return delay_ms

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
                self.ring.up()
                self.attached.set()
                self._changed.set()
                if self._attached_at != self.url:  # at another instance: a new candidate
                    self._attached_at = self.url
                    if self.transport.own is self:
                        self.transport.on_move()
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
                 rng: Callable[[int], bytes],
                 default_url: Callable[[], str | Sequence[str] | None],
                 on_move: Callable[[], None] = lambda: None) -> None:
        """``default_url``: our own relay — one URL, or the instances of one relay, the
        first the one to use now (when it changes, we move there; else we stay where a
        failover took us); ``on_move``: our own relay attached at another instance (our
        relay candidate changed)."""
        self.identity = identity
        self.rng = rng
        self.limits = dataclasses.replace(DEFAULT_LIMITS, max_envelope_bytes=max_envelope_bytes)
        self.max_frame = max_envelope_bytes + 4096
        self.default_url = default_url
        self.on_move = on_move
        self.attachments: dict[str, Attachment] = {}  # by every URL one serves
        self.own: Attachment | None = None  # our own relay's
        self._wanted: tuple[str, ...] = ()  # what ``default_url`` said last
        self._gate: InboundGate | None = None
        self._nursery: trio.Nursery | None = None
        self._default_moved = trio.Event()

    def default_url_changed(self) -> None:
        """What ``default_url`` answers may have changed (the settings or the lobby we use
        moved): the transport attaches to it now."""
        self._default_moved.set()

    def own_url(self) -> str | None:
        """Our own relay's instance now (our relay candidate), if we have one."""
        if self.own is not None:
            return self.own.url
        wanted = _url_list(self.default_url())
        return wanted[0] if wanted else None

    def state(self) -> dict[str, Any]:
        own = self.own
        return {"url": self.own_url(), "urls": list(own.ring.urls) if own else [],
                "attached": own is not None and own.attached.is_set()}

    def attachment(self, url: str) -> Attachment:
        att = self.attachments.get(url)
        if att is None:
            att = self._start([url])
        return att

    def _start(self, urls: Sequence[str]) -> Attachment:
        assert self._nursery is not None, "the relay transport is not running"
        att = Attachment(self, urls)
        for url in urls:
            self.attachments.setdefault(url, att)
        self._nursery.start_soon(att.run)
        return att

    def _follow(self, urls: tuple[str, ...]) -> None:
        """Our own relay is now ``urls``, the first preferred: it moves when the first
        changed (the lobby we follow moved), not when the same list is read again."""
        before, self._wanted = self._wanted, urls
        moved = before[:1] != urls[:1]
        own = self.own
        if not urls:
            self.own = None  # its attachment stays: links may still go through it
        elif own is not None and set(urls) == set(own.ring.urls):
            if moved:
                own.move_to(urls[0])
        elif (att := self.attachments.get(urls[0])) is None:
            self.own = self._start(urls)
        else:  # an attachment made for a peer's candidate (or before) becomes our own
            att.serve_urls(urls)
            for url in [u for u, a in self.attachments.items() if a is att and u not in urls]:
                del self.attachments[url]
            for url in urls:
                self.attachments.setdefault(url, att)
            self.own = att

    async def serve(self, gate: InboundGate, *,
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            self._gate, self._nursery = gate, n
            task_status.started()
            while True:  # our own relay follows the settings (and the lobby we use)
                moved = self._default_moved = trio.Event()
                self._follow(_url_list(self.default_url()))
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


def _url_list(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)
