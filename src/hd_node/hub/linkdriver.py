"""Driving one link: a reader, one writer and a timer around one ``Connection``.

The protocol lives in ``hd_protocol.peer.connection``; this only moves bytes and keeps time:

- the **reader** waits for frames, feeds them to the connection and hands whatever
  happened to the owner, synchronously, then wakes the writer. It never waits on the
  writer: a peer that does not read can stall our writes, never our processing;
- the one **writer** pulls ``frames_to_send()`` and writes them in batches, each under
  a deadline; a link whose writes stay stuck past it is closed (``write_timeout``);
- the **timer** sleeps until ``next_deadline()`` and fires it (pings, request
  deadlines, the handshake deadline).

Events leave the connection in one place, ``_drain``, one event at a time and never
recursively (as aioquic's shell does it: a user call only queues). A call the owner
makes from inside a handler (``send``, ``close``, ``request``...) only queues on the
connection; whatever event it causes (a ``Closed``) is handed out by the drain loop
already running, after the handler returns and after every event queued before it.
A call from outside any handler (a tab's command, the connector giving up) drains at
once, so its caller sees the outcome on return. The drain is synchronous and trio runs
one task at a time, so "a drain is running" can only mean "further up this call stack".

The outbound queue is the connection's pending frames plus the batch being written.
It is bounded: ``send`` past ``hard_limit`` bytes closes the link (``send_queue_full``:
the session reconnects and catches up, nothing accepted is lost), and producers that
can wait — a tab's command, a catch-up after (re)connecting — wait for the queue to
fall below ``soft_limit`` (``wait_room``) before they queue more.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from hd_protocol import Decision, DialCandidate
from hd_protocol.peer.connection import (
    Closed,
    Connection,
    Established,
    Event,
    HandshakeFailed,
    Message,
    NeedAdmission,
    Reply,
    State,
    Timeout,
)
from hd_shell.clock import mono_ms, trio_deadline, wall_ms

from ..transports.seam import Link, LinkClosed

log = logging.getLogger("hd_node.link")

ReplyResult = Reply | Timeout
READ_SLICE = 16  # frames processed between yields (see _reader)


@dataclass(frozen=True)
class LinkLimits:
    """Outbound queue bounds and deadlines of one link (bytes and seconds)."""

    soft_limit: int = 2 * 1024 * 1024
    hard_limit: int = 16 * 1024 * 1024
    write_timeout_s: float = 10.0
    flush_timeout_s: float = 2.0  # to get the last frames (bye, a refusal) out


class LinkOwner(Protocol):
    """What a driver reports to (the session registry). Every call is synchronous:
    the driver never awaits its owner, so the owner can never stall a link."""

    def decide(self, driver: LinkDriver, need: NeedAdmission) -> Decision: ...

    def established(self, driver: LinkDriver) -> None: ...

    def message(self, driver: LinkDriver, msg: Message) -> None: ...

    def event(self, driver: LinkDriver, ev: Event) -> None: ...

    def ended(self, driver: LinkDriver) -> None: ...

    def sent(self, driver: LinkDriver, frames: int, nbytes: int) -> None: ...

    def batch(self) -> AbstractContextManager[Any]: ...


class LinkBusy(Exception):
    """The link's outbound queue is over its hard limit: the link is being closed."""


class LinkDriver:
    """One ``Connection`` over one ``Link``, from its first frame to its last."""

    def __init__(
        self,
        link: Link,
        conn: Connection,
        owner: LinkOwner,
        *,
        limits: LinkLimits = LinkLimits(),
        candidate: DialCandidate | None = None,
    ) -> None:
        self.link = link
        self.conn = conn
        self.owner = owner
        self.limits = limits
        self.candidate = candidate  # what we dialled (None: an inbound link)
        self.kind = link.kind
        self.established = trio.Event()
        self.finished = trio.Event()
        self.close_reason = ""
        self.registered = False  # the owner made it *the* session with its peer
        self._in_flight = 0
        self._writer_wake = trio.Event()
        self._timer_wake = trio.Event()
        self._room = trio.Event()
        self._timer_at: int | None = None
        self._waiters: dict[str, Callable[[ReplyResult | None], None]] = {}
        self._stop_writing = False
        self._draining = False  # _drain is on the stack (see the module docstring)
        self._write_scope: trio.CancelScope | None = None

    # --- views ------------------------------------------------------------------------

    @property
    def peer_id(self) -> str | None:
        return self.conn.peer_id

    @property
    def is_open(self) -> bool:
        return self.conn.state is State.OPEN

    @property
    def address(self) -> str | None:
        return self.candidate.address if self.candidate is not None else self.link.remote_addr

    @property
    def queued_bytes(self) -> int:
        return self.conn.pending_bytes + self._in_flight

    def has_room(self) -> bool:
        return self.queued_bytes < self.limits.soft_limit

    # --- sending (synchronous; see the module docstring) ------------------------------------

    def send(self, type: str, data: dict[str, Any], *, re: str | None = None,
             msg_id: str | None = None) -> str:
        """Seal and queue one envelope. ``LocalProtocolError("not_open")`` if the
        session is gone, ``LinkBusy`` past the hard limit (the link then closes)."""
        if self.queued_bytes > self.limits.hard_limit:
            self.close("send_queue_full")
            raise LinkBusy("the link's outbound queue is full")
        mid = self.conn.send(type, data, mono_ms(), wall_ms(), re=re, msg_id=msg_id)
        self._after()
        return mid

    def request(self, type: str, data: dict[str, Any],
                on_result: Callable[[ReplyResult | None], None], *,
                timeout_ms: int | None = None) -> str:
        """Queue a request; ``on_result`` gets its ``Reply`` or ``Timeout`` (at the
        request's own deadline), or ``None`` if the session ends first."""
        if self.queued_bytes > self.limits.hard_limit:
            self.close("send_queue_full")
            raise LinkBusy("the link's outbound queue is full")
        mid = self.conn.request(type, data, mono_ms(), wall_ms(), timeout_ms=timeout_ms)
        self._waiters[mid] = on_result
        self._after()
        return mid

    async def call(self, type: str, data: dict[str, Any], *,
                   timeout_ms: int | None = None) -> ReplyResult | None:
        """``request`` and wait for its outcome (the machine enforces the deadline)."""
        done = trio.Event()
        box: list[ReplyResult | None] = []

        def on_result(res: ReplyResult | None) -> None:
            box.append(res)
            done.set()

        mid = self.request(type, data, on_result, timeout_ms=timeout_ms)
        try:
            await done.wait()
        finally:
            if not box:  # cancelled: forget the request, drop a late reply
                self._waiters.pop(mid, None)
                self.conn.cancel_request(mid)
        return box[0]

    def reply_error(self, code: str, message: str, re: str) -> None:
        self.conn.reply_error(code, message, re, mono_ms(), wall_ms())
        self._after()

    async def wait_room(self) -> None:
        """Until the outbound queue is below the soft limit (or the link is done)."""
        while not self.has_room() and not self.finished.is_set() and self.is_open:
            self._room = trio.Event()
            await self._room.wait()

    def close(self, reason: str) -> None:
        """End the link on purpose: ``bye {reason}`` goes out, then the link closes."""
        if not self.close_reason:
            self.close_reason = reason
        self.conn.close(reason, mono_ms(), wall_ms())
        self._after()

    # --- the tasks ------------------------------------------------------------------------

    async def run(self) -> None:
        """The link's whole life. Returns once the link is closed."""
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._guarded, self._reader)
                n.start_soon(self._guarded, self._timer)
                await self._guarded(self._writer)
                n.cancel_scope.cancel()
        finally:
            if self.conn.state is not State.CLOSED:
                self.conn.link_lost("link closed")
                self._drain()
            for cb in self._waiters.values():
                cb(None)
            self._waiters.clear()
            self._room.set()
            with trio.CancelScope(shield=True):
                await self.link.aclose(1000)
            self.finished.set()
            self.owner.ended(self)

    async def _guarded(self, task: Callable[[], Awaitable[None]]) -> None:
        """A bug of ours in one link ends that link, loudly, never the node."""
        try:
            await task()
        except Exception:
            log.exception("link task failed peer=%s: closing the link", self.peer_id or "-")
            self._lost("internal_error")

    async def _reader(self) -> None:
        try:
            while self.conn.state is not State.CLOSED:
                frames = await self.link.receive_some()
                for start in range(0, len(frames), READ_SLICE):
                    if start:
                        # Let the writer send what the last slice produced while we
                        # go on: both ends then work in parallel instead of taking
                        # turns over whole batches.
                        await trio.lowlevel.checkpoint()
                    now, wall = mono_ms(), wall_ms()
                    with self.owner.batch():
                        for frame in frames[start:start + READ_SLICE]:
                            self.conn.receive(frame, now, wall)
                            self._drain()
                            if not self._live():
                                break
                    self._kick()
                    if not self._live():
                        break
        except LinkClosed:
            self._lost("link closed")

    async def _writer(self) -> None:
        while True:
            frames = self.conn.frames_to_send()
            if frames and not self._stop_writing:
                closing = self.conn.state is State.CLOSED
                nbytes = self._in_flight = sum(len(f) for f in frames)
                deadline = self.limits.flush_timeout_s if closing else self.limits.write_timeout_s
                with trio.move_on_after(deadline) as scope:
                    self._write_scope = scope
                    try:
                        await self.link.send_many(frames)
                    except LinkClosed:
                        self._in_flight = 0
                        self._lost("link closed")
                        return
                    finally:
                        self._write_scope = None
                self._in_flight = 0
                self._room.set()
                if not scope.cancelled_caught:
                    self.owner.sent(self, len(frames), nbytes)
                else:
                    log.info("link stuck peer=%s: no write for %.1f s, closing",
                             self.peer_id or "-", deadline)
                    self._lost("write_timeout")
                    return
                continue
            if self.conn.state is State.CLOSED:
                return
            self._writer_wake = trio.Event()
            await self._writer_wake.wait()

    async def _timer(self) -> None:
        while self.conn.state is not State.CLOSED:
            self._timer_at = dl = self.conn.next_deadline()
            self._timer_wake = trio.Event()
            with trio.move_on_at(trio_deadline(dl)):
                await self._timer_wake.wait()
            now = mono_ms()
            if dl is not None and now >= dl - 1:
                # Woken by the deadline: it has passed, whatever the ms rounding says.
                with self.owner.batch():
                    self.conn.handle_timer(max(now, dl), wall_ms())
                    self._drain()
                self._kick()

    # --- internals ------------------------------------------------------------------------

    def _live(self) -> bool:
        # A method, not an inline check: mypy narrows ``conn.state`` across the calls
        # above that change it.
        return self.conn.state is not State.CLOSED

    def _after(self) -> None:
        """After any call into the connection: hand out events (unless a drain is
        already running: it will), wake who must act."""
        self._drain()
        self._kick()

    def _kick(self) -> None:
        if self.conn.pending_frames or self.conn.state is State.CLOSED:
            self._writer_wake.set()
        dl = self.conn.next_deadline()
        if dl != self._timer_at and (self._timer_at is None or dl is None or dl < self._timer_at
                                     or self.conn.state is State.CLOSED):
            self._timer_wake.set()

    def _lost(self, reason: str) -> None:
        """The link is unusable: end the connection without sending anything."""
        self._stop_writing = True
        if not self.close_reason:
            self.close_reason = reason
        self.conn.link_lost(reason)
        self._drain()
        self._writer_wake.set()
        self._timer_wake.set()

    def _drain(self) -> None:
        """Hand out every queued event, oldest first: the one place that does.

        Re-entered from a handler (through ``send``, ``close``...), it returns at once:
        the loop further up the stack hands out what that call queued, after the
        handler has finished. A handler that raises leaves the rest queued for the next
        drain (``_guarded`` then loses the link, which drains it)."""
        if self._draining:
            return
        self._draining = True
        try:
            while (ev := self.conn.next_event()) is not None:
                self._on_event(ev)
        finally:
            self._draining = False

    def _on_event(self, ev: Event) -> None:
        owner = self.owner
        if isinstance(ev, Message):
            owner.message(self, ev)
        elif isinstance(ev, Reply | Timeout):
            cb = self._waiters.pop(ev.request_id, None)
            if cb is not None:
                cb(ev)
            owner.event(self, ev)
        elif isinstance(ev, NeedAdmission):
            self.conn.admit(owner.decide(self, ev), mono_ms(), wall_ms())
        elif isinstance(ev, Established):
            self.link.authenticated()  # the pre-authentication budget is over
            self.established.set()
            owner.established(self)
        elif isinstance(ev, Closed | HandshakeFailed):
            if not self.close_reason:
                self.close_reason = ev.reason
            for cb in self._waiters.values():
                cb(None)
            self._waiters.clear()
            self._room.set()
            self.established.set()  # whoever waits for the handshake: it is over
            scope = self._write_scope
            if scope is not None:  # a stuck write gets only the flush deadline now
                scope.deadline = min(scope.deadline,
                                     trio.current_time() + self.limits.flush_timeout_s)
            owner.event(self, ev)
        else:
            owner.event(self, ev)


def no_batch() -> AbstractContextManager[Any]:
    return nullcontext()
