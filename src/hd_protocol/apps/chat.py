"""Peer chat (SPEC 6.2): an append-only log per peer, delivered at least once.

One ``ChatLog`` machine per node holds every conversation the shell loaded (the
conversation key is the peer's node id). The shell feeds it tab commands
(``tab_command``), verified inbound ``peer_chat``/``peer_chat_ack`` messages
(``receive``), peer ``error`` replies (``peer_error``) and session life-cycle; it
executes the effects that come back, **in order**:

- ``PersistMessage(message)`` — insert the message (key: peer id + message id);
- ``PersistStatus(peer_id, id, status)`` — update one message's status;
- ``PersistReadMark(peer_id, seq)`` — everything up to local ``seq`` is read;
- ``SendChat(peer_id, msg_id, data)`` — send ``peer_chat`` **with that msg_id** as the
  envelope's ``msg_id`` (SPEC 6.2: the message id *is* the envelope's msg_id, the same
  on both sides). ``Session.send`` needs an optional ``msg_id`` argument for this;
- ``SendToPeer`` / ``PeerErrorReply`` — as in ``hd_protocol.apps.collab``;
- ``TabEvent`` / ``TabReply`` — /ws ``peerchat`` frames (``message``, ``status``,
  ``unread``; ``history`` and ``unread`` answers).

Rules (SPEC 6.2), each tested in ``tests/unit/test_chat.py``:

- A new message is persisted with status ``queued`` before any send effect.
- Status moves ``queued -> sent -> delivered``; ``failed`` when the peer answers the
  message's envelope with an ``error``. An ack proves delivery, so it wins over
  anything; nothing ever moves a message back.
- When a session opens, every outbound message that is not yet ``delivered`` or
  ``failed`` is sent again, in local order. ``sent`` messages are included: one that
  was written to a session that then dropped may never have arrived, and the receiver
  drops duplicates by id — at-least-once, nothing lost across restarts.
- Inbound messages are insert-or-ignore by (peer, id): a replay never duplicates or
  overwrites a stored message, but is acked again (the first ack may have been lost).
- Display order is the local ``seq`` (order of creation/arrival); the sender's ``ts``
  is shown, never used for order.
- Unread counts: inbound messages after the peer's read mark.
- ``open`` pages: at most ``limit`` messages (default 50, at most 200), the newest
  ones before local seq ``before`` if given, oldest first, and ``more`` says whether
  older ones remain. ``conversations`` lists every peer with a message, the newest
  activity (the greatest seq) first, with its unread count and a preview of its last
  message; a peer's name comes from the shell's records, else from its last message.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Final, TypeGuard

from ..cjson import MAX_INT
from ..effects import (
    PeerErrorReply,
    PersistMessage,
    PersistReadMark,
    PersistStatus,
    SendChat,
    SendToPeer,
    TabEvent,
    TabReply,
    answered,
)
from ..envelope import new_msg_id
from ..errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ..identity import NODE_ID_RE, Rng
from ..limits import DEFAULT_LIMITS, Limits
from ..peer.session import Message
from ..records import ChatMessage, Status
from ..seal import check_sealed_size
from .tabcommands import (
    Command,
    PeerchatClose,
    PeerchatOpen,
    PeerchatRead,
    PeerchatSend,
    check_node_id,
)

CHANNEL: Final = "peerchat"
CHAT_TYPES = frozenset({"peer_chat", "peer_chat_ack"})
CHAT_FIELDS = frozenset({"text", "from_name"})
ACK_FIELDS = frozenset({"id"})
MSG_ID_RE = re.compile(r"[0-9a-f]{32}")

HISTORY_LIMIT: Final = 50  # messages an ``open`` answers by default
HISTORY_MAX: Final = 200  # and at most
PREVIEW_CHARS: Final = 140  # of a last message's text in a conversation list

# Outbound messages a session (re)open sends (again).
_UNSETTLED: Final = frozenset({"queued", "sent"})


ChatEffect = (
    PersistMessage | PersistStatus | PersistReadMark | SendChat | SendToPeer
    | PeerErrorReply | TabEvent | TabReply
)


def _is_node_id(value: object) -> TypeGuard[str]:
    return type(value) is str and NODE_ID_RE.fullmatch(value) is not None


def _size(text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise RemoteProtocolError("bad_request", "text is not valid unicode") from None


class ChatLog:
    """Every peer conversation of one node, with the SPEC 6.2 rules. Pure: time comes
    in as ``now``, message ids from the injected ``rng``."""

    def __init__(
        self,
        self_id: str,
        *,
        rng: Rng,
        messages: Iterable[ChatMessage] = (),
        read_marks: Mapping[str, int] | None = None,
        self_name: str = "",
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if not _is_node_id(self_id):
            raise LocalProtocolError("bad_request", "self_id must be a node id")
        self.self_id = self_id
        self.self_name = self_name
        self.rng = rng
        self.limits = limits
        self._live: set[str] = set()
        # Messages sent on a live session and not acked yet: (peer, id) -> (when to
        # send it again on the monotonic clock, or None until the next on_timer; tries).
        self._awaiting: dict[tuple[str, str], tuple[int | None, int]] = {}
        self._messages: dict[tuple[str, str], ChatMessage] = {}
        self._order: dict[str, list[str]] = {}  # peer -> ids in seq order
        self._read: dict[str, int] = dict(read_marks or {})
        self._unread: dict[str, int] = {}
        self._next_seq = 1
        for m in sorted(messages, key=lambda m: m.seq):
            self._insert(m)

    # --- queries ----------------------------------------------------------------------


    def rename(self, name: str) -> None:
        """The ``from_name`` our messages carry from now on."""
        self.self_name = name

    def message(self, peer_id: str, msg_id: str) -> ChatMessage | None:
        return self._messages.get((peer_id, msg_id))

    def history(self, peer_id: str) -> list[ChatMessage]:
        """The conversation in display order (local ``seq``)."""
        return [self._messages[(peer_id, i)] for i in self._order.get(peer_id, [])]

    def unread_counts(self) -> dict[str, int]:
        """Unread inbound messages per conversation (0 included once read)."""
        return dict(sorted(self._unread.items()))

    def unread(self, peer_id: str) -> int:
        return self._unread.get(peer_id, 0)

    def last_message(self, peer_id: str) -> dict[str, Any] | None:
        """The preview of the conversation's newest message, or None."""
        ids = self._order.get(peer_id)
        return self._messages[(peer_id, ids[-1])].preview(PREVIEW_CHARS) if ids else None

    def page(self, peer_id: str, *, before: int | None = None,
             limit: int = HISTORY_LIMIT) -> tuple[list[ChatMessage], bool]:
        """At most ``limit`` of the newest messages with a seq below ``before`` (all if
        None), oldest first, and whether older ones remain."""
        ids = self._order.get(peer_id, [])
        end = len(ids) if before is None else bisect_left(
            ids, before, key=lambda i: self._messages[(peer_id, i)].seq)
        start = max(0, end - limit)
        return [self._messages[(peer_id, i)] for i in ids[start:end]], start > 0

    def conversations(self, names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every conversation with a message, newest activity first."""
        items = [{"node_id": peer, "node_name": (names or {}).get(peer) or self._name(peer),
                  "unread": self.unread(peer), "last": self.last_message(peer)}
                 for peer, ids in self._order.items() if ids]
        return sorted(items, key=lambda it: -it["last"]["seq"])

    def _name(self, peer_id: str) -> str:
        """The name the peer's newest message came with ("" if it never wrote)."""
        ids = reversed(self._order.get(peer_id, []))
        return next((m.from_name for m in (self._messages[(peer_id, i)] for i in ids)
                     if m.direction == "in"), "")

    # --- sessions -----------------------------------------------------------------------

    def session_opened(self, peer_id: str, *, at: int | None = None) -> list[ChatEffect]:
        """Flush, in order, every outbound message not yet delivered or failed.

        ``at`` is the monotonic time (ms) for the ack timers; without it they start at
        the next ``on_timer``."""
        self._live.add(peer_id)
        out: list[ChatEffect] = []
        for m in self.history(peer_id):
            if m.direction == "out" and m.status in _UNSETTLED:
                out.extend(self._transmit(m, at))
        return out

    def session_closed(self, peer_id: str) -> list[ChatEffect]:
        self._live.discard(peer_id)
        for key in [k for k in self._awaiting if k[0] == peer_id]:
            del self._awaiting[key]  # the next session flushes them again
        return []

    # --- ack timers ---------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """When ``on_timer`` must run next (monotonic ms), or None."""
        due = [dl for dl, _ in self._awaiting.values() if dl is not None]
        if len(due) < len(self._awaiting):
            return min(due, default=0)  # timers to start: as soon as possible
        return min(due, default=None)

    def on_timer(self, at: int) -> list[ChatEffect]:
        """Send again, inside the live session, every message whose ack is overdue.

        The envelope may have been lost (the receiver dropped it, a link hiccup); the
        receiver keeps one copy per id and acks again, so resending is always safe.
        Waits double from ``chat_ack_timeout_ms`` up to eight times that."""
        out: list[ChatEffect] = []
        for key, (dl, tries) in list(self._awaiting.items()):
            m = self._messages.get(key)
            if m is None or m.status not in _UNSETTLED or key[0] not in self._live:
                del self._awaiting[key]
            elif dl is None:
                self._awaiting[key] = (at + self._ack_wait(tries), tries)
            elif at >= dl:
                out.append(SendChat(m.peer_id, m.id, {"text": m.text, "from_name": m.from_name}))
                self._awaiting[key] = (at + self._ack_wait(tries + 1), tries + 1)
        return out

    def _ack_wait(self, tries: int) -> int:
        return int(self.limits.chat_ack_timeout_ms * 2 ** min(tries, 3))

    # --- local commands (from tabs) -----------------------------------------------------

    def command(self, cmd: Command, now: int, *, at: int | None = None,
                names: Mapping[str, str] | None = None) -> list[ChatEffect]:
        """A /ws ``peerchat`` command (SPEC 9) as ``tabcommands`` decoded it. What only
        the machine can judge (its own id, sizes, paging ranges) raises
        ``ProtocolError``; the shell answers the tab with an ``error`` frame carrying its
        code. ``close`` only concerns the shell and changes nothing here. ``names``: peer
        names the shell knows, for ``conversations``.

        What the tab is answered: every ``TabReply`` carries the command's ``req``; a
        command with a ``req`` that has no answer of its own (``send``, ``read``,
        ``close``) is acknowledged with ``unread {counts}``."""
        out: list[ChatEffect]
        if isinstance(cmd, PeerchatSend):
            out = self._send(self._not_self(cmd.node_id), cmd.text, now, at)
        elif isinstance(cmd, PeerchatOpen):
            out = [self._history(self._not_self(cmd.node_id), cmd.before, cmd.limit)]
        elif isinstance(cmd, PeerchatRead):
            out = self.read(self._not_self(cmd.node_id))
        elif isinstance(cmd, PeerchatClose):
            self._not_self(cmd.node_id)
            out = []
        elif cmd.event == "unread":
            out = [self._unread_event(reply=True)]
        elif cmd.event == "conversations":
            out = [TabReply(CHANNEL, "conversations", {"items": self.conversations(names)})]
        else:
            raise LocalProtocolError("unknown_event", f"peerchat has no command {cmd.event}")
        return answered(out, cmd.req,
                        lambda: TabReply(CHANNEL, "unread", {"counts": self.unread_counts()}))

    def _history(self, peer: str, before: int | None, limit: int | None) -> TabReply:
        limit = HISTORY_LIMIT if limit is None else limit
        if before is not None and not 0 <= before <= MAX_INT:
            raise RemoteProtocolError("bad_request", "before must be a seq (int >= 0)")
        if not 0 < limit <= HISTORY_MAX:
            raise RemoteProtocolError("bad_request", f"limit is 1..{HISTORY_MAX}")
        page, more = self.page(peer, before=before, limit=limit)
        return TabReply(CHANNEL, "history", {
            "node_id": peer, "messages": [m.tab_data() for m in page], "more": more})

    def send(self, peer_id: object, text: object, now: int, *,
             at: int | None = None) -> list[ChatEffect]:
        """Create an outbound message: persisted ``queued`` first, then sent if a
        session is live (SPEC 6.2). Raises ``ProtocolError`` ``empty``/``too_large``.
        ``now`` is the wall clock (the message's ``ts``); ``at`` the monotonic one for
        its ack timer."""
        return self._send(self._not_self(check_node_id(peer_id)), text, now, at)

    def _send(self, peer: str, text: object, now: int, at: int | None) -> list[ChatEffect]:
        body = self._body(text, empty_code="empty")
        # Stored means sent some day: what cannot fit one envelope is refused now.
        check_sealed_size({"text": body, "from_name": self.self_name},
                          self.limits.max_envelope_bytes)
        msg_id = new_msg_id(self.rng)
        while (peer, msg_id) in self._messages:  # 128 random bits: practically never
            msg_id = new_msg_id(self.rng)
        m = ChatMessage(
            peer, msg_id, "out", body, ts=now, received_at=now, status="queued",
            seq=self._next_seq, from_name=self.self_name,
        )
        self._insert(m)
        out: list[ChatEffect] = [PersistMessage(m), TabEvent(CHANNEL, "message", m.tab_data())]
        if peer in self._live:
            out.extend(self._transmit(m, at))
        return out

    def read(self, peer_id: str) -> list[ChatEffect]:
        """Mark the whole conversation read."""
        ids = self._order.get(peer_id)
        if not ids:
            return []
        last = self._messages[(peer_id, ids[-1])].seq
        if self._read.get(peer_id, 0) >= last and not self._unread.get(peer_id):
            return []
        self._read[peer_id] = last
        self._unread[peer_id] = 0
        return [PersistReadMark(peer_id, last), self._unread_event()]

    # --- inbound (from peers) ---------------------------------------------------------

    def receive(self, peer_id: str, msg: Message, now: int) -> list[ChatEffect]:
        """A verified ``peer_chat`` or ``peer_chat_ack`` from ``peer_id``. A bad payload
        becomes a ``PeerErrorReply``; nothing here raises for peer input."""
        if msg.type not in CHAT_TYPES:
            raise LocalProtocolError("bad_type", f"{msg.type} is not a chat message")
        try:
            if msg.type == "peer_chat":
                return self._on_chat(peer_id, msg, now)
            return self._on_ack(peer_id, msg.data)
        except ProtocolError as exc:
            return [PeerErrorReply(peer_id, msg.msg_id, exc.code, exc.message)]

    def peer_error(self, peer_id: str, re: str | None) -> list[ChatEffect]:
        """The peer answered envelope ``re`` with ``error``: if that was one of our
        messages still in flight, it has ``failed`` (and is not flushed again)."""
        m = self._messages.get((peer_id, re)) if re is not None else None
        if m is None or m.direction != "out" or m.status not in _UNSETTLED:
            return []
        return self._set_status(m, "failed")

    def _on_chat(self, peer: str, msg: Message, now: int) -> list[ChatEffect]:
        _check_fields(msg.data, CHAT_FIELDS)
        name = msg.data["from_name"]
        body = self._body(msg.data["text"], empty_code="bad_request")
        if type(name) is not str or len(name) > self.limits.node_name_chars:
            raise RemoteProtocolError(
                "bad_request", f"from_name must be a string of at most "
                f"{self.limits.node_name_chars} chars",
            )
        ack = SendToPeer(peer, "peer_chat_ack", {"id": msg.msg_id}, re=msg.msg_id)
        existing = self._messages.get((peer, msg.msg_id))
        if existing is not None:
            # SPEC 6.2: insert-or-ignore; a replay is acked again, never stored again.
            return [ack] if existing.direction == "in" else []
        m = ChatMessage(
            peer, msg.msg_id, "in", body, ts=msg.ts, received_at=now, status="delivered",
            seq=self._next_seq, from_name=name,
        )
        self._insert(m)
        # Stored before the ack: an ack promises the message survives a restart.
        return [
            PersistMessage(m), TabEvent(CHANNEL, "message", m.tab_data()),
            self._unread_event(), ack,
        ]

    def _on_ack(self, peer: str, data: Mapping[str, Any]) -> list[ChatEffect]:
        _check_fields(data, ACK_FIELDS)
        msg_id = data["id"]
        if type(msg_id) is not str or MSG_ID_RE.fullmatch(msg_id) is None:
            raise RemoteProtocolError("bad_request", "id must be 32 lowercase hex chars")
        m = self._messages.get((peer, msg_id))
        if m is None or m.direction != "out" or m.status == "delivered":
            return []  # unknown or repeated ack: nothing to change
        return self._set_status(m, "delivered")

    # --- helpers ------------------------------------------------------------------------

    def _insert(self, m: ChatMessage) -> None:
        self._messages[(m.peer_id, m.id)] = m
        self._order.setdefault(m.peer_id, []).append(m.id)
        self._next_seq = max(self._next_seq, m.seq + 1)
        self._unread.setdefault(m.peer_id, 0)
        if m.direction == "in" and m.seq > self._read.get(m.peer_id, 0):
            self._unread[m.peer_id] += 1

    def _transmit(self, m: ChatMessage, at: int | None) -> list[ChatEffect]:
        out: list[ChatEffect] = [
            SendChat(m.peer_id, m.id, {"text": m.text, "from_name": m.from_name})
        ]
        self._awaiting[(m.peer_id, m.id)] = (None if at is None else at + self._ack_wait(0), 0)
        if m.status == "queued":
            out.extend(self._set_status(m, "sent"))
        return out

    def _set_status(self, m: ChatMessage, status: Status) -> list[ChatEffect]:
        self._messages[(m.peer_id, m.id)] = replace(m, status=status)
        if status not in _UNSETTLED:
            self._awaiting.pop((m.peer_id, m.id), None)
        return [
            PersistStatus(m.peer_id, m.id, status),
            TabEvent(CHANNEL, "status", {"id": m.id, "node_id": m.peer_id, "status": status}),
        ]

    def _unread_event(self, *, reply: bool = False) -> TabEvent | TabReply:
        data = {"counts": self.unread_counts()}
        return TabReply(CHANNEL, "unread", data) if reply else TabEvent(CHANNEL, "unread", data)

    def _body(self, text: object, *, empty_code: str) -> str:
        """SPEC 6.2: text is trimmed, then 1..16 KiB of UTF-8."""
        if type(text) is not str:
            raise RemoteProtocolError("bad_request", "text must be a string")
        body = text.strip()
        if not body:
            raise RemoteProtocolError(empty_code, "message is empty")
        if _size(body) > self.limits.chat_text_bytes:
            raise RemoteProtocolError("too_large", f"text over {self.limits.chat_text_bytes} bytes")
        return body

    def _not_self(self, peer_id: str) -> str:
        if peer_id == self.self_id:
            raise RemoteProtocolError("bad_request", "a node does not chat with itself")
        return peer_id


def _check_fields(data: Mapping[str, Any], fields: frozenset[str]) -> None:
    if data.keys() != fields:
        raise RemoteProtocolError("bad_request", f"expected exactly {sorted(fields)}")



__all__ = [
    "CHANNEL", "CHAT_TYPES", "HISTORY_LIMIT", "HISTORY_MAX", "PREVIEW_CHARS", "ChatEffect",
    "ChatLog", "ChatMessage", "PeerErrorReply", "PersistMessage", "PersistReadMark",
    "PersistStatus", "SendChat", "SendToPeer", "Status", "TabEvent", "TabReply",
]
