"""Peer chat as a tab browses it (SPEC 6.2, 9): history pages (``open {before, limit}``
with ``more``), the conversation list (``conversations``) and the per-peer figures a
PeerInfo row carries (``unread``, ``last_message``)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from hd_protocol.apps.chat import HISTORY_LIMIT, HISTORY_MAX, PREVIEW_CHARS, ChatLog, ChatMessage
from hd_protocol.apps.collab import TabReply
from hd_protocol.apps.tabcommands import decode_command
from hd_protocol.errors import ProtocolError

ME = "m" * 16
P = "p" * 16
Q = "q" * 16
R = "r" * 16


def tab(c: ChatLog, event: str, data: dict[str, Any], *args: Any, **kw: Any) -> list[Any]:
    """A tab's ``peerchat`` command, decoded as the node decodes it, into the machine."""
    return c.command(decode_command("peerchat", event, data), *args, **kw)



def msg(peer: str, seq: int, direction: str = "in", text: str | None = None,
        from_name: str = "pat", status: str = "delivered") -> ChatMessage:
    return ChatMessage(peer, f"{seq:032x}", direction, text or f"m{seq}",  # type: ignore[arg-type]
                       ts=1000 + seq, received_at=2000 + seq, status=status,  # type: ignore[arg-type]
                       seq=seq, from_name=from_name)


def chat_log(*messages: ChatMessage, read: dict[str, int] | None = None) -> ChatLog:
    counter = itertools.count(1)
    return ChatLog(ME, rng=lambda n: next(counter).to_bytes(n, "big"), messages=messages,
                   read_marks=read, self_name="me")


def open_(c: ChatLog, **data: Any) -> dict[str, Any]:
    [reply] = tab(c, "open", {"node_id": P, **data}, now=1)
    assert isinstance(reply, TabReply) and reply.event == "history"
    return dict(reply.data)


def seqs(answer: dict[str, Any]) -> list[int]:
    return [m["seq"] for m in answer["messages"]]


# --- history pages ------------------------------------------------------------------------


def test_open_answers_the_newest_50_oldest_first_and_says_more_remain() -> None:
    c = chat_log(*(msg(P, i) for i in range(1, 121)))
    first = open_(c)
    assert HISTORY_LIMIT == 50
    assert seqs(first) == list(range(71, 121)) and first["more"] is True
    assert first["node_id"] == P


def test_paging_back_with_before_walks_the_whole_conversation_once() -> None:
    c = chat_log(*(msg(P, i) for i in range(1, 121)))
    seen: list[int] = []
    page = open_(c, limit=45)
    while True:
        seen = seqs(page) + seen
        if not page["more"]:
            break
        page = open_(c, before=page["messages"][0]["seq"], limit=45)
    assert seen == list(range(1, 121))


def test_a_page_holds_only_messages_before_the_given_seq() -> None:
    # Another conversation's messages interleave: seqs are node-wide, not per peer.
    c = chat_log(*(msg(P if i % 2 else Q, i) for i in range(1, 21)))
    page = open_(c, before=11, limit=3)
    assert seqs(page) == [5, 7, 9] and page["more"] is True
    assert seqs(open_(c, before=4, limit=3)) == [1, 3]
    assert open_(c, before=4, limit=3)["more"] is False


@pytest.mark.parametrize(("before", "limit", "want", "more"), [
    (None, 1, [5], True),
    (None, 5, [1, 2, 3, 4, 5], False),
    (None, 6, [1, 2, 3, 4, 5], False),
    (None, 4, [2, 3, 4, 5], True),
    (1, 10, [], False),
    (0, 10, [], False),
    (2, 10, [1], False),
    (6, 2, [4, 5], True),
    (1000, 10, [1, 2, 3, 4, 5], False),
])
def test_page_bounds(before: int | None, limit: int, want: list[int], more: bool) -> None:
    c = chat_log(*(msg(P, i) for i in range(1, 6)))
    page = open_(c, before=before, limit=limit)
    assert (seqs(page), page["more"]) == (want, more)


def test_an_empty_conversation_opens_as_an_empty_page() -> None:
    assert open_(chat_log()) == {"node_id": P, "messages": [], "more": False}


def test_null_paging_fields_mean_the_defaults() -> None:
    c = chat_log(*(msg(P, i) for i in range(1, 61)))
    assert open_(c, before=None, limit=None) == open_(c)


def test_the_limit_may_be_200_at_most() -> None:
    c = chat_log(*(msg(P, i) for i in range(1, 301)))
    assert HISTORY_MAX == 200
    assert len(open_(c, limit=200)["messages"]) == 200


@pytest.mark.parametrize("data", [
    {"limit": 0}, {"limit": 201}, {"limit": -1}, {"limit": "5"}, {"limit": True},
    {"limit": 2.0}, {"before": -1}, {"before": "3"}, {"before": True}, {"before": 2**53},
])
def test_bad_paging_fields_are_a_bad_request(data: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as exc:
        tab(chat_log(), "open", {"node_id": P, **data}, now=1)
    assert exc.value.code == "bad_request"


@pytest.mark.parametrize("event", ["read", "close"])
def test_paging_fields_belong_to_open_only(event: str) -> None:
    # Members the table does not name for a command are ignored, as for every command.
    assert not hasattr(decode_command("peerchat", event, {"node_id": P, "limit": 0}), "limit")
    assert not any(isinstance(e, TabReply)
                   for e in tab(chat_log(), event, {"node_id": P, "limit": 0}, now=1))


def test_page_of_the_machine_matches_its_history() -> None:
    c = chat_log(*(msg(P, i) for i in range(1, 11)))
    page, more = c.page(P, before=8, limit=3)
    assert page == c.history(P)[4:7] and more is True
    assert c.page(P) == (c.history(P), False)


# --- conversations --------------------------------------------------------------------------


def conversations(c: ChatLog, names: dict[str, str] | None = None) -> list[dict[str, Any]]:
    [reply] = tab(c, "conversations", {}, now=1, names=names)
    assert isinstance(reply, TabReply) and reply.event == "conversations"
    return list(reply.data["items"])


def test_conversations_list_every_peer_with_a_message_newest_activity_first() -> None:
    c = chat_log(msg(P, 1), msg(Q, 2), msg(P, 3), msg(R, 4, "out"), msg(Q, 5), read={P: 1})
    items = conversations(c, {P: "pat", Q: "quinn"})
    assert [(i["node_id"], i["unread"], i["last"]["seq"]) for i in items] == [
        (Q, 2, 5), (R, 0, 4), (P, 1, 3)]
    assert [i["node_name"] for i in items] == ["quinn", "", "pat"]


def test_a_new_message_moves_its_conversation_to_the_top() -> None:
    c = chat_log(msg(P, 1), msg(Q, 2))
    assert [i["node_id"] for i in conversations(c)] == [Q, P]
    c.send(P, "back to you", now=5)
    items = conversations(c)
    assert [i["node_id"] for i in items] == [P, Q]
    assert items[0]["last"]["text"] == "back to you" and items[0]["last"]["status"] == "queued"


def test_a_conversation_lists_the_last_message_as_a_140_character_preview() -> None:
    long = "é" * 150
    c = chat_log(msg(P, 7, "out", long, status="sent"))
    [item] = conversations(c)
    assert PREVIEW_CHARS == 140
    assert item["last"] == {"id": f"{7:032x}", "direction": "out", "text": "é" * 140,
                            "ts": 1007, "status": "sent", "seq": 7}


def test_without_a_record_the_name_comes_from_the_peers_newest_message() -> None:
    c = chat_log(msg(P, 1, from_name="old"), msg(P, 2, from_name="new"), msg(P, 3, "out"),
                 msg(Q, 4, "out"))
    names = {i["node_id"]: i["node_name"] for i in conversations(c, {R: "rita"})}
    assert names == {P: "new", Q: ""}
    assert {i["node_id"]: i["node_name"] for i in conversations(c, {P: ""})}[P] == "new"


def test_no_messages_no_conversations() -> None:
    assert conversations(chat_log()) == []


def test_conversations_take_no_fields_and_unread_counts_come_from_the_loaded_log() -> None:
    c = chat_log(msg(P, 1), msg(P, 2), msg(P, 3), read={P: 2})
    assert [i["unread"] for i in conversations(c)] == [1]
    c.read(P)
    assert [i["unread"] for i in conversations(c)] == [0]


# --- figures for a PeerInfo row -----------------------------------------------------------------


def test_unread_and_last_message_per_peer() -> None:
    c = chat_log(msg(P, 1), msg(P, 2, "out"), msg(Q, 3))
    assert (c.unread(P), c.unread(Q), c.unread(R)) == (1, 1, 0)
    assert c.last_message(P) == msg(P, 2, "out").preview()
    assert c.last_message(R) is None
