"""The effects the machines hand back to a shell, in one place.

A machine never does anything itself: it returns values that say what should happen,
and the shell does it, in the order given. ``Send`` is the one frame-to-write type
for every machine (handshake, session, connection). The feature machines (collab,
chat) return the rest; their contract, shared by all of them:

- ``Persist*`` effects come before the sends they enable, so a crash between the two
  loses nothing that went on the wire;
- ``TabEvent`` goes to every tab, ``TabReply`` to the one tab whose command it answers
  (``answered``: with the command's ``req``, and an acknowledgement if nothing else
  answers it);
- ``SendToPeer`` / ``SendChat`` / ``PeerErrorReply`` go to a peer with a live session
  (the machines only emit them for live peers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from .records import ChatMessage, Pane, Status


@dataclass(frozen=True, slots=True)
class Send:
    """Write this text frame to the link."""

    wire: str


@dataclass(frozen=True, slots=True)
class SendToPeer:
    """Send one session message to a peer with a live session."""

    peer_id: str
    type: str
    data: dict[str, Any] = field(hash=False)
    re: str | None = None
    msg_id: str | None = None  # this exact envelope id (a reply will name it in ``re``)


@dataclass(frozen=True, slots=True)
class SendChat:
    """Send ``peer_chat`` with ``data`` using exactly ``msg_id`` as the envelope id
    (SPEC 6.2: the message id *is* the envelope's msg_id, the same on both sides)."""

    peer_id: str
    msg_id: str
    data: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class PeerErrorReply:
    """Answer the peer's envelope ``re`` with ``error {code, message}`` (SPEC 5)."""

    peer_id: str
    re: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class TabEvent:
    """A /ws frame for every tab subscribed to ``channel`` (SPEC 9); with ``only``, for
    the tabs of those names alone; ``skip`` names tabs that do not get it."""

    channel: str
    event: str
    data: dict[str, Any] = field(hash=False)
    only: frozenset[str] | None = None
    skip: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TabReply:
    """A /ws frame for the one tab whose command produced it (e.g. ``rejected``)."""

    channel: str
    event: str
    data: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class PersistPane:
    """Write the pane (text, rev, author, sharers)."""

    pane: Pane


@dataclass(frozen=True, slots=True)
class PersistMessage:
    """Insert a chat message (key: peer id + message id; insert-or-ignore)."""

    message: ChatMessage


@dataclass(frozen=True, slots=True)
class PersistStatus:
    """Update one chat message's status."""

    peer_id: str
    id: str
    status: Status


@dataclass(frozen=True, slots=True)
class PersistReadMark:
    """Everything up to local ``seq`` in this conversation is read."""

    peer_id: str
    seq: int


Effect = (
    SendToPeer | SendChat | PeerErrorReply | TabEvent | TabReply | PersistPane
    | PersistMessage | PersistStatus | PersistReadMark
)


E = TypeVar("E")


def answered(effects: list[E], req: str | None,
             ack: Callable[[], TabReply] | None = None) -> list[E | TabReply]:
    """SPEC 9 answers: every ``TabReply`` of a command carries the command's ``req``;
    if the tab gave a ``req`` and nothing answers it, ``ack()`` does (a command never
    leaves its tab waiting for nothing)."""
    if req is None:
        return list(effects)
    out: list[E | TabReply] = [
        replace(e, data={**e.data, "req": req}) if isinstance(e, TabReply) else e
        for e in effects]
    if ack is not None and not any(isinstance(e, TabReply) for e in effects):
        out.append(answered([ack()], req)[0])
    return out
