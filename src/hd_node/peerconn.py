"""Driving one link: the handshake, then the session loop.

Read -> feed the hd_protocol machine -> write what it returns -> sleep until its
deadline. The inbound queue is bounded (SPEC 5: 256 envelopes); when it is full the
reader stops reading the link, so a fast peer is slowed down, never silently dropped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from hd_protocol import Acceptor, Decision, Dialer, Identity, Session
from hd_protocol import handshake as hs
from hd_protocol import session as ss

log = logging.getLogger("hd_node.peer")


def now_ms() -> int:
    return int(time.time() * 1000)


def trio_deadline(deadline_ms: int | None) -> float:
    if deadline_ms is None:
        return float("inf")
    return trio.current_time() + max(0, deadline_ms - now_ms()) / 1000


class Link(Protocol):
    remote_addr: str | None

    async def send(self, text: str) -> None: ...

    async def receive(self) -> str | bytes: ...

    async def close(self, code: int = 1000) -> None: ...


class HandshakeFailed(Exception):
    def __init__(self, reason: str, message: str = "", remote: bool = False) -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message
        self.remote = remote
        self.peer_id: str | None = None  # who answered, once its hello was verified


Admit = Callable[[hs.NeedAdmission], Decision]


async def run_handshake(
    link: Link, machine: Dialer | Acceptor, admit: Admit
) -> hs.HandshakeResult:
    """Run ``machine`` over ``link`` until Established (returned) or Failed (raised)."""
    from .links import LinkClosed

    work: deque[hs.Output] = deque()
    if isinstance(machine, Dialer):
        work.extend(machine.start(now_ms()))
    while True:
        while work:
            out = work.popleft()
            if isinstance(out, hs.Send):
                try:
                    await link.send(out.wire)
                except LinkClosed:
                    if isinstance(machine, Acceptor) and machine.failure is not None:
                        continue
                    raise HandshakeFailed("closed", "link closed during handshake") from None
            elif isinstance(out, hs.NeedAdmission):
                work.extend(machine.admit(admit(out), now_ms()))
            elif isinstance(out, hs.Established):
                return out.result
            elif isinstance(out, hs.Failed):
                if work:  # an auth_result refusal still has to go out first
                    rest = [o for o in work if isinstance(o, hs.Send)]
                    for o in rest:
                        try:
                            await link.send(o.wire)
                        except LinkClosed:
                            break
                raise HandshakeFailed(out.reason, out.message, out.remote)
        frame: str | bytes | None = None
        with trio.move_on_at(trio_deadline(machine.next_deadline())):
            try:
                frame = await link.receive()
            except LinkClosed:
                raise HandshakeFailed("closed", "link closed during handshake") from None
        if frame is None:
            work.extend(machine.on_timer(now_ms() + 1))
        else:
            work.extend(machine.receive(frame, now_ms()))


@dataclass
class Waiter:
    event: trio.Event
    result: ss.Reply | ss.Timeout | None = None


class ConnOwner(Protocol):
    """What a PeerConn reports to (the PeerHub)."""

    identity: Identity

    async def on_message(self, conn: PeerConn, msg: ss.Message) -> None: ...

    async def on_output(self, conn: PeerConn, out: ss.Output) -> None: ...

    def on_sent(self, conn: PeerConn, size: int) -> None: ...


class PeerConn:
    """One live session with one peer over one link."""

    def __init__(
        self,
        owner: ConnOwner,
        link: Link,
        session: Session,
        *,
        url: str | None,
        inbound_queue: int,
        ping_interval_ms: int,
    ) -> None:
        self.owner = owner
        self.link = link
        self.session = session
        self.url = url
        self.peer_id = session.peer_id
        self.ping_interval_ms = ping_interval_ms
        self.send_lock = trio.Lock()
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[str | bytes](inbound_queue)
        self._waiters: dict[str, Waiter] = {}
        self._wakeup = trio.Event()
        self.closed = trio.Event()
        self.close_reason = ""
        self.rtt_ms: int | None = None
        self.srtt_ms: float | None = None
        self.rttvar_ms: float | None = None
        self._cancel: trio.CancelScope | None = None

    # --- sending ----------------------------------------------------------------------

    async def _write(self, outs: Sequence[ss.Output]) -> None:
        from .links import LinkClosed

        for out in outs:
            if isinstance(out, ss.Send):
                try:
                    await self.link.send(out.wire)
                except LinkClosed:
                    self._finish("link closed")
                    return
                self.owner.on_sent(self, len(out.wire))
            else:
                await self.owner.on_output(self, out)

    async def send(
        self, type: str, data: dict[str, Any], *, re: str | None = None, msg_id: str | None = None
    ) -> str:
        # The lock makes seq order equal wire order (the receiver drops anything older).
        async with self.send_lock:
            mid, outs = self.session.send(type, data, now_ms(), re=re, msg_id=msg_id)
            await self._write(outs)
        return mid

    async def request(
        self, type: str, data: dict[str, Any], *, timeout_ms: int | None = None
    ) -> ss.Reply | ss.Timeout:
        async with self.send_lock:
            mid, outs = self.session.request(type, data, now_ms(), timeout_ms=timeout_ms)
            waiter = Waiter(trio.Event())
            self._waiters[mid] = waiter
            await self._write(outs)
        self._wakeup.set()  # the timer loop must see the new deadline
        try:
            with trio.move_on_at(trio_deadline(self.session.next_deadline()) + 5):
                await waiter.event.wait()
        finally:
            self._waiters.pop(mid, None)
        if waiter.result is None:
            return ss.Timeout(mid, type)
        return waiter.result

    async def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        async with self.send_lock:
            outs = self.session.close(reason, now_ms())
            with trio.move_on_after(2):
                await self._write([o for o in outs if isinstance(o, ss.Send)])
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()
        if self._cancel is not None:
            self._cancel.cancel()

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Until the session closes: reader, processor and timer tasks."""
        from .links import LinkClosed

        try:
            with trio.CancelScope() as scope:
                self._cancel = scope
                if self.closed.is_set():
                    scope.cancel()
                async with trio.open_nursery() as n:
                    n.start_soon(self._reader)
                    n.start_soon(self._processor)
                    n.start_soon(self._timer)
        finally:
            if not self.closed.is_set():
                self.close_reason = self.close_reason or "link closed"
                self.closed.set()
            for w in self._waiters.values():
                w.event.set()
            with trio.CancelScope(shield=True), contextlib.suppress(LinkClosed):
                await self.link.close()

    async def _reader(self) -> None:
        from .links import LinkClosed

        try:
            while True:
                frame = await self.link.receive()
                await self._inbox_send.send(frame)  # blocks when full: backpressure
        except LinkClosed:
            self._finish("link closed")

    async def _processor(self) -> None:
        async for frame in self._inbox_recv:
            async with self.send_lock:
                outs = self.session.receive(frame, now_ms())
                sends = [o for o in outs if isinstance(o, ss.Send)]
                await self._write(sends)
            for out in outs:
                await self._dispatch(out)
            if self.session.closed is not None:
                self._finish(self.session.closed.reason)
                return

    async def _dispatch(self, out: ss.Output) -> None:
        if isinstance(out, ss.Send):
            return
        if isinstance(out, ss.Message):
            try:
                await self.owner.on_message(self, out)
            except Exception:
                # A feature bug must not take the session (or the node) down with it.
                log.exception("handler failed peer=%s type=%s", self.peer_id, out.type)
            return
        if isinstance(out, ss.Reply | ss.Timeout):
            w = self._waiters.get(out.request_id)
            if w is not None:
                w.result = out
                w.event.set()
        if isinstance(out, ss.Pong):
            self._observe_rtt(out.rtt_ms)
        try:
            await self.owner.on_output(self, out)
        except Exception:
            log.exception("output handler failed peer=%s", self.peer_id)

    def _observe_rtt(self, rtt: int) -> None:
        # SPEC 6.4: RFC 6298 gains (alpha 1/8, beta 1/4).
        self.rtt_ms = rtt
        if self.srtt_ms is None or self.rttvar_ms is None:
            self.srtt_ms = float(rtt)
            self.rttvar_ms = rtt / 2
        else:
            self.rttvar_ms = 0.75 * self.rttvar_ms + 0.25 * abs(self.srtt_ms - rtt)
            self.srtt_ms = 0.875 * self.srtt_ms + 0.125 * rtt

    async def _timer(self) -> None:
        next_ping = now_ms() + self.ping_interval_ms
        while True:
            dl = self.session.next_deadline()
            wake = next_ping if dl is None else min(dl, next_ping)
            self._wakeup = trio.Event()
            with trio.move_on_at(trio_deadline(wake)):
                await self._wakeup.wait()
            now = now_ms()
            async with self.send_lock:
                outs: list[ss.Output] = list(self.session.on_timer(now))
                await self._write([o for o in outs if isinstance(o, ss.Send)])
            for out in outs:
                await self._dispatch(out)
            if self.session.closed is not None:  # e.g. too many unanswered pings
                self._finish(self.session.closed.reason)
                return
            if now >= next_ping:
                next_ping = now + self.ping_interval_ms
                async with self.send_lock:
                    if self.session.closed is None:
                        _, pouts = self.session.ping(now)
                        await self._write(pouts)
