"""Frames in and out for a server machine that speaks in connection ids.

The lobby and the relay broker are each one sans-IO machine for all their connections
(``hd_protocol.brokers.lobby.LobbyServer``, ``hd_protocol.brokers.relay.RelayServer``): it takes
``connect``/``receive``/``disconnect`` with a connection id and returns ``ToConn`` (send
a frame), ``CloseConn`` and the machine's own effects (store an envelope, ...). This
moves the bytes: one reader per connection feeding the machine, one writer per
connection with a bounded queue and a write deadline, one timer task for the machine.

A connection whose queue grows past ``soft_limit`` is reported congested to the
machine (``on_congestion``) so it can stop sending to it live (the relay stores
instead); past ``hard_limit``, or when its writes make no progress for ``stall_s``,
it is closed: a receiver that stops reading costs nothing but its own connection.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import trio

from hd_protocol.brokers.relay import CloseConn, ToConn
from hd_shell.clock import mono_ms, trio_deadline, wall_ms
from hd_shell.link import LinkClosed
from hd_shell.ws.link import WsLink

NEVER = 1 << 62


class FrameMachine(Protocol):
    def connect(self, conn: int, now: int) -> list[Any]: ...

    def receive(self, conn: int, raw: str | bytes, now: int, wall: int) -> list[Any]: ...

    def disconnect(self, conn: int, now: int) -> list[Any]: ...


class _Outbox:
    def __init__(self) -> None:
        self.frames: deque[str] = deque()
        self.bytes = 0
        self.close: tuple[int, str] | None = None
        self.wake = trio.Event()
        self.congested = False
        self.done = trio.Event()  # the writer has finished


class FrameServer:
    def __init__(
        self,
        machine: FrameMachine,
        name: str,
        *,
        effect: Callable[[Any], Sequence[Any]] | None = None,
        batch: Callable[[], AbstractContextManager[Any]] = nullcontext,
        on_congestion: Callable[[int, bool], Sequence[Any]] | None = None,
        soft_limit: int = 1 << 20,
        hard_limit: int = 32 << 20,
        stall_s: float = 10.0,
        timer: Callable[[int, int], Sequence[Any]] | None = None,
        next_deadline: Callable[[], int | None] | None = None,
        log: logging.Logger,
    ) -> None:
        """``name`` starts each log line; ``log`` is the binary's own logger."""
        self.machine = machine
        self.name = name
        self.log = log
        self.effect = effect
        self.batch = batch
        self.on_congestion = on_congestion
        self.soft_limit = soft_limit
        self.hard_limit = hard_limit
        self.stall_s = stall_s
        self.timer = timer
        self.next_deadline = next_deadline
        self.outboxes: dict[int, _Outbox] = {}
        self._ids = itertools.count(1)
        self._timer_wake = trio.Event()
        self._timer_until = NEVER  # the deadline (ms) the timer task sleeps to

    @property
    def connections(self) -> int:
        return len(self.outboxes)

    # --- outputs --------------------------------------------------------------------------

    def apply(self, outputs: Sequence[Any]) -> None:
        """Carry out the machine's outputs, in order (effects may return more)."""
        for out in outputs:
            if isinstance(out, ToConn):
                self._push(out.conn, out.frame)
            elif isinstance(out, CloseConn):
                box = self.outboxes.get(out.conn)
                if box is not None and box.close is None:
                    box.close = (out.code, out.reason)
                    box.wake.set()
            elif self.effect is not None:
                self.apply(self.effect(out))
        # Wake the timer only for a deadline earlier than the one it sleeps to: woken
        # after every frame, it cost a task switch each (129 000 in a 10k-node storm).
        if self.next_deadline is not None:
            dl = self.next_deadline()
            if dl is not None and dl < self._timer_until:
                self._timer_wake.set()

    def _push(self, conn: int, frame: str) -> None:
        box = self.outboxes.get(conn)
        if box is None or box.close is not None:
            return
        box.frames.append(frame)
        box.bytes += len(frame)
        box.wake.set()
        if box.bytes > self.hard_limit:
            self.log.info("%s connection dropped: not reading conn=%d queued=%d", self.name, conn,
                     box.bytes)
            box.close = (1008, "not reading")
        elif box.bytes > self.soft_limit and not box.congested:
            box.congested = True
            if self.on_congestion is not None:
                self.apply(self.on_congestion(conn, True))

    # --- one connection --------------------------------------------------------------------

    async def serve(self, link: WsLink) -> None:
        """One connection for its whole life."""
        conn = next(self._ids)
        box = self.outboxes[conn] = _Outbox()
        try:
            self.apply(self.machine.connect(conn, mono_ms()))
            async with trio.open_nursery() as n:
                n.start_soon(self._writer, conn, box, link, n.cancel_scope)
                try:
                    await self._reader(conn, box, link)
                except LinkClosed:
                    pass
                # Let the writer flush what is queued (a last error) before the close.
                if box.close is None:
                    box.close = (1000, "")
                box.wake.set()
                with trio.move_on_after(2):
                    await box.done.wait()
                n.cancel_scope.cancel()
        finally:
            self.outboxes.pop(conn, None)
            self.apply(self.machine.disconnect(conn, mono_ms()))
            code, reason = box.close or (1000, "")
            with trio.CancelScope(shield=True):
                await link.aclose(code, reason)

    async def _reader(self, conn: int, box: _Outbox, link: WsLink) -> None:
        while box.close is None:
            self._receive(conn, box, await link.receive_some())

    def _receive(self, conn: int, box: _Outbox, frames: list[str | bytes]) -> None:
        # Not inline in the loop: a local there would keep the last batch alive while
        # the connection waits for the next one (memory, times every idle connection).
        now, wall = mono_ms(), wall_ms()
        with self.batch():
            for raw in frames:
                self.apply(self.machine.receive(conn, raw, now, wall))
                if box.close is not None:
                    break

    async def _writer(self, conn: int, box: _Outbox, link: WsLink,
                      scope: trio.CancelScope) -> None:
        try:
            while True:
                if box.frames:
                    frames = list(box.frames)
                    box.frames.clear()
                    box.bytes = 0
                    with trio.move_on_after(self.stall_s) as cs:
                        await link.send_many(frames)
                    del frames  # sent: not kept while the connection waits for more
                    if cs.cancelled_caught:
                        self.log.info("%s connection stalled conn=%d", self.name, conn)
                        box.close = (1008, "stalled")
                        break
                    if box.congested and box.bytes < self.soft_limit // 2:
                        box.congested = False
                        if self.on_congestion is not None:
                            self.apply(self.on_congestion(conn, False))
                    continue
                if box.close is not None:
                    break
                box.wake = trio.Event()
                await box.wake.wait()
        except LinkClosed:
            pass
        box.done.set()
        scope.cancel()

    # --- the machine's timer ----------------------------------------------------------------

    async def run_timer(self) -> None:
        if self.timer is None or self.next_deadline is None:
            return
        while True:
            dl = self.next_deadline()
            self._timer_wake = trio.Event()
            self._timer_until = NEVER if dl is None else dl
            with trio.move_on_at(trio_deadline(dl)):
                await self._timer_wake.wait()
            self._timer_until = -1  # awake: it reads the deadline again before sleeping
            now = mono_ms()
            if dl is not None and now >= dl - 1:
                with self.batch():
                    self.apply(self.timer(max(now, dl), wall_ms()))
