"""Panes as the tabs see them (SPEC 9 ``collab``): who has which pane open, and what
each tab is answered and pushed.

``PaneTabs`` wraps the node's ``Panes`` machine (SPEC 6.1). It holds each pane's
*members* — the names of the tabs that joined it (the shell names each tab once,
uniquely) — takes the typed ``collab`` commands (``hd_protocol.apps.tabcommands``), the
inbound ``collab_*`` messages and the session life-cycle, and returns the pane
machine's effects with these rules applied (each tested in
``tests/unit/test_collab_tabs.py``):

- ``join`` answers the tab with the pane's ``state`` (``members`` include the joiner),
  then every tab gets ``presence {paneKey, members}``. ``leave`` tells every tab the
  new ``presence``, and answers the leaver with that ``presence`` if it gave a ``req``.
  A tab that goes away leaves every pane it had joined, in the order it joined them.
- ``op``/``share``/``unshare`` are the machine's; when none of its effects answers the
  tab (a write is answered only when ``rejected``), a tab that gave a ``req`` gets the
  pane's ``state`` as its acknowledgement (SPEC 9 has no ack event).
- ``list`` answers with ``panes``: every pane stored, shared through a room or open in
  a tab, without its text.
- Every direct answer (``TabReply``) carries the command's ``req``.
- ``state`` events of the machine (the sharers changed) get ``members`` too.
- A pane's ``op`` and ``state`` events go only to the tabs that joined it (its text is
  for those that show it: a tab with another pane open got every write of every pane).
  The other tabs get ``written {paneKey, rev, author, from}`` for a write: who wrote
  where, without the text.
- ``panes`` is also pushed to every tab (a ``TabEvent``) whenever that list, revisions
  and authors aside, is not the one pushed last: a pane appears, or its sharers or its
  members change — never on a mere write. It follows the effects that changed it and
  comes before the command's acknowledgement.

Pure: no I/O, no clock (ordering is by revision, SPEC 6.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..effects import PersistPane, TabEvent, TabReply, answered
from ..errors import LocalProtocolError
from ..peer.session import Message
from .collab import CHANNEL, CollabEffect, Level, Panes
from .tabcommands import CollabJoin, CollabLeave, CollabOp, CollabShare, CollabUnshare, Command

_Listed = list[tuple[str, list[str], list[str]]]  # (paneKey, sharers, members)


class PaneTabs:
    def __init__(self, panes: Panes) -> None:
        self.panes = panes
        self._members: dict[str, set[str]] = {}  # pane key -> tab names
        self._joined: dict[str, list[str]] = {}  # tab name -> pane keys, in join order
        self._listed: _Listed = []  # the list last pushed (``panes``), revisions aside
        self._listed_keys: set[str] = set()
        self._panes_pushed()  # what the panes loaded from storage make is the start

    # --- queries ----------------------------------------------------------------------

    def members(self, key: str) -> list[str]:
        """The tabs that have the pane open, by name."""
        return sorted(self._members.get(key, ()))

    def list_reply(self) -> TabReply:
        return self.panes.list_event(self._members)

    # --- tab commands -------------------------------------------------------------------

    def command(self, cmd: Command, tab: str | None) -> list[CollabEffect]:
        """A decoded ``collab`` command from tab ``tab`` (None: no tab behind it, so no
        membership changes). What the machine refuses raises ``ProtocolError``."""
        if isinstance(cmd, CollabJoin | CollabLeave):
            return self._join_or_leave(cmd, tab)
        if cmd.event == "list":
            reply: list[CollabEffect] = [self.list_reply()]
            return answered(reply, cmd.req)
        if not isinstance(cmd, CollabOp | CollabShare | CollabUnshare):
            raise LocalProtocolError("unknown_event", f"collab has no command {cmd.event}")
        key = cmd.paneKey
        return answered(self._finish(self.panes.command(cmd)), cmd.req,
                        lambda: TabReply(CHANNEL, "state", self._state(key)))

    def tab_gone(self, tab: str) -> list[CollabEffect]:
        """Tab ``tab`` went away: it leaves every pane it had open."""
        out: list[CollabEffect] = []
        for key in self._joined.pop(tab, []):
            self._members[key].discard(tab)
            if not self._members[key]:
                del self._members[key]
            out.extend(self._presence(key))
        return out

    def _join_or_leave(self, cmd: CollabJoin | CollabLeave, tab: str | None) -> list[CollabEffect]:
        key = cmd.paneKey
        names = self._members.setdefault(key, set())
        if tab is not None:
            keys = self._joined.setdefault(tab, [])
            if isinstance(cmd, CollabJoin) and tab not in names:
                names.add(tab)
                keys.append(key)
            elif isinstance(cmd, CollabLeave) and tab in names:
                names.discard(tab)
                keys.remove(key)
            if not keys:
                del self._joined[tab]
        if not names:
            del self._members[key]
        if isinstance(cmd, CollabJoin):
            state = TabReply(CHANNEL, "state", self._state(key))
            return [*answered([state], cmd.req), *self._presence(key)]
        out = self._presence(key)
        if cmd.req is not None and tab is not None:
            out += answered([TabReply(CHANNEL, "presence", self._presence_data(key))], cmd.req)
        return out

    # --- everything else the pane machine takes ---------------------------------------------

    def receive(self, peer_id: str, msg: Message) -> list[CollabEffect]:
        return self._finish(self.panes.receive(peer_id, msg))

    def session_opened(self, peer_id: str, level: Level) -> list[CollabEffect]:
        return self._finish(self.panes.session_opened(peer_id, level))

    def session_closed(self, peer_id: str) -> list[CollabEffect]:
        return self._finish(self.panes.session_closed(peer_id))

    def set_room_peers(self, pane_key: str, peers: Sequence[str]) -> list[CollabEffect]:
        return self._finish(self.panes.set_room_peers(pane_key, peers))

    # --- helpers ------------------------------------------------------------------------

    def _state(self, key: str) -> dict[str, object]:
        return {**self.panes.state_data(key), "members": self.members(key)}

    def _presence_data(self, key: str) -> dict[str, object]:
        return {"paneKey": key, "members": self.members(key)}

    def _presence(self, key: str) -> list[CollabEffect]:
        return [TabEvent(CHANNEL, "presence", self._presence_data(key)), *self._panes_pushed()]

    def _finish(self, effects: Sequence[CollabEffect]) -> list[CollabEffect]:
        """Members into the machine's ``state`` events; ``panes`` after them if the list
        changed (only a new pane or a ``state`` event can change it)."""
        out: list[CollabEffect] = []
        maybe = False
        for e in effects:
            if isinstance(e, TabEvent) and e.channel == CHANNEL and e.event in ("state", "op"):
                members = frozenset(self._members.get(e.data["paneKey"], ()))
                if e.event == "state":
                    maybe = True
                    e = TabEvent(CHANNEL, "state", {**e.data, "members": sorted(members)},
                                 only=members)
                else:
                    out.append(TabEvent(CHANNEL, "written", {
                        k: e.data[k] for k in ("paneKey", "rev", "author", "from")},
                        skip=members))
                    e = TabEvent(CHANNEL, "op", e.data, only=members)
                if not members:
                    continue
            elif isinstance(e, PersistPane):
                maybe |= e.pane.key not in self._listed_keys
            out.append(e)
        return [*out, *self._panes_pushed()] if maybe else out

    def _panes_pushed(self) -> list[CollabEffect]:
        panes = self.list_reply().data["panes"]
        listed = [(p["paneKey"], p["sharers"], p["members"]) for p in panes]
        if listed == self._listed:
            return []
        self._listed, self._listed_keys = listed, {k for k, _, _ in listed}
        return [TabEvent(CHANNEL, "panes", {"panes": panes})]


__all__ = ["PaneTabs"]
