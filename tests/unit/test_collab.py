"""SPEC 6.1: collaborative panes — last-writer-wins with a revision check."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hd_protocol.apps.collab import (
    Pane,
    Panes,
    PeerErrorReply,
    PersistPane,
    SendToPeer,
    TabEvent,
    TabReply,
)
from hd_protocol.apps.tabcommands import CollabOp, CollabShare, CollabUnshare
from hd_protocol.cjson import MAX_INT
from hd_protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from hd_protocol.limits import Limits
from hd_protocol.peer.session import Message
from hd_protocol.seal import sealed_size

ME = "m" * 16
P = "p" * 16
Q = "q" * 16
R = "r" * 16
KEY = "scratch"
MID = "ab" * 16


def msg(type: str, data: dict[str, Any], msg_id: str = MID) -> Message:
    return Message(type, msg_id, None, data, 0)


def op(rev: int, author: str, text: str, key: str = KEY) -> dict[str, Any]:
    return {"paneKey": key, "rev": rev, "author": author, "text": text}


def sends(effects: list[Any]) -> list[SendToPeer]:
    return [e for e in effects if isinstance(e, SendToPeer)]


def hub(*panes: Pane, live: dict[str, str] | None = None, limits: Limits | None = None) -> Panes:
    h = Panes(ME, panes, limits=limits or Limits())
    for peer, level in (live or {}).items():
        h.session_opened(peer, level)  # type: ignore[arg-type]
    return h


# --- local writes -----------------------------------------------------------------------


def test_local_write_on_current_rev_bumps_rev_and_persists_before_sending() -> None:
    h = hub(Pane(KEY, "old", 3, P, frozenset({P, Q})), live={P: "trusted"})
    out = h.local_write(KEY, 3, "new")
    new = Pane(KEY, "new", 4, ME, frozenset({P, Q}))
    assert out == [
        PersistPane(new),
        TabEvent("collab", "op", {**new.op_data(), "from": ME}),
        SendToPeer(P, "collab_op", new.op_data()),  # Q has no live session
    ]
    assert h.pane(KEY) == new


def test_local_write_on_stale_base_rev_is_rejected_with_the_current_state() -> None:
    h = hub(Pane(KEY, "theirs", 5, P, frozenset({P})), live={P: "trusted"})
    out = h.local_write(KEY, 4, "mine")
    assert out == [TabReply("collab", "rejected", op(5, P, "theirs"))]
    assert h.pane(KEY).rev == 5


def test_first_write_to_an_unknown_pane_starts_from_rev_zero() -> None:
    h = hub()
    rejected = TabReply("collab", "rejected", op(0, "", "", "notes"))
    assert h.local_write("notes", 1, "x") == [rejected]
    assert h.local_write("notes", 0, "x")[0] == PersistPane(Pane("notes", "x", 1, ME))


def test_local_write_accepts_text_at_the_byte_limit_and_refuses_one_byte_more() -> None:
    h = hub(limits=Limits(collab_text_bytes=10))
    assert h.local_write(KEY, 0, "é" * 5)  # 10 UTF-8 bytes
    with pytest.raises(ProtocolError) as exc:
        h.local_write(KEY, 1, "é" * 5 + "x")
    assert exc.value.code == "too_large"


def test_a_write_that_cannot_fit_one_sealed_envelope_is_refused_and_changes_nothing() -> None:
    # 500 000 newlines pass the 512 KiB text check but double when JSON-escaped, and
    # sealing adds a third: the collab_op could never leave, so the sharers would
    # diverge for good. It is refused before anything is stored or sent.
    before = Pane(KEY, "old", 3, P, frozenset({P}))
    h = hub(before, live={P: "trusted"})
    text = "\n" * 500_000
    assert len(text.encode()) <= Limits().collab_text_bytes
    with pytest.raises(RemoteProtocolError) as exc:
        h.local_write(KEY, 3, text)
    assert exc.value.code == "too_large"
    assert h.pane(KEY) == before
    # The largest plain text a pane takes still fits one envelope with the op around it.
    big = "x" * Limits().collab_text_bytes
    out = h.local_write(KEY, 3, big)
    (send,) = sends(out)
    assert sealed_size(send.data) <= Limits().max_envelope_bytes


@pytest.mark.parametrize(
    "key", ["", "a" * 129, "a b", "é", "scratch\n", "a/b", 7, None, ["scratch"]]
)
def test_local_write_refuses_a_malformed_pane_key(key: object) -> None:
    with pytest.raises(ProtocolError) as exc:
        hub().local_write(key, 0, "x")
    assert exc.value.code == "bad_request"


@pytest.mark.parametrize("key", ["a", "a" * 128, "scratch.v1-2_x", "room:abc"])
def test_local_write_accepts_well_formed_pane_keys(key: str) -> None:
    assert hub().local_write(key, 0, "x")[0] == PersistPane(Pane(key, "x", 1, ME))


@pytest.mark.parametrize("base", [-1, True, 1.0, "0", None, MAX_INT + 1])
def test_local_write_refuses_a_base_rev_that_is_not_a_revision(base: object) -> None:
    with pytest.raises(ProtocolError) as exc:
        hub().local_write(KEY, base, "x")
    assert exc.value.code == "bad_request"


@pytest.mark.parametrize("text", [None, 5, b"bytes", "\ud800"])
def test_local_write_refuses_text_that_is_not_a_unicode_string(text: object) -> None:
    with pytest.raises(ProtocolError) as exc:
        hub().local_write(KEY, 0, text)
    assert exc.value.code == "bad_request"


def test_the_last_revision_can_be_written_and_then_the_pane_is_exhausted() -> None:
    h = hub(Pane(KEY, "a", MAX_INT - 1, P, frozenset({P})), live={P: "trusted"})
    assert h.local_write(KEY, MAX_INT - 1, "b")[0] == PersistPane(
        Pane(KEY, "b", MAX_INT, ME, frozenset({P})))
    with pytest.raises(RemoteProtocolError) as exc:
        h.local_write(KEY, MAX_INT, "c")
    assert exc.value.code == "bad_request"
    assert h.pane(KEY) == Pane(KEY, "b", MAX_INT, ME, frozenset({P}))


# --- inbound collab_op ------------------------------------------------------------------


def test_greater_inbound_op_is_adopted_and_forwarded_to_other_live_sharers_only() -> None:
    h = hub(Pane(KEY, "a", 1, ME, frozenset({P, Q, R})), live={P: "trusted", Q: "guest"})
    out = h.receive(P, msg("collab_op", op(2, P, "b")))
    new = Pane(KEY, "b", 2, P, frozenset({P, Q, R}))
    assert out == [
        PersistPane(new),
        TabEvent("collab", "op", {**new.op_data(), "from": P}),
        SendToPeer(Q, "collab_op", new.op_data()),  # never back to P; R is not live
    ]


def test_smaller_inbound_op_is_answered_with_our_state() -> None:
    # Not shared with P yet, so the session open sent P nothing.
    h = hub(Pane(KEY, "ours", 4, ME), live={P: "trusted"})
    out = h.receive(P, msg("collab_op", op(2, P, "old")))
    assert out[-1] == SendToPeer(P, "collab_op", op(4, ME, "ours"), re=MID)
    assert sends(out) == [out[-1]]
    assert h.pane(KEY).text == "ours"


def test_equal_inbound_op_changes_nothing_and_sends_nothing() -> None:
    h = hub(Pane(KEY, "same", 2, P, frozenset({P, Q})), live={P: "trusted", Q: "trusted"})
    assert h.receive(P, msg("collab_op", op(2, P, "same"))) == []


def test_same_rev_is_won_by_the_greater_author() -> None:
    h = hub(Pane(KEY, "mine", 2, ME, frozenset({P})), live={P: "trusted"})
    h.receive(P, msg("collab_op", op(2, P, "p wins")))  # "ppp…" > "mmm…"
    assert h.pane(KEY).version == (2, P)
    h2 = hub(Pane(KEY, "mine", 2, ME), live={P: "trusted"})
    out = h2.receive(P, msg("collab_op", op(2, "a" * 16, "a loses")))
    assert h2.pane(KEY).version == (2, ME)
    assert sends(out) == [SendToPeer(P, "collab_op", op(2, ME, "mine"), re=MID)]


def test_duplicate_inbound_op_is_not_forwarded_twice() -> None:
    h = hub(Pane(KEY, "", 0, "", frozenset({P, Q})), live={P: "trusted", Q: "trusted"})
    first = h.receive(P, msg("collab_op", op(1, P, "x")))
    assert len(sends(first)) == 1
    assert h.receive(P, msg("collab_op", op(1, P, "x"))) == []


def test_stale_op_from_a_peer_that_already_sent_us_newer_gets_no_catch_up() -> None:
    # Reordered delivery: P's rev 2 arrived before its rev 1; P already has rev 2.
    h = hub(Pane(KEY, "", 0, "", frozenset({P})), live={P: "trusted"})
    h.receive(P, msg("collab_op", op(2, P, "two")))
    assert h.receive(P, msg("collab_op", op(1, P, "one"))) == []


def test_peer_we_already_updated_gets_no_second_catch_up_for_the_same_state() -> None:
    h = hub(Pane(KEY, "", 0, "", frozenset({P})), live={P: "trusted"})
    h.local_write(KEY, 0, "mine")  # sent to P
    assert h.receive(P, msg("collab_op", op(0, "", ""))) == []


def test_trusted_peer_may_write_an_unshared_pane_and_becomes_its_sharer() -> None:
    h = hub(Pane(KEY, "a", 1, ME), live={P: "trusted"})
    out = h.receive(P, msg("collab_op", op(2, P, "b")))
    new = Pane(KEY, "b", 2, P, frozenset({P}))
    assert out[0] == PersistPane(new)  # one write: new text and new sharer
    assert TabEvent("collab", "state", {**new.op_data(), "sharers": [P]}) in out
    assert h.local_write(KEY, 2, "c")[-1] == SendToPeer(P, "collab_op", op(3, ME, "c"))


def test_trusted_peer_with_an_equal_state_becomes_a_sharer_without_a_send() -> None:
    h = hub(Pane(KEY), live={P: "trusted"})
    out = h.receive(P, msg("collab_op", op(0, "", "")))
    assert out == [
        PersistPane(Pane(KEY, sharers=frozenset({P}))),
        TabEvent("collab", "state", {**op(0, "", ""), "sharers": [P]}),
    ]


def test_guest_op_on_a_pane_not_shared_with_it_is_forbidden() -> None:
    h = hub(Pane(KEY, "a", 1, ME, frozenset({Q})), live={P: "guest"})
    out = h.receive(P, msg("collab_op", op(9, P, "takeover")))
    assert out == [PeerErrorReply(P, MID, "forbidden", "this pane is not shared with you")]
    assert h.pane(KEY).text == "a"


def test_guest_op_on_a_pane_shared_with_it_is_adopted_without_new_sharers() -> None:
    h = hub(Pane(KEY, "a", 1, ME, frozenset({P})), live={P: "guest"})
    out = h.receive(P, msg("collab_op", op(2, P, "b")))
    assert out[0] == PersistPane(Pane(KEY, "b", 2, P, frozenset({P})))


def test_guest_in_the_pane_room_may_write_and_is_not_persisted_as_sharer() -> None:
    h = hub(Pane(KEY, "a", 1, ME), live={P: "guest"})
    h.set_room_peers(KEY, [P])
    out = h.receive(P, msg("collab_op", op(2, P, "b")))
    assert out[0] == PersistPane(Pane(KEY, "b", 2, P))
    assert h.sharers(KEY) == {P}
    h.set_room_peers(KEY, [])
    assert h.receive(P, msg("collab_op", op(3, P, "c")))[0].code == "forbidden"  # type: ignore[union-attr]


def test_setting_room_peers_sends_our_state_to_live_newcomers() -> None:
    h = hub(Pane(KEY, "a", 1, ME), live={P: "guest", Q: "guest"})
    out = h.set_room_peers(KEY, [P, R, ME])
    assert sends(out) == [SendToPeer(P, "collab_op", op(1, ME, "a"))]
    assert h.sharers(KEY) == {P, R}
    with pytest.raises(ProtocolError):
        h.set_room_peers(KEY, [P, "not a node"])


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"paneKey": KEY, "rev": 1, "author": P}, "bad_request"),
        ({**op(1, P, "x"), "extra": 1}, "bad_request"),
        (op(-1, P, "x"), "bad_request"),
        (op(True, P, "x"), "bad_request"),
        ({**op(1, P, "x"), "rev": 1.0}, "bad_request"),
        ({**op(1, P, "x"), "rev": "1"}, "bad_request"),
        (op(MAX_INT + 1, P, "x"), "bad_request"),
        (op(1, "", "x"), "bad_request"),
        (op(1, "P" * 16, "x"), "bad_request"),
        (op(1, P + "\n", "x"), "bad_request"),
        (op(0, P, ""), "bad_request"),
        (op(0, "", "text at rev 0"), "bad_request"),
        ({**op(1, P, "x"), "author": None}, "bad_request"),
        ({**op(1, P, "x"), "text": 5}, "bad_request"),
        ({**op(1, P, "x"), "text": None}, "bad_request"),
        (op(1, P, "x" * 65), "too_large"),
        (op(1, P, "x", key="bad key"), "bad_request"),
        ({**op(1, P, "x"), "paneKey": None}, "bad_request"),
    ],
)
def test_malformed_inbound_op_is_answered_with_a_typed_error(
    data: dict[str, Any], code: str
) -> None:
    h = hub(
        Pane(KEY, "keep", 1, ME, frozenset({P})), live={P: "trusted"},
        limits=Limits(collab_text_bytes=64),
    )
    out = h.receive(P, msg("collab_op", data))
    assert len(out) == 1
    assert isinstance(out[0], PeerErrorReply)
    assert (out[0].peer_id, out[0].re, out[0].code) == (P, MID, code)
    assert h.pane(KEY) == Pane(KEY, "keep", 1, ME, frozenset({P}))


def test_receive_from_a_peer_without_a_session_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        hub().receive(P, msg("collab_op", op(1, P, "x")))


def test_receive_of_a_non_collab_type_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        hub(live={P: "trusted"}).receive(P, msg("peer_chat", {"text": "hi"}))


# --- collab_join / collab_leave ---------------------------------------------------------


def test_join_from_a_sharer_is_answered_with_our_state() -> None:
    h = hub(Pane(KEY, "a", 3, ME, frozenset({P})), live={P: "guest"})
    assert h.receive(P, msg("collab_join", {"paneKey": KEY})) == [
        SendToPeer(P, "collab_op", op(3, ME, "a"), re=MID)
    ]


def test_join_is_answered_even_when_the_peer_should_already_have_the_state() -> None:
    h = hub(Pane(KEY, "a", 3, ME, frozenset({P})), live={P: "guest"})
    h.receive(P, msg("collab_join", {"paneKey": KEY}))
    assert len(h.receive(P, msg("collab_join", {"paneKey": KEY}))) == 1


def test_join_from_a_guest_that_is_no_sharer_is_forbidden() -> None:
    h = hub(Pane(KEY, "a", 3, ME), live={P: "guest"})
    [err] = h.receive(P, msg("collab_join", {"paneKey": KEY}))
    assert isinstance(err, PeerErrorReply) and err.code == "forbidden"


def test_join_from_a_trusted_peer_makes_it_a_sharer() -> None:
    h = hub(Pane(KEY, "a", 3, ME), live={P: "trusted"})
    out = h.receive(P, msg("collab_join", {"paneKey": KEY}))
    assert out[0] == PersistPane(Pane(KEY, "a", 3, ME, frozenset({P})))
    assert out[-1] == SendToPeer(P, "collab_op", op(3, ME, "a"), re=MID)


@pytest.mark.parametrize("data", [{}, {"paneKey": "bad key"}, {"paneKey": KEY, "x": 1}])
def test_malformed_join_or_leave_is_a_bad_request(data: dict[str, Any]) -> None:
    h = hub(live={P: "trusted"})
    for type_ in ("collab_join", "collab_leave"):
        [err] = h.receive(P, msg(type_, data))
        assert isinstance(err, PeerErrorReply) and err.code == "bad_request"


def test_leave_removes_the_sender_from_the_sharers() -> None:
    h = hub(Pane(KEY, "a", 1, ME, frozenset({P, Q})), live={P: "guest", Q: "trusted"})
    out = h.receive(P, msg("collab_leave", {"paneKey": KEY}))
    assert out[0] == PersistPane(Pane(KEY, "a", 1, ME, frozenset({Q})))
    assert sends(h.local_write(KEY, 1, "b")) == [SendToPeer(Q, "collab_op", op(2, ME, "b"))]


def test_leave_from_a_room_member_stops_its_edits_and_tells_the_tabs() -> None:
    h = hub(Pane(KEY, "a", 1, ME, frozenset({Q})), live={P: "guest", Q: "trusted"})
    h.set_room_peers(KEY, [P])
    assert h.sharers(KEY) == {P, Q}
    out = h.receive(P, msg("collab_leave", {"paneKey": KEY}))
    assert out == [TabEvent("collab", "state", {**op(1, ME, "a"), "sharers": [Q]})]
    assert h.sharers(KEY) == {Q}
    assert sends(h.local_write(KEY, 1, "b")) == [SendToPeer(Q, "collab_op", op(2, ME, "b"))]
    assert h.receive(P, msg("collab_op", op(3, P, "c")))[0].code == "forbidden"  # type: ignore[union-attr]


def test_an_inbound_op_at_the_last_revision_is_adopted() -> None:
    h = hub(Pane(KEY, "a", 1, ME, frozenset({P})), live={P: "trusted"})
    out = h.receive(P, msg("collab_op", op(MAX_INT, P, "z")))
    assert out[0] == PersistPane(Pane(KEY, "z", MAX_INT, P, frozenset({P})))


def test_leave_from_a_non_sharer_changes_nothing() -> None:
    h = hub(Pane(KEY, "a", 1, ME, frozenset({Q})), live={P: "guest"})
    assert h.receive(P, msg("collab_leave", {"paneKey": KEY})) == []
    assert h.receive(P, msg("collab_leave", {"paneKey": "unknown"})) == []


# --- sessions and catch-up --------------------------------------------------------------


def test_session_open_catches_up_every_pane_shared_with_that_peer() -> None:
    h = hub(
        Pane("a", "1", 1, ME, frozenset({P})),
        Pane("b", "", 0, "", frozenset({P, Q})),
        Pane("c", "private", 1, ME, frozenset({Q})),
    )
    assert h.session_opened(P, "guest") == [
        SendToPeer(P, "collab_op", op(1, ME, "1", key="a")),
        SendToPeer(P, "collab_op", op(0, "", "", key="b")),
    ]


def test_writes_while_a_sharer_is_away_reach_it_on_reconnect() -> None:
    h = hub(Pane(KEY, "", 0, "", frozenset({P})), live={P: "trusted"})
    h.session_closed(P)
    assert sends(h.local_write(KEY, 0, "offline edit")) == []
    assert h.session_opened(P, "trusted") == [SendToPeer(P, "collab_op", op(1, ME, "offline edit"))]


def test_reopened_session_resends_a_state_sent_on_the_dropped_one() -> None:
    h = hub(Pane(KEY, "", 0, "", frozenset({P})), live={P: "trusted"})
    h.local_write(KEY, 0, "x")  # may have been lost with the old session
    assert h.session_opened(P, "trusted") == [SendToPeer(P, "collab_op", op(1, ME, "x"))]


# --- share / unshare / join_peer --------------------------------------------------------


def test_share_persists_the_sharer_and_sends_our_state_to_a_live_peer() -> None:
    h = hub(Pane(KEY, "a", 1, ME), live={P: "guest"})
    out = h.share(KEY, P)
    new = Pane(KEY, "a", 1, ME, frozenset({P}))
    assert out == [
        PersistPane(new),
        TabEvent("collab", "state", {**new.op_data(), "sharers": [P]}),
        SendToPeer(P, "collab_op", new.op_data()),
    ]


def test_share_with_an_offline_peer_only_persists() -> None:
    out = hub(Pane(KEY, "a", 1, ME)).share(KEY, P)
    assert sends(out) == [] and isinstance(out[0], PersistPane)


def test_sharing_twice_changes_nothing() -> None:
    h = hub(Pane(KEY, "a", 1, ME, frozenset({P})), live={P: "guest"})
    assert h.share(KEY, P) == []


@pytest.mark.parametrize("peer", [ME, "not-a-node-id", "", None, P.upper()])
def test_share_refuses_ourselves_and_non_node_ids(peer: object) -> None:
    with pytest.raises(ProtocolError) as exc:
        hub().share(KEY, peer)
    assert exc.value.code == "bad_request"


def test_unshare_removes_the_sharer_and_tells_it_to_leave() -> None:
    h = hub(Pane(KEY, "a", 1, ME, frozenset({P})), live={P: "guest"})
    out = h.unshare(KEY, P)
    assert out[0] == PersistPane(Pane(KEY, "a", 1, ME))
    assert out[-1] == SendToPeer(P, "collab_leave", {"paneKey": KEY})
    assert h.unshare(KEY, P) == []


def test_join_peer_adds_the_sharer_then_asks_for_its_state() -> None:
    h = hub(live={P: "guest"})
    out = h.join_peer(KEY, P)
    assert out[-1] == SendToPeer(P, "collab_join", {"paneKey": KEY})
    # The guest's answer is accepted because it is now a sharer.
    assert h.receive(P, msg("collab_op", op(4, P, "theirs")))[0] == PersistPane(
        Pane(KEY, "theirs", 4, P, frozenset({P}))
    )


# --- tab commands and the state event ---------------------------------------------------


def test_tab_op_command_writes_the_pane() -> None:
    h = hub()
    out = h.command(CollabOp(paneKey=KEY, baseRev=0, text="hi"))
    assert out[0] == PersistPane(Pane(KEY, "hi", 1, ME))


def test_tab_share_and_unshare_commands_change_the_sharers() -> None:
    h = hub()
    h.command(CollabShare(paneKey=KEY, node_id=P))
    assert h.sharers(KEY) == {P}
    h.command(CollabUnshare(paneKey=KEY, node_id=P))
    assert h.sharers(KEY) == frozenset()


@pytest.mark.parametrize(
    ("cmd", "code", "message"),
    [
        (CollabOp(paneKey=KEY, baseRev=0, text="x" * 9), "too_large", "text over 8 bytes"),
        (CollabShare(paneKey=KEY, node_id=ME), "bad_request",
         "a pane is not shared with its own node"),
        (CollabUnshare(paneKey=KEY, node_id=ME), "bad_request",
         "a pane is not shared with its own node"),
    ],
)
def test_what_only_the_machine_can_judge_raises_a_typed_error(
    cmd: CollabOp | CollabShare, code: str, message: str
) -> None:
    with pytest.raises(ProtocolError) as exc:
        hub(limits=Limits(collab_text_bytes=8)).command(cmd)
    assert (exc.value.code, exc.value.message) == (code, message)


def test_state_event_carries_sharers_and_the_members_the_shell_tracks() -> None:
    h = hub(Pane(KEY, "t", 2, P, frozenset({Q, P})))
    h.set_room_peers(KEY, [R])
    assert h.state_event(KEY, members=["tab2", "tab1"]) == TabReply(
        "collab", "state",
        {**op(2, P, "t"), "sharers": [P, Q, R], "members": ["tab1", "tab2"]},
    )
    assert "members" not in h.state_event("unknown").data
    with pytest.raises(ProtocolError):
        h.state_event("bad key")


def test_initial_panes_come_from_the_shell() -> None:
    h = hub(Pane(KEY, "loaded", 7, P, frozenset({P})))
    assert h.pane(KEY).text == "loaded"
    assert h.panes == {KEY: Pane(KEY, "loaded", 7, P, frozenset({P}))}


def test_machine_refuses_a_self_id_that_is_not_a_node_id() -> None:
    with pytest.raises(LocalProtocolError):
        Panes("me")


def test_effects_and_panes_are_immutable() -> None:
    out = hub().local_write(KEY, 0, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        out[0].pane = Pane("other")  # type: ignore[misc, union-attr]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Pane(KEY).rev = 5  # type: ignore[misc]


# --- sharers, rooms and what each peer is known to hold -------------------------------


def state(pane: Pane, sharers: list[str]) -> TabEvent:
    return TabEvent("collab", "state", {**pane.op_data(), "sharers": sharers})


def test_errors_of_our_own_caller_carry_their_codes() -> None:
    with pytest.raises(LocalProtocolError) as exc:
        Panes("not a node id")
    assert exc.value.code == "bad_request"
    with pytest.raises(LocalProtocolError) as exc:
        hub().receive(P, msg("collab_op", op(1, P, "x")))
    assert exc.value.code == "no_session"
    with pytest.raises(LocalProtocolError) as exc:
        hub(live={P: "trusted"}).receive(P, msg("peer_chat", {}))
    assert exc.value.code == "bad_type"


def test_a_peer_is_live_between_its_session_opening_and_closing() -> None:
    h = hub(live={P: "guest"})
    assert h.is_live(P) and not h.is_live(Q)
    h.session_closed(P)
    assert not h.is_live(P)
    assert h.session_closed(Q) == []  # a peer that never had a session: nothing to do


def test_a_join_from_a_trusted_sharer_answers_without_persisting_again() -> None:
    pane = Pane(KEY, "a", 1, ME, frozenset({P}))
    h = hub(pane, live={P: "trusted"})
    assert h.receive(P, msg("collab_join", {"paneKey": KEY})) == [
        SendToPeer(P, "collab_op", op(1, ME, "a"), re=MID)]


def test_a_join_that_makes_a_trusted_peer_a_sharer_stores_and_shows_it() -> None:
    h = hub(Pane(KEY, "a", 1, ME), live={P: "trusted"})
    new = Pane(KEY, "a", 1, ME, frozenset({P}))
    assert h.receive(P, msg("collab_join", {"paneKey": KEY}))[:2] == [
        PersistPane(new), state(new, [P])]
    assert h.pane(KEY) == new


def test_after_a_leave_or_an_unshare_a_new_share_sends_our_state_again() -> None:
    for leave in (True, False):
        h = hub(Pane(KEY, "a", 1, ME, frozenset({P})), live={P: "trusted"})
        h.receive(P, msg("collab_op", op(1, ME, "a")))  # P holds our state
        leave_msg = msg("collab_leave", {"paneKey": KEY})
        out = h.receive(P, leave_msg) if leave else h.unshare(KEY, P)
        left = Pane(KEY, "a", 1, ME)
        assert out[:2] == [PersistPane(left), state(left, [])] and h.pane(KEY) == left
        assert sends(h.share(KEY, P)) == [SendToPeer(P, "collab_op", op(1, ME, "a"))]


def test_room_peers_show_in_the_state_only_when_the_sharers_change() -> None:
    h = hub(Pane(KEY, "a", 1, ME, frozenset({Q})))
    assert h.set_room_peers("other", []) == []  # no room to drop: nothing happens
    assert h.set_room_peers(KEY, [P]) == [state(h.pane(KEY), [P, Q])]
    assert h.set_room_peers(KEY, [P]) == []
    assert h.set_room_peers(KEY, [Q]) == [state(h.pane(KEY), [Q])]  # Q was one anyway
    assert h.set_room_peers(KEY, []) == []
