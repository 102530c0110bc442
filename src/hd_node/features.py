"""Collaborative panes and peer chat on the hub: run the machines, execute effects.

The rules live in ``hd_protocol.collab`` and ``hd_protocol.chat``; this module feeds
them (tab commands, verified peer messages, session life-cycle) and executes what they
return, in order: persist first, then tell tabs, then send to peers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hd_protocol import ProtocolError
from hd_protocol import session as ss
from hd_protocol.chat import (
    CHAT_TYPES,
    ChatLog,
    PersistMessage,
    PersistReadMark,
    PersistStatus,
    SendChat,
)
from hd_protocol.collab import (
    COLLAB_TYPES,
    Panes,
    PeerErrorReply,
    PersistPane,
    SendToPeer,
    TabEvent,
    TabReply,
    check_pane_key,
)

from .peerconn import now_ms

if TYPE_CHECKING:
    from .hub import PeerHub, Tab
    from .peerconn import PeerConn

log = logging.getLogger("hd_node.features")

Effect = Any


class Features:
    def __init__(self, hub: PeerHub) -> None:
        self.hub = hub
        store = hub.store
        self.panes = Panes(hub.identity.node_id, store.load_panes(), limits=hub.limits)
        self.chat = ChatLog(
            hub.identity.node_id, rng=hub.rng, messages=store.load_messages(),
            read_marks=store.load_read_marks(), self_name=hub.node_name, limits=hub.limits,
        )
        self.pane_members: dict[str, set[Tab]] = {}

    # --- effects ----------------------------------------------------------------------

    async def apply(
        self, effects: Sequence[Effect], *, tab: Tab | None = None, req: str | None = None
    ) -> None:
        store = self.hub.store
        for e in effects:
            if isinstance(e, PersistPane):
                store.save_pane(e.pane)
            elif isinstance(e, PersistMessage):
                store.insert_message(e.message)
            elif isinstance(e, PersistStatus):
                store.set_message_status(e.peer_id, e.id, e.status)
            elif isinstance(e, PersistReadMark):
                store.set_read_mark(e.peer_id, e.seq)
            elif isinstance(e, TabEvent):
                data = dict(e.data)
                if e.channel == "collab" and e.event == "state":
                    data["members"] = self._members(data["paneKey"])
                self.hub.publish(e.channel, e.event, data)
            elif isinstance(e, TabReply):
                if tab is not None:
                    data = dict(e.data)
                    if req is not None:
                        data["req"] = req
                    tab.push(e.channel, e.event, data)
            elif isinstance(e, SendChat):
                await self._send(e.peer_id, "peer_chat", e.data, msg_id=e.msg_id)
            elif isinstance(e, SendToPeer):
                await self._send(e.peer_id, e.type, e.data, re=e.re)
            elif isinstance(e, PeerErrorReply):
                await self._send(e.peer_id, "error", {"code": e.code, "message": e.message},
                                 re=e.re)
                self.hub.metrics.dropped.labels(e.code).inc()
                log.info("peer request refused peer=%s code=%s", e.peer_id, e.code)

    async def _send(self, peer_id: str, type_: str, data: dict[str, Any], *,
                    re: str | None = None, msg_id: str | None = None) -> None:
        conn = self.hub.sessions.get(peer_id)
        if conn is None or conn.closed.is_set():
            # The machines only send to live sessions; a session that just dropped
            # gets the state again by catch-up/flush when it reopens (SPEC 6.1/6.2).
            return
        try:
            await conn.send(type_, data, re=re, msg_id=msg_id)
        except ProtocolError as exc:
            log.info("send skipped peer=%s type=%s code=%s", peer_id, type_, exc.code)

    # --- sessions ---------------------------------------------------------------------

    async def session_opened(self, conn: PeerConn) -> None:
        trusted = conn.session.level == "trusted"
        await self.apply(self.panes.session_opened(conn.peer_id,
                                                   "trusted" if trusted else "guest"))
        await self.apply(self.chat.session_opened(conn.peer_id))

    def session_closed(self, peer_id: str) -> None:
        self.panes.session_closed(peer_id)
        self.chat.session_closed(peer_id)

    async def on_message(self, conn: PeerConn, msg: ss.Message) -> bool:
        if msg.type in COLLAB_TYPES:
            await self.apply(self.panes.receive(conn.peer_id, msg))
            return True
        if msg.type in CHAT_TYPES:
            await self.apply(self.chat.receive(conn.peer_id, msg, now_ms()))
            return True
        return False

    async def on_peer_error(self, conn: PeerConn, err: ss.PeerError) -> None:
        await self.apply(self.chat.peer_error(conn.peer_id, err.re))

    # --- tabs -------------------------------------------------------------------------

    def _members(self, pane_key: str) -> list[str]:
        return sorted(t.name for t in self.pane_members.get(pane_key, ()))

    def _presence(self, pane_key: str) -> None:
        self.hub.publish("collab", "presence",
                         {"paneKey": pane_key, "members": self._members(pane_key)})

    async def collab_command(self, tab: Tab, event: str, data: dict[str, Any]) -> None:
        req = data.pop("req", None)
        if event == "join":
            key = check_pane_key(data["paneKey"])
            self.pane_members.setdefault(key, set()).add(tab)
            reply = self.panes.state_event(key, self._members(key))
            await self.apply([reply], tab=tab, req=req)
            self._presence(key)
            return
        if event == "leave":
            key = check_pane_key(data["paneKey"])
            members = self.pane_members.get(key)
            if members is not None:
                members.discard(tab)
                if not members:
                    del self.pane_members[key]
            self._presence(key)
            if req is not None:
                tab.push("collab", "presence",
                         {"paneKey": key, "members": self._members(key), "req": req})
            return
        effects = self.panes.tab_command(event, data)
        # The state right after this command, taken before any await: applying the
        # effects yields to other tasks, and a peer's newer op may land meanwhile.
        after = self.panes.state_data(data["paneKey"])
        await self.apply(effects, tab=tab, req=req)
        if req is not None and not any(isinstance(e, TabReply) for e in effects):
            # Tell the one tab its command went through (SPEC 9 has no ack event;
            # `state` with its `req` doubles as one).
            tab.push("collab", "state", {**after, "members": self._members(data["paneKey"]),
                                         "req": req})

    async def chat_command(self, tab: Tab, event: str, data: dict[str, Any]) -> None:
        req = data.pop("req", None)
        effects = self.chat.tab_command(event, data, now_ms())
        await self.apply(effects, tab=tab, req=req)
        if req is not None and not any(isinstance(e, TabReply) for e in effects):
            tab.push("peerchat", "unread", {"counts": self.chat.unread_counts(), "req": req})

    def tab_gone(self, tab: Tab) -> None:
        for key in [k for k, members in self.pane_members.items() if tab in members]:
            self.pane_members[key].discard(tab)
            if not self.pane_members[key]:
                del self.pane_members[key]
            self._presence(key)
