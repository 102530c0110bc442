"""Collaborative panes and peer chat on the node: feed the machines, run their effects.

The rules live in ``hd_protocol.apps.collab``, ``hd_protocol.apps.collab_tabs`` (which tab has
which pane open, what a tab is answered and pushed) and ``hd_protocol.apps.chat``; this
feeds them (decoded tab commands, verified peer messages, session life-cycle) and runs
what they return, in order: persist first, then tell tabs, then queue for peers.
Sends never wait: they are queued on the peer's link (``LinkDriver.send``); a tab
command then waits for room on the links it wrote to (``wait_room``), and the catch-up
after a session opens is paced the same way, so a burst is slowed down instead of
growing a queue without bound.

Besides the machines' effects: ``on_chat_change`` is told which peers' conversations
changed (their PeerInfo rows carry ``unread`` and ``last_message``), before the tab
whose command changed them is answered.

Chat ack timers sleep until the machine's next deadline; a ``SendChat`` (the only effect
that comes with a new deadline) wakes them to look again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import trio

from hd_protocol import Identity, LocalProtocolError, ProtocolError
from hd_protocol.apps.chat import CHAT_TYPES, ChatLog
from hd_protocol.apps.collab import COLLAB_TYPES, Panes
from hd_protocol.apps.collab_tabs import PaneTabs
from hd_protocol.apps.tabcommands import Command
from hd_protocol.effects import (
    Effect,
    PeerErrorReply,
    PersistMessage,
    PersistPane,
    PersistReadMark,
    PersistStatus,
    SendChat,
    SendToPeer,
    TabEvent,
    TabReply,
)
from hd_protocol.limits import Limits
from hd_protocol.peer.connection import Message, PeerError
from hd_shell.clock import mono_ms, trio_deadline, wall_ms

from ..hub.linkdriver import LinkBusy, LinkDriver
from ..hub.sessions import SessionRegistry
from ..hub.tabbus import Tab, TabBus
from ..hub.tasks import Tasks
from ..metrics import NodeMetrics
from ..store import NodeStore

log = logging.getLogger("hd_node.features")


class Features:
    def __init__(self, identity: Identity, store: NodeStore, sessions: SessionRegistry,
                 bus: TabBus, metrics: NodeMetrics, *, limits: Limits, chat: ChatLog,
                 tasks: Tasks, on_chat_change: Callable[[set[str]], None]) -> None:
        """``chat``: the conversations (the node's one ChatLog, loaded from ``store``);
        ``on_chat_change`` is told which peers' conversations changed; catch-ups run
        paced in ``tasks``."""
        self.store = store
        self.sessions = sessions
        self.bus = bus
        self.metrics = metrics
        self.panes = Panes(identity.node_id, store.load_panes(), limits=limits)
        self.chat = chat
        self.pane_tabs = PaneTabs(self.panes)
        self.tasks = tasks
        self.on_chat_change = on_chat_change
        self._timer_changed = trio.Event()
        for t in COLLAB_TYPES:
            sessions.route(t, self._on_collab)
        for t in CHAT_TYPES:
            sessions.route(t, self._on_chat)
        sessions.listen(self)
        bus.on_tab_gone(self.tab_gone)

    # --- effects ----------------------------------------------------------------------

    def apply(self, effects: Sequence[Effect], *, tab: Tab | None = None) -> set[LinkDriver]:
        """Run effects in order (``TabReply`` to ``tab``, as the machine built it);
        returns the links they queued envelopes on."""
        touched: set[LinkDriver] = set()
        chats: set[str] = set()
        timer = False  # a new ack deadline only ever comes with a SendChat
        store = self.store
        for e in effects:
            if isinstance(e, PersistPane):
                store.save_pane(e.pane)
            elif isinstance(e, PersistMessage):
                store.insert_message(e.message)
                chats.add(e.message.peer_id)
            elif isinstance(e, PersistStatus):
                store.set_message_status(e.peer_id, e.id, e.status)
                chats.add(e.peer_id)
            elif isinstance(e, PersistReadMark):
                store.set_read_mark(e.peer_id, e.seq)
                chats.add(e.peer_id)
            elif isinstance(e, TabEvent):
                self.bus.publish(e.channel, e.event, e.data, only=e.only, skip=e.skip)
            elif isinstance(e, TabReply):
                if chats:  # noted before the answer (the rows follow at the next tick)
                    self.on_chat_change(chats)
                    chats = set()
                if tab is not None:
                    tab.push(e.channel, e.event, dict(e.data))
            elif isinstance(e, SendChat):
                timer = True
                self._send(touched, e.peer_id, "peer_chat", e.data, msg_id=e.msg_id)
            elif isinstance(e, SendToPeer):
                self._send(touched, e.peer_id, e.type, e.data, re=e.re, msg_id=e.msg_id)
            elif isinstance(e, PeerErrorReply):
                self._send(touched, e.peer_id, "error",
                           {"code": e.code, "message": e.message}, re=e.re)
                self.metrics.dropped.labels(e.code).inc()
                log.info("peer request refused peer=%s code=%s", e.peer_id, e.code)
        if chats:
            self.on_chat_change(chats)
        if timer:
            self._timer_changed.set()
        return touched

    def _send(self, touched: set[LinkDriver], peer_id: str, type_: str, data: dict[str, Any],
              *, re: str | None = None, msg_id: str | None = None) -> None:
        driver = self.sessions.get(peer_id)
        if driver is None:
            # The machines only send to live sessions; one that just dropped gets the
            # state again by catch-up/flush when it reopens (SPEC 6.1/6.2).
            return
        try:
            driver.send(type_, data, re=re, msg_id=msg_id)
        except LinkBusy:
            log.info("link overloaded peer=%s: closed, it will catch up", peer_id)
            return
        except LocalProtocolError as exc:
            # Not sendable at all (e.g. a pane stored before today's size check that no
            # envelope can carry): skip it, loudly, and go on with the rest.
            log.warning("not sent peer=%s type=%s code=%s", peer_id, type_, exc.code)
            return
        touched.add(driver)

    async def apply_paced(self, effects: Sequence[Effect]) -> None:
        """``apply`` one effect at a time, waiting for room on a link before queueing
        more on it: the catch-up after a (re)connect can be large (every shared pane,
        every unsent chat message). Runs as a task of its own: a bug here is logged and
        ends the catch-up, never the node."""
        try:
            for e in effects:
                for driver in self.apply([e]):
                    await driver.wait_room()
        except Exception:
            log.exception("catch-up failed")

    @staticmethod
    async def wait_room(links: set[LinkDriver]) -> None:
        for driver in links:
            await driver.wait_room()

    async def run_timers(self) -> None:
        """Chat ack timers: a message a live peer has not acked in time is sent again
        (``ChatLog.on_timer``). Sleeps until the machine's next deadline; woken early
        when an effect may have set a closer one."""
        while True:
            self._timer_changed = trio.Event()
            dl = self.chat.next_deadline()
            with trio.move_on_at(trio_deadline(dl)):
                await self._timer_changed.wait()
            now = mono_ms()
            if dl is not None and now >= dl - 1:
                with self.store.batch():
                    self.apply(self.chat.on_timer(max(now, dl)))

    # --- sessions (SessionListener) -----------------------------------------------------

    def session_opened(self, driver: LinkDriver) -> None:
        session = driver.conn.session
        assert session is not None and driver.peer_id is not None
        level: Literal["trusted", "guest"] = (
            "trusted" if session.level == "trusted" else "guest")
        # The machines learn of the session now (its messages may already be arriving);
        # the catch-up they ask for is sent paced, in its own task (SPEC 6.1/6.2).
        effects = [*self.pane_tabs.session_opened(driver.peer_id, level),
                   *self.chat.session_opened(driver.peer_id, at=mono_ms())]
        if effects:
            self.tasks.start_soon(self.apply_paced, effects)

    def session_closed(self, driver: LinkDriver, reason: str, remote: bool) -> None:
        peer = driver.peer_id
        assert peer is not None
        self.apply([*self.pane_tabs.session_closed(peer), *self.chat.session_closed(peer)])

    def peer_error(self, driver: LinkDriver, err: PeerError) -> None:
        assert driver.peer_id is not None
        self.apply(self.chat.peer_error(driver.peer_id, err.re))

    # --- inbound --------------------------------------------------------------------------

    def _on_collab(self, driver: LinkDriver, msg: Message) -> None:
        assert driver.peer_id is not None
        self.apply(self.pane_tabs.receive(driver.peer_id, msg))

    def _on_chat(self, driver: LinkDriver, msg: Message) -> None:
        assert driver.peer_id is not None
        self.apply(self.chat.receive(driver.peer_id, msg, wall_ms()))

    # --- tab commands -----------------------------------------------------------------------

    async def collab_command(self, tab: Tab | None, cmd: Command) -> None:
        with self.store.batch():
            effects = self.pane_tabs.command(cmd, tab.name if tab is not None else None)
            touched = self.apply(effects, tab=tab)
        await self.wait_room(touched)

    async def chat_command(self, tab: Tab | None, cmd: Command) -> None:
        names = ({p.node_id: p.node_name for p in self.store.list_peers()}
                 if cmd.event == "conversations" else None)
        with self.store.batch():
            effects = self.chat.command(cmd, wall_ms(), at=mono_ms(), names=names)
            touched = self.apply(effects, tab=tab)
        await self.wait_room(touched)

    def tab_gone(self, tab: Tab) -> None:
        self.apply(self.pane_tabs.tab_gone(tab.name))


__all__ = ["Features", "ProtocolError"]
