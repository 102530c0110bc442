"""Collaborative panes and peer chat on the node: feed the machines, run their effects.

The rules live in ``hd_protocol.collab`` and ``hd_protocol.chat``; this feeds them
(tab commands, verified peer messages, session life-cycle) and runs what they return,
in order: persist first, then tell tabs, then queue for peers. Sends never wait: they
are queued on the peer's link (``LinkDriver.send``); a tab command then waits for room
on the links it wrote to (``wait_room``), and the catch-up after a session opens is
paced the same way, so a burst is slowed down instead of growing a queue without bound.

What tabs see besides the machines' events: ``on_chat_change`` is told which peers'
conversations changed (their PeerInfo rows carry ``unread`` and ``last_message``), and
``collab panes`` (the ``list`` answer) is pushed to every tab when the set of panes,
their sharers or their members change — not on every write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import trio

from hd_protocol import Identity, LocalProtocolError, ProtocolError
from hd_protocol.chat import CHAT_TYPES, ChatLog
from hd_protocol.collab import COLLAB_TYPES, Panes, check_pane_key
from hd_protocol.connection import Message, PeerError
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
        self.pane_members: dict[str, set[Tab]] = {}
        self.tasks = tasks
        self.on_chat_change = on_chat_change
        # The pane list last pushed (``_panes_changed``) and its keys.
        self._listed: list[tuple[str, list[str], list[str]]] = []
        self._listed_keys: set[str] = set()
        for t in COLLAB_TYPES:
            sessions.route(t, self._on_collab)
        for t in CHAT_TYPES:
            sessions.route(t, self._on_chat)
        sessions.listen(self)
        bus.on_tab_gone(self.tab_gone)

    # --- effects ----------------------------------------------------------------------

    def apply(self, effects: Sequence[Effect], *, tab: Tab | None = None,
              req: str | None = None) -> set[LinkDriver]:
        """Run effects in order; returns the links they queued envelopes on."""
        touched: set[LinkDriver] = set()
        chats: set[str] = set()
        panes_changed = False
        store = self.store
        for e in effects:
            if isinstance(e, PersistPane):
                panes_changed |= e.pane.key not in self._listed_keys
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
                data = e.data
                if e.channel == "collab" and e.event == "state":
                    data = {**data, "members": self._members(data["paneKey"])}
                    panes_changed = True  # the machine says so when sharers change
                self.bus.publish(e.channel, e.event, data)
            elif isinstance(e, TabReply):
                if tab is not None:
                    tab.push(e.channel, e.event, _with_req(dict(e.data), req))
            elif isinstance(e, SendChat):
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
        if panes_changed:
            self._panes_changed()
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
        (``ChatLog.on_timer``). Wakes at the next deadline, and at least once a second
        to pick up deadlines set since."""
        while True:
            now = mono_ms()
            dl = self.chat.next_deadline()
            await trio.sleep_until(trio_deadline(now + 1000 if dl is None
                                                 else min(dl, now + 1000)))
            now, dl = mono_ms(), self.chat.next_deadline()
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
        effects = [*self.panes.session_opened(driver.peer_id, level),
                   *self.chat.session_opened(driver.peer_id, at=mono_ms())]
        if effects:
            self.tasks.start_soon(self.apply_paced, effects)

    def session_closed(self, driver: LinkDriver, reason: str, remote: bool) -> None:
        peer = driver.peer_id
        assert peer is not None
        self.panes.session_closed(peer)
        self.chat.session_closed(peer)

    def peer_error(self, driver: LinkDriver, err: PeerError) -> None:
        assert driver.peer_id is not None
        self.apply(self.chat.peer_error(driver.peer_id, err.re))

    # --- inbound --------------------------------------------------------------------------

    def _on_collab(self, driver: LinkDriver, msg: Message) -> None:
        assert driver.peer_id is not None
        self.apply(self.panes.receive(driver.peer_id, msg))

    def _on_chat(self, driver: LinkDriver, msg: Message) -> None:
        assert driver.peer_id is not None
        self.apply(self.chat.receive(driver.peer_id, msg, wall_ms()))

    # --- tab commands -----------------------------------------------------------------------

    def _members(self, pane_key: str) -> list[str]:
        return sorted(t.name for t in self.pane_members.get(pane_key, ()))

    def _presence(self, pane_key: str) -> None:
        self.bus.publish("collab", "presence",
                         {"paneKey": pane_key, "members": self._members(pane_key)})
        self._panes_changed()

    def _pane_list(self) -> TabReply:
        return self.panes.list_event({k: [t.name for t in tabs]
                                      for k, tabs in self.pane_members.items()})

    def _panes_changed(self) -> None:
        """Push ``collab panes`` if the list (revisions aside) is not what was pushed."""
        panes = self._pane_list().data["panes"]
        listed = [(p["paneKey"], p["sharers"], p["members"]) for p in panes]
        if listed != self._listed:
            self.bus.publish("collab", "panes", {"panes": panes})
            self._listed, self._listed_keys = listed, {k for k, _, _ in listed}

    async def collab_command(self, tab: Tab | None, event: str, data: dict[str, Any]) -> None:
        req = data.pop("req", None)
        if event == "list":
            self.apply([self._pane_list()], tab=tab, req=req)
            return
        if event in ("join", "leave"):
            key = check_pane_key(data["paneKey"])
            members = self.pane_members.setdefault(key, set())
            if tab is not None:
                (members.add if event == "join" else members.discard)(tab)
            if not members:
                del self.pane_members[key]
            if event == "join":
                self.apply([self.panes.state_event(key, self._members(key))], tab=tab, req=req)
            self._presence(key)
            if event == "leave" and req is not None and tab is not None:
                tab.push("collab", "presence",
                         {"paneKey": key, "members": self._members(key), "req": req})
            return
        with self.store.batch():
            effects = self.panes.tab_command(event, data)
            touched = self.apply(effects, tab=tab, req=req)
        if req is not None and tab is not None and not any(
                isinstance(e, TabReply) for e in effects):
            # Tell the one tab its command went through (SPEC 9 has no ack event;
            # `state` with its `req` doubles as one).
            tab.push("collab", "state", {**self.panes.state_data(data["paneKey"]),
                                         "members": self._members(data["paneKey"]),
                                         "req": req})
        await self.wait_room(touched)

    async def chat_command(self, tab: Tab | None, event: str, data: dict[str, Any]) -> None:
        req = data.pop("req", None)
        names = ({p.node_id: p.node_name for p in self.store.list_peers()}
                 if event == "conversations" else None)
        with self.store.batch():
            effects = self.chat.tab_command(event, data, wall_ms(), at=mono_ms(), names=names)
            touched = self.apply(effects, tab=tab, req=req)
        if req is not None and tab is not None and not any(
                isinstance(e, TabReply) for e in effects):
            tab.push("peerchat", "unread", {"counts": self.chat.unread_counts(), "req": req})
        await self.wait_room(touched)

    def tab_gone(self, tab: Tab) -> None:
        for key in [k for k, members in self.pane_members.items() if tab in members]:
            self.pane_members[key].discard(tab)
            if not self.pane_members[key]:
                del self.pane_members[key]
            self._presence(key)


def _with_req(data: dict[str, Any], req: str | None) -> dict[str, Any]:
    if req is not None:
        data["req"] = req
    return data


__all__ = ["Features", "ProtocolError"]
