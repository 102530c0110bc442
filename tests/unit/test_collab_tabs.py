"""SPEC 9 ``collab`` as the tabs see it (``hd_protocol.apps.collab_tabs.PaneTabs``): which tab
has which pane open, what the tab whose command it was is answered, and what every
tab is pushed. One test per rule of the module's docstring, each on the exact effects
(types, order, data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol.apps.collab import Pane, Panes
from hd_protocol.apps.collab_tabs import PaneTabs
from hd_protocol.apps.tabcommands import Command, decode_command
from hd_protocol.effects import PersistPane, SendToPeer, TabEvent, TabReply
from hd_protocol.errors import LocalProtocolError
from hd_protocol.limits import Limits
from hd_protocol.peer.session import Message

ME = "m" * 16
P = "p" * 16
Q = "q" * 16
KEY = "scratch"
MID = "ab" * 16


# --- helpers --------------------------------------------------------------------------


def tabs(*panes: Pane, live: dict[str, str] | None = None) -> PaneTabs:
    machine = Panes(ME, panes, limits=Limits())
    for peer, level in (live or {}).items():
        machine.session_opened(peer, level)  # type: ignore[arg-type]
    return PaneTabs(machine)


def cmd(event: str, req: str | None = None, **data: Any) -> Command:
    """A ``collab`` command as the node decodes it from a tab's frame."""
    return decode_command("collab", event, {**data, **({"req": req} if req else {})})


def msg(type: str, data: dict[str, Any]) -> Message:
    return Message(type, MID, None, data, 0)


def state(pane: Pane, sharers: tuple[str, ...] = (), members: tuple[str, ...] = (),
          **extra: Any) -> dict[str, Any]:
    return {**pane.op_data(), "sharers": sorted(sharers), "members": sorted(members), **extra}


def op_events(pane: Pane, origin: str, *members: str) -> list[TabEvent]:
    """A write as the tabs get it: ``op`` to the tabs that joined the pane, ``written``
    (who wrote where, no text) to every other."""
    d = {**pane.op_data(), "from": origin}
    written = TabEvent("collab", "written", {k: d[k] for k in ("paneKey", "rev", "author", "from")},
                       skip=frozenset(members))
    return [written, *([TabEvent("collab", "op", d, only=frozenset(members))] if members else [])]


def state_events(pane: Pane, sharers: tuple[str, ...], members: tuple[str, ...]
                 ) -> list[TabEvent]:
    """The machine's ``state`` event as the tabs get it: only those that joined."""
    return [TabEvent("collab", "state", state(pane, sharers, members), only=frozenset(members))
            ] if members else []


def presence(key: str, *members: str) -> TabEvent:
    return TabEvent("collab", "presence", {"paneKey": key, "members": sorted(members)})


def item(key: str, rev: int = 0, author: str = "", sharers: tuple[str, ...] = (),
         members: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"paneKey": key, "rev": rev, "author": author, "sharers": sorted(sharers),
            "members": sorted(members)}


def pushed(*items: dict[str, Any]) -> TabEvent:
    return TabEvent("collab", "panes", {"panes": list(items)})


def joined(t: PaneTabs, *pairs: tuple[str, str]) -> PaneTabs:
    """Tabs join panes, (tab, key) in order; what that emits is another test's."""
    for tab, key in pairs:
        t.command(cmd("join", paneKey=key), tab)
    return t


# --- join / leave / a tab going away ----------------------------------------------------


def test_join_answers_the_tab_with_the_state_then_tells_every_tab_the_presence() -> None:
    pane = Pane(KEY, "hi", 2, P, frozenset({P}))
    t = tabs(pane)
    assert t.command(cmd("join", paneKey=KEY), "tab-1") == [
        TabReply("collab", "state", state(pane, (P,), ("tab-1",))),
        presence(KEY, "tab-1"),
        pushed(item(KEY, 2, P, (P,), ("tab-1",))),
    ]
    assert t.command(cmd("join", "r1", paneKey=KEY), "tab-2") == [
        TabReply("collab", "state", state(pane, (P,), ("tab-1", "tab-2"), req="r1")),
        presence(KEY, "tab-1", "tab-2"),
        pushed(item(KEY, 2, P, (P,), ("tab-1", "tab-2"))),
    ]
    assert t.members(KEY) == ["tab-1", "tab-2"]
    # A tab joining a pane it already has open changes nothing the list shows.
    assert t.command(cmd("join", paneKey=KEY), "tab-2") == [
        TabReply("collab", "state", state(pane, (P,), ("tab-1", "tab-2"))),
        presence(KEY, "tab-1", "tab-2"),
    ]


def test_leave_tells_every_tab_and_answers_the_leaver_only_if_it_gave_a_req() -> None:
    t = joined(tabs(), ("tab-1", KEY), ("tab-2", KEY))
    assert t.command(cmd("leave", "r2", paneKey=KEY), "tab-1") == [
        presence(KEY, "tab-2"),
        pushed(item(KEY, members=("tab-2",))),
        TabReply("collab", "presence", {"paneKey": KEY, "members": ["tab-2"], "req": "r2"}),
    ]
    # Without a req: no answer. The pane is neither stored nor shared, so with its last
    # tab gone it is out of the list.
    assert t.command(cmd("leave", paneKey=KEY), "tab-2") == [presence(KEY), pushed()]
    assert t.members(KEY) == []


def test_a_command_without_a_tab_changes_no_membership() -> None:
    t = joined(tabs(), ("tab-1", KEY))
    assert t.command(cmd("join", "r", paneKey=KEY), None) == [
        TabReply("collab", "state", state(Pane(KEY), members=("tab-1",), req="r")),
        presence(KEY, "tab-1"),
    ]
    assert t.command(cmd("leave", "r", paneKey=KEY), None) == [presence(KEY, "tab-1")]
    assert t.members(KEY) == ["tab-1"]
    # Nor does one on a pane nobody has open (it stays out of the list).
    assert t.command(cmd("join", paneKey="other"), None) == [
        TabReply("collab", "state", state(Pane("other"))), presence("other")]
    assert t.members("other") == []
    assert t.list_reply().data["panes"] == [item(KEY, members=("tab-1",))]


def test_a_tab_that_goes_away_leaves_every_pane_it_had_joined_in_join_order() -> None:
    # Joined "b" before "a": the order of leaving is not the order of the keys.
    t = joined(tabs(), ("tab-1", "b"), ("tab-1", "a"), ("tab-2", "a"))
    assert t.tab_gone("tab-1") == [
        presence("b"),
        pushed(item("a", members=("tab-1", "tab-2"))),
        presence("a", "tab-2"),
        pushed(item("a", members=("tab-2",))),
    ]
    assert (t.members("a"), t.members("b")) == (["tab-2"], [])
    assert t.tab_gone("tab-1") == []


def test_a_tab_leaves_in_its_own_join_order_even_if_another_tab_opened_a_pane_first() -> None:
    t = joined(tabs(), ("tab-2", "y"), ("tab-1", "x"), ("tab-1", "y"))
    assert [e for e in t.tab_gone("tab-1") if isinstance(e, TabEvent)
            and e.event == "presence"] == [presence("x"), presence("y", "tab-2")]


# --- op / share / unshare ---------------------------------------------------------------


def test_a_write_with_a_req_is_acknowledged_with_the_state_and_without_one_is_not() -> None:
    pane = Pane(KEY, "old", 3, P, frozenset({P}))
    t = joined(tabs(pane, live={P: "trusted"}), ("tab-1", KEY))
    new = Pane(KEY, "new", 4, ME, frozenset({P}))
    assert t.command(cmd("op", "w1", paneKey=KEY, baseRev=3, text="new"), "tab-1") == [
        PersistPane(new),
        *op_events(new, ME, "tab-1"),
        SendToPeer(P, "collab_op", new.op_data()),
        TabReply("collab", "state", state(new, (P,), ("tab-1",), req="w1")),
    ]
    newer = Pane(KEY, "newer", 5, ME, frozenset({P}))
    assert t.command(cmd("op", paneKey=KEY, baseRev=4, text="newer"), "tab-1") == [
        PersistPane(newer),
        *op_events(newer, ME, "tab-1"),
        SendToPeer(P, "collab_op", newer.op_data()),
    ]


def test_a_panes_op_and_state_go_only_to_the_tabs_that_joined_it_the_rest_learn_who_wrote(
) -> None:
    pane = Pane("a", "old", 1, P, frozenset({P}))
    t = joined(tabs(pane, live={P: "trusted"}), ("tab-1", "a"), ("tab-2", "b"), ("tab-3", "a"))
    out = t.command(cmd("op", paneKey="a", baseRev=1, text="mine"), "tab-2")
    events = [e for e in out if isinstance(e, TabEvent)]
    assert [(e.event, e.only, e.skip) for e in events] == [
        ("written", None, frozenset({"tab-1", "tab-3"})),
        ("op", frozenset({"tab-1", "tab-3"}), frozenset())]
    assert "text" not in events[0].data and events[1].data["text"] == "mine"
    # A peer's write and a change of sharers: the same, whoever made them.
    theirs = Pane("a", "theirs", 3, P, frozenset({P}))
    out = t.receive(P, msg("collab_op", theirs.op_data()))
    assert [(e.event, e.only, e.skip) for e in out if isinstance(e, TabEvent)] == [
        ("written", None, frozenset({"tab-1", "tab-3"})),
        ("op", frozenset({"tab-1", "tab-3"}), frozenset())]
    t.command(cmd("leave", paneKey="a"), "tab-3")
    out = t.command(cmd("unshare", paneKey="a", node_id=P), "tab-1")
    assert [(e.event, e.only) for e in out if isinstance(e, TabEvent)] == [
        ("state", frozenset({"tab-1"})), ("panes", None)]


def test_a_rejected_write_is_answered_with_the_rejection_and_no_state() -> None:
    pane = Pane(KEY, "theirs", 5, P, frozenset({P}))
    t = joined(tabs(pane), ("tab-1", KEY))
    assert t.command(cmd("op", "w2", paneKey=KEY, baseRev=4, text="mine"), "tab-1") == [
        TabReply("collab", "rejected", {**pane.op_data(), "req": "w2"})]
    assert t.command(cmd("op", paneKey=KEY, baseRev=4, text="mine"), "tab-1") == [
        TabReply("collab", "rejected", pane.op_data())]
    assert t.panes.pane(KEY) == pane


def test_share_and_unshare_are_acknowledged_after_the_pushed_list() -> None:
    pane = Pane(KEY, "t", 1, ME)
    t = joined(tabs(pane, live={P: "guest"}), ("tab-1", KEY))
    shared = Pane(KEY, "t", 1, ME, frozenset({P}))
    assert t.command(cmd("share", "s1", paneKey=KEY, node_id=P), "tab-1") == [
        PersistPane(shared),
        *state_events(shared, (P,), ("tab-1",)),
        SendToPeer(P, "collab_op", shared.op_data()),
        pushed(item(KEY, 1, ME, (P,), ("tab-1",))),
        TabReply("collab", "state", state(shared, (P,), ("tab-1",), req="s1")),
    ]
    # Sharing again changes nothing: the ack alone, and nothing at all without a req.
    assert t.command(cmd("share", "s2", paneKey=KEY, node_id=P), "tab-1") == [
        TabReply("collab", "state", state(shared, (P,), ("tab-1",), req="s2"))]
    assert t.command(cmd("share", paneKey=KEY, node_id=P), "tab-1") == []
    assert t.command(cmd("unshare", "u1", paneKey=KEY, node_id=P), "tab-1") == [
        PersistPane(pane),
        *state_events(pane, (), ("tab-1",)),
        SendToPeer(P, "collab_leave", {"paneKey": KEY}),
        pushed(item(KEY, 1, ME, (), ("tab-1",))),
        TabReply("collab", "state", state(pane, (), ("tab-1",), req="u1")),
    ]
    assert t.command(cmd("unshare", paneKey=KEY, node_id=P), "tab-1") == []


# --- list ---------------------------------------------------------------------------------


def test_list_answers_every_pane_stored_shared_or_open_without_text_with_the_req() -> None:
    t = tabs(Pane("stored", "secret text", 2, P, frozenset({P})))
    t.set_room_peers("room", [Q])
    joined(t, ("tab-1", "open"))
    panes = [item("open", members=("tab-1",)), item("room", sharers=(Q,)),
             item("stored", 2, P, (P,))]
    assert t.command(cmd("list", "l1"), "tab-1") == [
        TabReply("collab", "panes", {"panes": panes, "req": "l1"})]
    assert t.command(cmd("list"), None) == [TabReply("collab", "panes", {"panes": panes})]
    # An answer, not a push: not even the first list of a node that holds panes.
    assert tabs(Pane("stored", "x", 1, P)).command(cmd("list"), None) == [
        TabReply("collab", "panes", {"panes": [item("stored", 1, P)]})]


# --- the machine's own effects ----------------------------------------------------------


def test_the_machines_state_events_get_the_members() -> None:
    pane = Pane(KEY, "t", 1, ME, frozenset({P}))
    t = joined(tabs(pane, live={P: "trusted", Q: "guest"}), ("tab-1", KEY), ("tab-2", KEY))
    left = Pane(KEY, "t", 1, ME)
    assert t.receive(P, msg("collab_leave", {"paneKey": KEY})) == [
        PersistPane(left),
        *state_events(left, (), ("tab-1", "tab-2")),
        pushed(item(KEY, 1, ME, (), ("tab-1", "tab-2"))),
    ]
    assert t.set_room_peers(KEY, [Q]) == [
        *state_events(left, (Q,), ("tab-1", "tab-2")),
        SendToPeer(Q, "collab_op", left.op_data()),
        pushed(item(KEY, 1, ME, (Q,), ("tab-1", "tab-2"))),
    ]


# --- the pushed list --------------------------------------------------------------------


def test_panes_is_pushed_when_a_pane_appears_and_never_on_a_mere_write() -> None:
    t = tabs(live={P: "trusted"})
    first = Pane("new", "a", 1, ME)
    assert t.command(cmd("op", paneKey="new", baseRev=0, text="a"), None) == [
        PersistPane(first),
        *op_events(first, ME),
        pushed(item("new", 1, ME)),
    ]
    second = Pane("new", "b", 2, ME)
    assert t.command(cmd("op", paneKey="new", baseRev=1, text="b"), None) == [
        PersistPane(second), *op_events(second, ME)]
    # The list pushed last says rev 1; that alone is no reason to push it again.
    assert t.command(cmd("join", paneKey="new"), None) == [
        TabReply("collab", "state", state(second)), presence("new")]
    # A trusted peer's op on a pane we never had: it appears, with the peer as sharer.
    theirs = Pane("peer", "x", 1, P, frozenset({P}))
    assert t.receive(P, msg("collab_op", theirs.op_data())) == [
        PersistPane(theirs),
        *op_events(theirs, P),  # no tab has it open: no state, no op
        pushed(item("new", 2, ME), item("peer", 1, P, (P,))),
    ]
    # Its next op is a mere write: revisions aside, the list is the one pushed last.
    newer = Pane("peer", "y", 2, P, frozenset({P}))
    assert t.receive(P, msg("collab_op", newer.op_data())) == [
        PersistPane(newer), *op_events(newer, P)]
    # Sessions coming and going change no sharers, so nothing is pushed either.
    assert t.session_closed(P) == []
    assert t.session_opened(P, "trusted") == [
        SendToPeer(P, "collab_op", newer.op_data())]
    assert t.set_room_peers("peer", [P]) == []  # already a sharer


def test_the_first_write_to_a_stored_pane_pushes_no_list() -> None:
    t = tabs(Pane(KEY, "a", 1, ME))
    out = t.command(cmd("op", paneKey=KEY, baseRev=1, text="b"), None)
    assert [e for e in out if isinstance(e, TabEvent) and e.event == "panes"] == []


# --- what collab does not have -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CollabRename(Command):
    """A collab command the table does not hold (never entered in ``COMMANDS``)."""

    channel: ClassVar[str] = "collab"
    event: ClassVar[str] = "rename"


@pytest.mark.parametrize("command", [CollabRename(req="r"), decode_command("system", "ping", {})],
                         ids=["collab rename", "system ping"])
def test_a_command_collab_does_not_have_is_an_unknown_event(command: Command) -> None:
    t = joined(tabs(), ("tab-1", KEY))
    with pytest.raises(LocalProtocolError) as info:
        t.command(command, "tab-1")
    assert (info.value.code, info.value.message) == (
        "unknown_event", f"collab has no command {command.event}")
    assert t.members(KEY) == ["tab-1"]


# --- property -----------------------------------------------------------------------------

TABS = ["t1", "t2", "t3"]
KEYS = ["a", "b", "c"]
steps = st.lists(st.one_of(
    st.tuples(st.sampled_from(["join", "leave"]), st.sampled_from([*TABS, None]),
              st.sampled_from(KEYS)),
    st.tuples(st.just("gone"), st.sampled_from(TABS), st.just("")),
    st.tuples(st.just("op"), st.none(), st.sampled_from(KEYS)),
), max_size=30)


def aside(panes: list[dict[str, Any]]) -> list[tuple[str, list[str], list[str]]]:
    """A pushed list, revisions and authors aside."""
    return [(p["paneKey"], p["sharers"], p["members"]) for p in panes]


@settings(max_examples=200, deadline=None)
@given(steps)
def test_members_and_what_the_tabs_were_told_follow_a_simple_model(
    ops: list[tuple[str, str | None, str]],
) -> None:
    """After any joins, leaves, writes and tabs going away: ``members`` is the model's
    set, the last ``presence`` pushed for a pane names exactly it, and the last ``panes``
    pushed is the list as it is, revisions and authors aside."""
    t = tabs()
    model: dict[str, set[str]] = {}
    last_presence: dict[str, list[str]] = {}
    last_panes: list[dict[str, Any]] = []
    for event, tab, key in ops:
        if event == "gone":
            assert tab is not None
            out = t.tab_gone(tab)
            for names in model.values():
                names.discard(tab)
        elif event == "op":
            out = t.command(cmd("op", paneKey=key, baseRev=t.panes.pane(key).rev, text="x"),
                            None)
        else:
            out = t.command(cmd(event, paneKey=key), tab)
            if tab is not None:
                names = model.setdefault(key, set())
                (names.add if event == "join" else names.discard)(tab)
        for e in out:
            if isinstance(e, TabEvent) and e.event == "presence":
                last_presence[e.data["paneKey"]] = e.data["members"]
            elif isinstance(e, TabEvent) and e.event == "panes":
                assert aside(e.data["panes"]) != aside(last_panes)  # only on a change
                last_panes = e.data["panes"]
        for k in KEYS:
            assert t.members(k) == sorted(model.get(k, ()))
            if k in last_presence:
                assert last_presence[k] == t.members(k)
        assert aside(last_panes) == aside(t.list_reply().data["panes"])
