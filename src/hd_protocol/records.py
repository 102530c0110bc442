"""What a node persists of its features: pane states (SPEC 6.1) and chat messages
(SPEC 6.2), plus the strict checks of a pane's wire form.

Plain immutable records; the rules that change them live in ``hd_protocol.apps.collab`` and
``hd_protocol.apps.chat``, the effects that store them in ``hd_protocol.effects``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from .cjson import MAX_INT
from .errors import RemoteProtocolError
from .identity import NODE_ID_RE

PANE_KEY_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
OP_FIELDS = frozenset({"paneKey", "rev", "author", "text"})
KEY_FIELDS = frozenset({"paneKey"})

Level = Literal["trusted", "guest"]
Version = tuple[int, str]
Direction = Literal["in", "out"]
Status = Literal["queued", "sent", "delivered", "failed"]


@dataclass(frozen=True, slots=True)
class Pane:
    """One pane as persisted (SPEC 6.1). ``sharers`` are peer node ids."""

    key: str
    text: str = ""
    rev: int = 0
    author: str = ""
    sharers: frozenset[str] = frozenset()

    @property
    def version(self) -> Version:
        # SPEC 6.1: states are ordered by (rev, author) lexicographically.
        return (self.rev, self.author)

    def op_data(self) -> dict[str, Any]:
        """The ``collab_op`` payload for this state."""
        return {"paneKey": self.key, "rev": self.rev, "author": self.author, "text": self.text}


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message as persisted. ``seq`` is the node-local display order."""

    peer_id: str
    id: str
    direction: Direction
    text: str
    ts: int
    received_at: int
    status: Status
    seq: int
    from_name: str = ""

    def tab_data(self) -> dict[str, Any]:
        """The /ws ``message`` payload (and one entry of ``history``)."""
        return {
            "id": self.id, "node_id": self.peer_id, "direction": self.direction,
            "text": self.text, "from_name": self.from_name, "ts": self.ts,
            "received_at": self.received_at, "status": self.status, "seq": self.seq,
        }

    def preview(self, chars: int = 140) -> dict[str, Any]:
        """The message as a conversation list shows it (``last`` of ``conversations``,
        ``last_message`` of PeerInfo): its text cut to its first ``chars`` characters."""
        return {"id": self.id, "direction": self.direction, "text": self.text[:chars],
                "ts": self.ts, "status": self.status, "seq": self.seq}


# --- validation of the wire forms (collab_op payloads, tab commands) ---------------


def check_pane_key(value: object) -> str:
    if type(value) is not str or PANE_KEY_RE.fullmatch(value) is None:
        raise RemoteProtocolError("bad_request", "paneKey must be 1..128 chars of [A-Za-z0-9_.:-]")
    return value


def check_text(value: object, max_bytes: int) -> str:
    if type(value) is not str:
        raise RemoteProtocolError("bad_request", "text must be a string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise RemoteProtocolError("bad_request", "text is not valid unicode") from None
    if size > max_bytes:
        raise RemoteProtocolError("too_large", f"text over {max_bytes} bytes")
    return value


def _check_rev(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise RemoteProtocolError("bad_request", f"{name} must be an integer in 0..2**53-1")
    return value


def _is_node_id(value: object) -> TypeGuard[str]:
    return type(value) is str and NODE_ID_RE.fullmatch(value) is not None


def _check_fields(data: Mapping[str, Any], fields: frozenset[str]) -> None:
    if data.keys() != fields:
        raise RemoteProtocolError("bad_request", f"payload must be exactly {sorted(fields)}")


def parse_op(data: Mapping[str, Any], max_text_bytes: int) -> Pane:
    """Validate a ``collab_op`` payload into a (sharer-less) ``Pane``."""
    _check_fields(data, OP_FIELDS)
    key = check_pane_key(data["paneKey"])
    rev = _check_rev(data["rev"], "rev")
    author = data["author"]
    text = check_text(data["text"], max_text_bytes)
    if rev == 0:
        # Rev 0 is the empty pane nobody wrote.
        if author != "" or text != "":
            raise RemoteProtocolError("bad_request", "rev 0 has author \"\" and empty text")
    elif not _is_node_id(author):
        raise RemoteProtocolError("bad_request", "author must be a node id")
    return Pane(key, text, rev, author)
