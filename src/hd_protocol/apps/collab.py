"""Collaborative panes (SPEC 6.1): last-writer-wins with a revision check.

One ``Panes`` machine per node holds every pane ``{key: Pane(text, rev, author,
sharers)}``. The shell feeds it tab commands (``tab_command``), verified inbound
session messages (``receive``) and session life-cycle (``session_opened`` /
``session_closed``); it executes the effects that come back, in order:

- ``PersistPane(pane)`` — write the pane (text, rev, author, sharers) to storage;
- ``TabEvent(channel, event, data)`` — to every tab subscribed to that channel;
- ``TabReply(channel, event, data)`` — to the one tab whose command this answers;
- ``SendToPeer(peer_id, type, data, re)`` — ``session.send(type, data, now, re=re)``;
- ``PeerErrorReply(peer_id, re, code, message)`` — ``session.reply_error(...)``.

Persist effects always come before the sends they enable, so a crash between the two
loses nothing that went on the wire.

Ordering is by ``(rev, author)`` only, never by a clock, so this machine takes no
``now``. Adoption needs a strictly greater pair, and the machine remembers, per live
peer and pane, the greatest pair that peer is known to hold (it sent it, or we sent it
to it): a state is never sent to a peer that already has it or better. So a given
``(rev, author)`` crosses each link at most once per session, in each direction, no
matter how often messages are duplicated or reordered, and every connected set of
sharers converges on the greatest state written (SPEC 6.1 property;
``tests/property/test_collab_props.py``).

Decisions where SPEC 6.1 is silent (documented here, tested in
``tests/unit/test_collab.py``):

- Pane keys are 1..128 chars of ``[A-Za-z0-9_.:-]`` (``PANE_KEY_RE``); anything else is
  ``bad_request``.
- Rev 0 is the empty pane: ``author == ""`` and ``text == ""``; every rev >= 1 carries a
  node id as author. Revs stop at 2**53 - 1 (the cjson integer range).
- Inbound payloads carry exactly the SPEC fields; a missing, extra or mistyped field is
  ``bad_request``, an over-long text ``too_large``, and a pane the peer may not touch
  ``forbidden``. Each is answered with an ``error`` envelope, never a crash.
- Sharing is mutual: a *trusted* peer whose ``collab_op``/``collab_join`` we accept
  becomes a sharer of that pane (persisted), so a pane shared from one side alone
  still gets our later edits back to that peer. A guest is never added this way: it
  is only ever let in by an explicit ``share`` or by room access.
- Room access (``set_room_peers``) is the shell's view of "shared with P's room": for
  as long as the room lasts those peers count as sharers of the pane (permission,
  pushes, catch-up) without being persisted.
- ``collab_leave`` from P removes P from the pane's sharers and room peers;
  ``unshare`` removes a sharer locally and tells it with ``collab_leave``.
- Tab membership of a pane (``join``/``leave`` on /ws, ``members``, ``presence``) and
  what a tab is answered are ``hd_protocol.apps.collab_tabs.PaneTabs``, which wraps this
  machine: ``state`` TabEvents emitted on a sharers change carry no ``members`` and
  ``PaneTabs`` adds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Final

from ..cjson import MAX_INT
from ..effects import PeerErrorReply, PersistPane, SendToPeer, TabEvent, TabReply
from ..errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ..limits import DEFAULT_LIMITS, Limits
from ..peer.session import Message
from ..records import (
    KEY_FIELDS,
    PANE_KEY_RE,
    Level,
    Pane,
    Version,
    _check_fields,
    _check_rev,
    _is_node_id,
    check_pane_key,
    check_text,
    parse_op,
)
from ..seal import check_sealed_size
from .tabcommands import CollabOp, CollabShare, CollabUnshare, check_node_id

CHANNEL: Final = "collab"
COLLAB_TYPES = frozenset({"collab_op", "collab_join", "collab_leave"})



CollabEffect = SendToPeer | TabEvent | TabReply | PersistPane | PeerErrorReply


# --- the machine -------------------------------------------------------------------


class Panes:
    """Every pane of one node, with the SPEC 6.1 rules. Pure: no I/O, no clock."""

    def __init__(
        self,
        self_id: str,
        panes: Iterable[Pane] = (),
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if not _is_node_id(self_id):
            raise LocalProtocolError("bad_request", "self_id must be a node id")
        self.self_id = self_id
        self.limits = limits
        self._panes: dict[str, Pane] = {p.key: p for p in panes}
        self._live: dict[str, Level] = {}
        self._room: dict[str, frozenset[str]] = {}
        # peer -> pane key -> greatest version that peer is known to hold this session.
        self._known: dict[str, dict[str, Version]] = {}

    # --- queries ----------------------------------------------------------------------

    def pane(self, key: str) -> Pane:
        """The pane's state; a pane nobody wrote is rev 0, empty, unshared."""
        return self._panes.get(key) or Pane(key)

    @property
    def panes(self) -> Mapping[str, Pane]:
        return dict(self._panes)

    def is_live(self, peer_id: str) -> bool:
        return peer_id in self._live

    def sharers(self, key: str) -> frozenset[str]:
        """Persisted sharers plus the peers let in through a room."""
        return self.pane(key).sharers | self._room.get(key, frozenset())

    def state_data(self, key: str) -> dict[str, Any]:
        pane = self.pane(key)
        return {**pane.op_data(), "sharers": sorted(self.sharers(key))}

    def state_event(self, pane_key: object, members: Iterable[str] | None = None) -> TabReply:
        """The /ws ``state`` frame for a tab that joins a pane (SPEC 9).

        Validates ``pane_key`` (raises ``RemoteProtocolError("bad_request")``); ``members``
        are the tabs/peers viewing the pane, which only the shell tracks.
        """
        key = check_pane_key(pane_key)
        data = self.state_data(key)
        if members is not None:
            data["members"] = sorted(members)
        return TabReply(CHANNEL, "state", data)

    def list_event(self, members: Mapping[str, Iterable[str]]) -> TabReply:
        """The /ws ``panes`` list: every pane stored, shared through a room or open in a
        tab (``members``, the shell's), by key, without its text."""
        panes = [{"paneKey": k, "rev": p.rev, "author": p.author,
                  "sharers": sorted(self.sharers(k)), "members": sorted(members.get(k, ()))}
                 for k in sorted(self._panes.keys() | self._room.keys() | members.keys())
                 for p in (self.pane(k),)]
        return TabReply(CHANNEL, "panes", {"panes": panes})

    # --- sessions -----------------------------------------------------------------------

    def session_opened(self, peer_id: str, level: Level) -> list[CollabEffect]:
        """A session with ``peer_id`` is up: catch-up on every pane shared with it.

        SPEC 6.1: on (re)open each side sends its state of every shared pane, so edits
        made while apart converge. What the peer held before is forgotten: envelopes in
        flight on a dropped session may never have arrived.
        """
        self._live[peer_id] = level
        self._known[peer_id] = {}
        out: list[CollabEffect] = []
        for key in sorted(self._panes.keys() | self._room.keys()):
            if peer_id in self.sharers(key):
                out.extend(self._send_state(peer_id, self.pane(key), force=True))
        return out

    def session_closed(self, peer_id: str) -> list[CollabEffect]:
        self._live.pop(peer_id, None)
        self._known.pop(peer_id, None)
        return []

    def set_room_peers(self, pane_key: str, peers: Iterable[str]) -> list[CollabEffect]:
        """Room access: ``peers`` (the members of the room the pane is shared with)
        count as sharers until replaced (SPEC 4.1 "shared with that peer or its room").

        Newly admitted live peers get our state, as with ``share``. Our own id among
        the members is skipped; anything that is not a node id is ``bad_request``."""
        key = check_pane_key(pane_key)
        new = frozenset(self._check_peer(p) for p in peers if p != self.self_id)
        before = self.sharers(key)
        if new:
            self._room[key] = new
        else:
            self._room.pop(key, None)
        out: list[CollabEffect] = []
        if self.sharers(key) != before:
            out.append(self._state_changed(key))
        for peer in sorted(new - before):
            if peer in self._live:
                out.extend(self._send_state(peer, self.pane(key)))
        return out

    # --- local commands (from tabs) -----------------------------------------------------

    def command(self, cmd: CollabOp | CollabShare | CollabUnshare) -> list[CollabEffect]:
        """A /ws ``collab`` command that changes panes, as ``tabcommands`` decoded it
        (key and node id already checked there). What the machine alone can judge (its
        own id, its size limits) raises ``ProtocolError``; the shell answers the tab
        with an ``error`` frame carrying its code. Tab membership (``join``/``leave``)
        and what the tab is answered are ``hd_protocol.apps.collab_tabs``'."""
        if isinstance(cmd, CollabOp):
            return self._write(cmd.paneKey, cmd.baseRev, cmd.text)
        if isinstance(cmd, CollabShare):
            return self._share(cmd.paneKey, self._not_self(cmd.node_id))
        return self._unshare(cmd.paneKey, self._not_self(cmd.node_id))

    def local_write(self, pane_key: object, base_rev: object, text: object) -> list[CollabEffect]:
        """SPEC 6.1 local write. A stale ``base_rev`` gets ``rejected`` (a TabReply with
        the current state, for the writer to rebase, SPEC 6.1.1); otherwise the pane
        moves to ``rev + 1`` authored by us and goes to tabs and live sharers."""
        return self._write(check_pane_key(pane_key), _check_rev(base_rev, "baseRev"), text)

    def _write(self, key: str, base: int, text: object) -> list[CollabEffect]:
        body = check_text(text, self.limits.collab_text_bytes)
        pane = self.pane(key)
        if base != pane.rev:
            return [TabReply(CHANNEL, "rejected", pane.op_data())]
        if pane.rev >= MAX_INT:
            raise RemoteProtocolError("bad_request", "pane revision exhausted")
        new = replace(pane, text=body, rev=pane.rev + 1, author=self.self_id)
        # Every sharer must get this state in one collab_op: a text that passes the
        # byte limit but not once escaped and sealed would be stored here and never
        # reach anyone (the sharers would diverge for good). Refuse it, change nothing.
        check_sealed_size(new.op_data(), self.limits.max_envelope_bytes)
        self._panes[key] = new
        out: list[CollabEffect] = [PersistPane(new), self._op_event(new, self.self_id)]
        out.extend(self._push(new, exclude=None))
        return out

    def share(self, pane_key: object, peer_id: object) -> list[CollabEffect]:
        """Add a sharer; a live one gets our state right away."""
        return self._share(check_pane_key(pane_key), self._check_peer(peer_id))

    def _share(self, key: str, peer: str) -> list[CollabEffect]:
        pane = self.pane(key)
        if peer in pane.sharers:
            return []
        new = replace(pane, sharers=pane.sharers | {peer})
        self._panes[key] = new
        out: list[CollabEffect] = [PersistPane(new), self._state_changed(key)]
        if peer in self._live:
            out.extend(self._send_state(peer, new))
        return out

    def unshare(self, pane_key: object, peer_id: object) -> list[CollabEffect]:
        """Remove a sharer; a live one is told with ``collab_leave`` so it drops us too."""
        return self._unshare(check_pane_key(pane_key), self._check_peer(peer_id))

    def _unshare(self, key: str, peer: str) -> list[CollabEffect]:
        pane = self.pane(key)
        if peer not in pane.sharers:
            return []
        new = replace(pane, sharers=pane.sharers - {peer})
        self._panes[key] = new
        self._known.get(peer, {}).pop(key, None)
        out: list[CollabEffect] = [PersistPane(new), self._state_changed(key)]
        if peer in self._live:
            out.append(SendToPeer(peer, "collab_leave", {"paneKey": key}))
        return out

    def join_peer(self, pane_key: object, peer_id: object) -> list[CollabEffect]:
        """Ask a peer for its state of a pane (``collab_join``); the peer becomes a
        sharer first, so its answer is accepted even if it is only a guest to us."""
        out = self.share(pane_key, peer_id)
        key, peer = check_pane_key(pane_key), self._check_peer(peer_id)
        if peer in self._live:
            out.append(SendToPeer(peer, "collab_join", {"paneKey": key}))
        return out

    # --- inbound (from peers) ---------------------------------------------------------

    def receive(self, peer_id: str, msg: Message) -> list[CollabEffect]:
        """A verified ``collab_*`` message from a peer with a live session.

        ``msg`` may also be the ``message`` of a session ``Reply`` (the answer to our
        ``collab_join`` when it was sent as a request). Bad payloads and missing
        permission become a ``PeerErrorReply``; nothing here raises for peer input.
        """
        level = self._live.get(peer_id)
        if level is None:
            raise LocalProtocolError("no_session", "receive() before session_opened()")
        if msg.type not in COLLAB_TYPES:
            raise LocalProtocolError("bad_type", f"{msg.type} is not a collab message")
        try:
            if msg.type == "collab_op":
                return self._on_op(peer_id, level, msg)
            _check_fields(msg.data, KEY_FIELDS)
            key = check_pane_key(msg.data["paneKey"])
            if msg.type == "collab_join":
                return self._on_join(peer_id, level, key, msg.msg_id)
            return self._on_leave(peer_id, key)
        except ProtocolError as exc:
            return [PeerErrorReply(peer_id, msg.msg_id, exc.code, exc.message)]

    def _on_op(self, peer: str, level: Level, msg: Message) -> list[CollabEffect]:
        incoming = parse_op(msg.data, self.limits.collab_text_bytes)
        key = incoming.key
        self._require_permission(peer, level, key)
        self._note_known(peer, key, incoming.version)
        pane = self.pane(key)
        new_sharer = self._joins_as_sharer(peer, level, key)
        if new_sharer:
            pane = replace(pane, sharers=pane.sharers | {peer})
        newer = incoming.version > pane.version
        older = incoming.version < pane.version
        if newer:
            pane = replace(pane, text=incoming.text, rev=incoming.rev, author=incoming.author)
        out: list[CollabEffect] = []
        if newer or new_sharer:
            self._panes[key] = pane
            out.append(PersistPane(pane))  # one write carries both changes
        if new_sharer:
            out.append(self._state_changed(key))
        if newer:
            out.append(self._op_event(pane, peer))
            # SPEC 6.1: forward to our other sharers, never back to P.
            out.extend(self._push(pane, exclude=peer))
        elif older:
            # SPEC 6.1: P is behind — catch it up (unless it already has this).
            out.extend(self._send_state(peer, pane, re=msg.msg_id))
        return out

    def _on_join(self, peer: str, level: Level, key: str, msg_id: str) -> list[CollabEffect]:
        self._require_permission(peer, level, key)
        out: list[CollabEffect] = []
        pane = self.pane(key)
        if self._joins_as_sharer(peer, level, key):
            pane = replace(pane, sharers=pane.sharers | {peer})
            self._panes[key] = pane
            out += [PersistPane(pane), self._state_changed(key)]
        # The peer asked: answer even if we believe it already holds this state.
        out.extend(self._send_state(peer, pane, re=msg_id, force=True))
        return out

    def _on_leave(self, peer: str, key: str) -> list[CollabEffect]:
        room = self._room.get(key, frozenset())
        pane = self._panes.get(key)
        self._known.get(peer, {}).pop(key, None)
        if peer in room:
            self._room[key] = room - {peer}
        if pane is None or peer not in pane.sharers:
            # A room member leaving changes the sharers too: the tabs are told.
            return [self._state_changed(key)] if peer in room else []
        new = replace(pane, sharers=pane.sharers - {peer})
        self._panes[key] = new
        return [PersistPane(new), self._state_changed(key)]

    # --- helpers ------------------------------------------------------------------------

    def _check_peer(self, peer_id: object) -> str:
        return self._not_self(check_node_id(peer_id))

    def _not_self(self, peer_id: str) -> str:
        if peer_id == self.self_id:
            raise RemoteProtocolError("bad_request", "a pane is not shared with its own node")
        return peer_id

    def _require_permission(self, peer: str, level: Level, key: str) -> None:
        # SPEC 4.1 / 6.1: trusted peers may touch any pane; guests only panes shared
        # with them or their room.
        if level != "trusted" and peer not in self.sharers(key):
            raise RemoteProtocolError("forbidden", "this pane is not shared with you")

    def _joins_as_sharer(self, peer: str, level: Level, key: str) -> bool:
        """A trusted peer that works on a pane becomes a sharer of it (sharing is
        mutual); a guest only ever gets in through ``share`` or a room."""
        return level == "trusted" and peer not in self.sharers(key)

    def _note_known(self, peer: str, key: str, version: Version) -> None:
        known = self._known.setdefault(peer, {})
        if key not in known or version > known[key]:
            known[key] = version

    def _send_state(
        self, peer: str, pane: Pane, *, re: str | None = None, force: bool = False
    ) -> list[CollabEffect]:
        known = self._known.setdefault(peer, {})
        if not force and _known_at_least(known, pane.key, pane.version):
            return []
        self._note_known(peer, pane.key, pane.version)
        return [SendToPeer(peer, "collab_op", pane.op_data(), re=re)]

    def _push(self, pane: Pane, *, exclude: str | None) -> list[CollabEffect]:
        out: list[CollabEffect] = []
        for peer in sorted(self.sharers(pane.key)):
            if peer != exclude and peer in self._live:
                out.extend(self._send_state(peer, pane))
        return out

    def _state_changed(self, key: str) -> TabEvent:
        # The shell adds ``members`` before it broadcasts (it tracks the tabs).
        return TabEvent(CHANNEL, "state", self.state_data(key))

    def _op_event(self, pane: Pane, origin: str) -> TabEvent:
        return TabEvent(CHANNEL, "op", {**pane.op_data(), "from": origin})


def _known_at_least(known: Mapping[str, Version], key: str, version: Version) -> bool:
    have = known.get(key)
    return have is not None and have >= version


__all__ = [
    "CHANNEL", "COLLAB_TYPES", "KEY_FIELDS", "PANE_KEY_RE", "CollabEffect", "Level", "Pane",
    "Panes", "PeerErrorReply", "PersistPane", "SendToPeer", "TabEvent", "TabReply", "Version",
    "check_pane_key", "check_text", "parse_op",
]
