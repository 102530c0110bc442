"""The pane list a tab asks for (``collab list`` → ``panes``, SPEC 9): every pane the node
holds, shares through a room or has open in a tab, with its sharers and members."""

from __future__ import annotations

from hd_protocol.apps.collab import Pane, Panes, TabReply

ME = "m" * 16
P = "p" * 16
Q = "q" * 16


def test_the_list_shows_each_pane_with_rev_author_sharers_and_members_by_key() -> None:
    panes = Panes(ME, [Pane("notes", "hi", 3, P, frozenset({P, Q})), Pane("a", "", 0, "")])
    reply = panes.list_event({"notes": ["tab-2", "tab-1"], "draft": ["tab-3"]})
    assert reply == TabReply("collab", "panes", {"panes": [
        {"paneKey": "a", "rev": 0, "author": "", "sharers": [], "members": []},
        {"paneKey": "draft", "rev": 0, "author": "", "sharers": [], "members": ["tab-3"]},
        {"paneKey": "notes", "rev": 3, "author": P, "sharers": [P, Q],
         "members": ["tab-1", "tab-2"]},
    ]})


def test_the_list_leaves_the_text_out() -> None:
    panes = Panes(ME, [Pane("big", "x" * 1000, 1, ME)])
    [item] = panes.list_event({}).data["panes"]
    assert "text" not in item


def test_a_share_and_a_write_show_in_the_list() -> None:
    panes = Panes(ME)
    assert panes.list_event({}).data["panes"] == []
    panes.share("k", P)
    panes.local_write("k", 0, "first")
    assert panes.list_event({}).data["panes"] == [
        {"paneKey": "k", "rev": 1, "author": ME, "sharers": [P], "members": []}]


def test_room_peers_count_as_sharers_in_the_list() -> None:
    panes = Panes(ME)
    panes.set_room_peers("room-pane", [Q, ME])
    assert panes.list_event({}).data["panes"] == [
        {"paneKey": "room-pane", "rev": 0, "author": "", "sharers": [Q], "members": []}]
