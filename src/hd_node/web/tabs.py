"""One browser tab (or script) on ``/ws``: frames in, commands run, events out (SPEC 9).

The tab's reader takes one command at a time and only when the tab's outbound queue
has room (``Tab.wait_room``), so a tab that asks faster than its events can be written
is slowed down, never dropped. Its writer writes whatever is queued in one batch; a
write that makes no progress for ``stall_s`` means the tab stopped reading, and it is
closed (1013). Malformed JSON, an unknown channel or event, or a bad field answers
``{channel, event:"error", data:{code, message}}`` and the socket stays open.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from hd_protocol import ProtocolError
from hd_protocol.apps.tabcommands import COMMANDS, decode_command, req_of
from hd_protocol.apps.ws import WsFrame, decode_ws_frame

from ..errors import HubError
from ..hub.tabbus import Tab, TabBus
from ..metrics import NodeMetrics
from ..transports.seam import Link, LinkClosed
from .commands import Answer, Commands

log = logging.getLogger("hd_node.tabs")


class TabSession:
    def __init__(self, bus: TabBus, commands: Commands, metrics: NodeMetrics, link: Link, *,
                 max_frame_bytes: int, node_id: str, version: str) -> None:
        self.bus = bus
        self.commands = commands
        self.metrics = metrics
        self.link = link
        self.max_frame_bytes = max_frame_bytes
        self.hello = {"node_id": node_id, "version": version}
        self.tab: Tab | None = None

    def error(self, tab: Tab, channel: str, code: str, message: str,
              req: str | None = None) -> None:
        self.metrics.ws_errors.labels(code).inc()
        data: dict[str, Any] = {"code": code, "message": message}
        if req is not None:
            data["req"] = req
        tab.push(channel, "error", data)

    async def run(self) -> None:
        tab = self.tab = self.bus.subscribe()
        tab.push("system", "hello", dict(self.hello))
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._writer, tab, n.cancel_scope)
                limit = trio.Semaphore(self.bus.limits.concurrent_commands)
                try:
                    await self._reader(tab, n, limit)
                except LinkClosed:
                    pass
                n.cancel_scope.cancel()
        finally:
            self.bus.unsubscribe(tab)
            if tab.close_reason == "overflow" or tab.close_reason == "stalled":
                with trio.CancelScope(shield=True):
                    await self.link.aclose(1013, "too slow")

    async def _writer(self, tab: Tab, scope: trio.CancelScope) -> None:
        stall = self.bus.limits.stall_s
        try:
            while True:
                await tab.wait_frames()
                if tab.closed:
                    break
                frames = tab.take()
                with trio.move_on_after(stall) as cs:
                    await self.link.send_many(frames)
                if cs.cancelled_caught:
                    log.info("tab dropped: too slow tab=%s (no write for %.0f s)",
                             tab.name, stall)
                    tab.close("stalled")
                    break
        except LinkClosed:
            pass
        scope.cancel()

    async def _reader(self, tab: Tab, nursery: trio.Nursery, limit: trio.Semaphore) -> None:
        while True:
            for raw in await self.link.receive_some():
                if not isinstance(raw, (str, bytes)):
                    continue  # a tab's link carries text frames only
                await tab.wait_room()
                if tab.closed:
                    return
                try:
                    frame = decode_ws_frame(raw, max_bytes=self.max_frame_bytes)
                except ProtocolError as exc:
                    channel, req = _peek(raw)
                    if exc.code not in ("unknown_event", "bad_request"):
                        channel = "system"  # the frame itself is broken: no channel to trust
                    self.error(tab, channel, exc.code, exc.message, req)
                    continue
                if COMMANDS[(frame.channel, frame.event)].long:
                    await limit.acquire()
                    nursery.start_soon(self._long, tab, frame, limit)
                else:
                    await self._handle(tab, frame)

    async def _long(self, tab: Tab, frame: WsFrame, limit: trio.Semaphore) -> None:
        try:
            await self._handle(tab, frame)
        finally:
            limit.release()

    async def _handle(self, tab: Tab, frame: WsFrame) -> None:
        req = req_of(frame.data)
        try:
            cmd = decode_command(frame.channel, frame.event, frame.data)
            answer = await self.commands.run_command(cmd, tab)
        except (HubError, ProtocolError) as exc:
            self.error(tab, frame.channel, exc.code, exc.message, req)
            return
        except Exception:
            # A bug of ours: the tab gets a typed answer and keeps its socket.
            log.exception("command failed channel=%s event=%s", frame.channel, frame.event)
            self.error(tab, frame.channel, "internal", "internal error", req)
            return
        if answer is not None:
            push_answer(tab, answer, req)


def push_answer(tab: Tab, answer: Answer, req: str | None) -> None:
    data = dict(answer.data)
    if req is not None:
        data["req"] = req
    tab.push(answer.channel, answer.event, data)


def _peek(raw: str | bytes) -> tuple[str, str | None]:
    """Channel and ``req`` of a frame that failed a check, for the error answer."""
    try:
        frame = decode_ws_frame(raw, allowed=None)
    except ProtocolError:
        return "system", None
    return frame.channel, req_of(frame.data)
