"""SPEC 6.2: peer chat — an append-only log, stored before sent, delivered once."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from hd_protocol.apps.chat import (
    ChatLog,
    ChatMessage,
    PersistMessage,
    PersistReadMark,
    PersistStatus,
    SendChat,
)
from hd_protocol.apps.collab import PeerErrorReply, SendToPeer, TabEvent, TabReply
from hd_protocol.apps.tabcommands import decode_command
from hd_protocol.errors import LocalProtocolError, ProtocolError
from hd_protocol.limits import Limits
from hd_protocol.peer.session import Message
from hd_protocol.seal import sealed_size

ME = "m" * 16
P = "p" * 16
Q = "q" * 16
IN_ID = "ab" * 16


def tab(c: ChatLog, event: str, data: dict[str, Any], *args: Any, **kw: Any) -> list[Any]:
    """A tab's ``peerchat`` command, decoded as the node decodes it, into the machine."""
    return c.command(decode_command("peerchat", event, data), *args, **kw)



def counter_rng() -> Any:
    """Deterministic rng: message ids 000…01, 000…02, …"""
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def rid(i: int) -> str:
    return f"{i:032x}"


def log(*messages: ChatMessage, live: tuple[str, ...] = (), **kw: Any) -> ChatLog:
    c = ChatLog(ME, rng=counter_rng(), messages=messages, self_name="me", **kw)
    for peer in live:
        c.session_opened(peer)
    return c


def chat(text: str = "hi", from_name: str = "pat", msg_id: str = IN_ID, ts: int = 5) -> Message:
    return Message("peer_chat", msg_id, None, {"text": text, "from_name": from_name}, ts)


def ack(msg_id: str) -> Message:
    return Message("peer_chat_ack", "ff" * 16, msg_id, {"id": msg_id}, 0)


def of_type(effects: list[Any], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


# --- sending ----------------------------------------------------------------------------


def test_send_with_a_live_session_persists_queued_before_sending_then_marks_sent() -> None:
    c = log(live=(P,))
    out = c.send(P, "  hello  ", now=1000)
    m = ChatMessage(P, rid(1), "out", "hello", 1000, 1000, "queued", 1, "me")
    assert out == [
        PersistMessage(m),
        TabEvent("peerchat", "message", m.tab_data()),
        SendChat(P, rid(1), {"text": "hello", "from_name": "me"}),
        PersistStatus(P, rid(1), "sent"),
        TabEvent("peerchat", "status", {"id": rid(1), "node_id": P, "status": "sent"}),
    ]
    assert c.message(P, rid(1)).status == "sent"  # type: ignore[union-attr]


def test_send_without_a_session_only_stores_the_message_as_queued() -> None:
    c = log()
    out = c.send(P, "later", now=1)
    assert [type(e) for e in out] == [PersistMessage, TabEvent]
    assert c.history(P)[0].status == "queued"


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_send_refuses_an_empty_message(text: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        log().send(P, text, now=1)
    assert exc.value.code == "empty"


def test_send_accepts_text_at_the_byte_limit_and_refuses_one_byte_more() -> None:
    c = log(limits=Limits(chat_text_bytes=6))
    assert c.send(P, " ééé ", now=1)  # trimmed: 6 UTF-8 bytes
    with pytest.raises(ProtocolError) as exc:
        c.send(P, "éééx", now=1)
    assert exc.value.code == "too_large"


@pytest.mark.parametrize(("peer", "text"), [(ME, "hi"), ("nobody", "hi"), (None, "hi"), (P, 5)])
def test_send_refuses_a_bad_peer_or_text(peer: object, text: object) -> None:
    with pytest.raises(ProtocolError) as exc:
        log().send(peer, text, now=1)
    assert exc.value.code == "bad_request"


def test_send_draws_a_fresh_id_when_the_rng_repeats_one() -> None:
    ids = iter([b"\x01" * 16, b"\x01" * 16, b"\x02" * 16])
    c = ChatLog(ME, rng=lambda n: next(ids))
    c.send(P, "a", now=1)
    c.send(P, "b", now=2)
    assert [m.id for m in c.history(P)] == ["01" * 16, "02" * 16]


# --- acks and status --------------------------------------------------------------------


def test_ack_marks_the_message_delivered_once() -> None:
    c = log(live=(P,))
    c.send(P, "hi", now=1)
    assert c.receive(P, ack(rid(1)), now=2) == [
        PersistStatus(P, rid(1), "delivered"),
        TabEvent("peerchat", "status", {"id": rid(1), "node_id": P, "status": "delivered"}),
    ]
    assert c.receive(P, ack(rid(1)), now=3) == []


def test_ack_from_another_peer_or_for_an_unknown_id_changes_nothing() -> None:
    c = log(live=(P, Q))
    c.send(P, "hi", now=1)
    assert c.receive(Q, ack(rid(1)), now=2) == []
    assert c.receive(P, ack(rid(99)), now=2) == []
    assert c.message(P, rid(1)).status == "sent"  # type: ignore[union-attr]


@pytest.mark.parametrize("data", [{}, {"id": "XY"}, {"id": 5}, {"id": rid(1), "x": 1}])
def test_malformed_ack_is_answered_with_bad_request(data: dict[str, Any]) -> None:
    c = log(live=(P,))
    out = c.receive(P, Message("peer_chat_ack", IN_ID, None, data, 0), now=1)
    [err] = out
    assert isinstance(err, PeerErrorReply)
    assert (err.peer_id, err.re, err.code) == (P, IN_ID, "bad_request")


def test_peer_error_for_a_message_in_flight_marks_it_failed() -> None:
    c = log(live=(P,))
    c.send(P, "hi", now=1)
    assert c.peer_error(P, rid(1))[0] == PersistStatus(P, rid(1), "failed")
    assert c.peer_error(P, rid(1)) == []
    assert c.peer_error(P, None) == []


def test_failed_message_is_not_flushed_again_but_a_late_ack_still_delivers_it() -> None:
    c = log(live=(P,))
    c.send(P, "hi", now=1)
    c.peer_error(P, rid(1))
    c.session_closed(P)
    assert c.session_opened(P) == []
    assert c.receive(P, ack(rid(1)), now=2)[0] == PersistStatus(P, rid(1), "delivered")


def test_delivered_status_never_goes_back_to_failed() -> None:
    c = log(live=(P,))
    c.send(P, "hi", now=1)
    c.receive(P, ack(rid(1)), now=2)
    assert c.peer_error(P, rid(1)) == []


# --- flush on session open --------------------------------------------------------------


def test_session_open_flushes_queued_and_unacknowledged_messages_in_order() -> None:
    c = log()
    for text in ("one", "two", "three"):
        c.send(P, text, now=1)
    c.session_opened(P)
    c.receive(P, ack(rid(2)), now=2)  # "two" delivered; "one" and "three" only sent
    c.session_closed(P)
    c.send(P, "four", now=3)  # queued while away
    out = c.session_opened(P)
    assert [e.data["text"] for e in of_type(out, SendChat)] == ["one", "three", "four"]
    assert of_type(out, PersistStatus) == [PersistStatus(P, rid(4), "sent")]


def test_session_open_flushes_only_that_peers_messages() -> None:
    c = log()
    c.send(P, "to p", now=1)
    c.send(Q, "to q", now=1)
    assert [e.peer_id for e in of_type(c.session_opened(Q), SendChat)] == [Q]


def test_flushed_message_keeps_its_id_as_the_envelope_msg_id() -> None:
    c = log()
    c.send(P, "x", now=1)
    [send] = of_type(c.session_opened(P), SendChat)
    assert send.msg_id == rid(1) == c.history(P)[0].id


# --- receiving --------------------------------------------------------------------------


def test_inbound_message_is_stored_before_it_is_acked() -> None:
    c = log(live=(P,))
    out = c.receive(P, chat("  hello ", ts=77), now=900)
    m = ChatMessage(P, IN_ID, "in", "hello", 77, 900, "delivered", 1, "pat")
    assert out == [
        PersistMessage(m),
        TabEvent("peerchat", "message", m.tab_data()),
        TabEvent("peerchat", "unread", {"counts": {P: 1}}),
        SendToPeer(P, "peer_chat_ack", {"id": IN_ID}, re=IN_ID),
    ]


def test_replayed_message_is_acked_again_but_never_stored_twice_or_overwritten() -> None:
    c = log(live=(P,))
    c.receive(P, chat("original"), now=1)
    out = c.receive(P, chat("forged replacement"), now=2)
    assert out == [SendToPeer(P, "peer_chat_ack", {"id": IN_ID}, re=IN_ID)]
    assert [m.text for m in c.history(P)] == ["original"]
    assert c.unread_counts() == {P: 1}


def test_same_id_from_another_peer_is_another_message() -> None:
    c = log(live=(P, Q))
    c.receive(P, chat("from p"), now=1)
    assert of_type(c.receive(Q, chat("from q"), now=2), PersistMessage)


def test_inbound_message_reusing_one_of_our_ids_is_ignored_without_an_ack() -> None:
    c = log(live=(P,))
    c.send(P, "mine", now=1)
    assert c.receive(P, chat("echo", msg_id=rid(1)), now=2) == []
    assert [m.direction for m in c.history(P)] == ["out"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"text": "hi"}, "bad_request"),
        ({"text": "hi", "from_name": "x", "extra": 1}, "bad_request"),
        ({"text": 5, "from_name": "x"}, "bad_request"),
        ({"text": None, "from_name": "x"}, "bad_request"),
        ({"text": "   ", "from_name": "x"}, "bad_request"),
        ({"text": "x" * 17, "from_name": "x"}, "too_large"),
        ({"text": "hi", "from_name": "n" * 65}, "bad_request"),
        ({"text": "hi", "from_name": None}, "bad_request"),
    ],
)
def test_malformed_inbound_message_is_refused_and_not_acked(
    data: dict[str, Any], code: str
) -> None:
    c = log(live=(P,), limits=Limits(chat_text_bytes=16))
    out = c.receive(P, Message("peer_chat", IN_ID, None, data, 0), now=1)
    assert len(out) == 1
    assert isinstance(out[0], PeerErrorReply)
    assert (out[0].peer_id, out[0].re, out[0].code) == (P, IN_ID, code)
    assert c.history(P) == []


def test_inbound_from_name_of_exactly_64_chars_is_accepted() -> None:
    c = log(live=(P,))
    assert of_type(c.receive(P, chat(from_name="n" * 64), now=1), PersistMessage)


def test_receive_of_a_non_chat_type_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        log().receive(P, Message("collab_op", IN_ID, None, {}, 0), now=1)


# --- order and unread -------------------------------------------------------------------


def test_display_order_is_local_arrival_order_not_the_sender_clock() -> None:
    c = log(live=(P,))
    c.receive(P, chat("first", msg_id="01" * 16, ts=9_000), now=1)
    c.send(P, "mine", now=2)
    c.receive(P, chat("second", msg_id="02" * 16, ts=1), now=3)  # skewed sender clock
    hist = c.history(P)
    assert [m.text for m in hist] == ["first", "mine", "second"]
    assert [m.seq for m in hist] == [1, 2, 3]


def test_read_clears_the_unread_count_and_persists_a_read_mark() -> None:
    c = log(live=(P, Q))
    c.receive(P, chat(msg_id="01" * 16), now=1)
    c.receive(Q, chat(msg_id="02" * 16), now=2)
    c.receive(P, chat(msg_id="03" * 16), now=3)
    assert c.unread_counts() == {P: 2, Q: 1}
    assert c.read(P) == [
        PersistReadMark(P, 3),
        TabEvent("peerchat", "unread", {"counts": {P: 0, Q: 1}}),
    ]
    assert c.read(P) == []
    assert c.read("z" * 16) == []


def test_own_messages_never_count_as_unread() -> None:
    c = log()
    c.send(P, "hi", now=1)
    assert c.unread_counts() == {P: 0}


# --- restart: the machine over what the shell loaded ------------------------------------


def test_loaded_log_continues_seq_counts_unread_after_the_read_mark_and_dedups() -> None:
    loaded = [
        ChatMessage(P, "01" * 16, "in", "old", 1, 1, "delivered", 1, "pat"),
        ChatMessage(P, "02" * 16, "out", "queued one", 2, 2, "queued", 2, "me"),
        ChatMessage(P, "03" * 16, "in", "new", 3, 3, "delivered", 3, "pat"),
    ]
    c = log(*reversed(loaded), read_marks={P: 1})
    assert c.history(P) == loaded
    assert c.unread_counts() == {P: 1}
    assert of_type(c.session_opened(P), SendChat)[0].msg_id == "02" * 16
    assert of_type(c.receive(P, chat(msg_id="01" * 16), now=9), PersistMessage) == []
    c.send(P, "next", now=10)
    assert c.history(P)[-1].seq == 4


# --- tab commands -----------------------------------------------------------------------


def test_tab_open_answers_with_the_conversation_history() -> None:
    c = log(live=(P,))
    c.receive(P, chat("hello"), now=1)
    [reply] = tab(c, "open", {"node_id": P}, now=2)
    assert reply == TabReply(
        "peerchat", "history",
        {"node_id": P, "messages": [c.history(P)[0].tab_data()], "more": False},
    )


def test_tab_commands_send_read_unread_and_close() -> None:
    c = log(live=(P,))
    c.receive(P, chat("hello"), now=1)
    assert of_type(tab(c, "send", {"node_id": P, "text": "yo"}, now=2), SendChat)
    assert tab(c, "unread", {}, now=3) == [
        TabReply("peerchat", "unread", {"counts": {P: 1}})
    ]
    assert of_type(tab(c, "read", {"node_id": P}, now=4), PersistReadMark)
    assert tab(c, "close", {"node_id": P}, now=5) == []


@pytest.mark.parametrize(
    ("event", "data", "code"),
    [
        ("send", {"node_id": P}, "bad_request"),
        ("send", {"node_id": P, "text": " "}, "empty"),
        ("open", {"node_id": "x"}, "bad_request"),
        ("open", {}, "bad_request"),
        ("send", {"node_id": ME, "text": "x"}, "bad_request"),
        ("delete", {}, "unsupported"),
    ],
)
def test_bad_tab_commands_raise_a_typed_error(event: str, data: dict[str, Any], code: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        tab(log(), event, data, now=1)
    assert exc.value.code == code


def test_the_machine_says_a_node_does_not_chat_with_itself_before_judging_paging() -> None:
    with pytest.raises(ProtocolError) as exc:
        tab(log(), "open", {"node_id": ME, "before": -1, "limit": 0}, now=1)
    assert exc.value.message == "a node does not chat with itself"
    with pytest.raises(ProtocolError) as exc:
        tab(log(), "open", {"node_id": P, "before": -1, "limit": 0}, now=1)
    assert exc.value.message == "before must be a seq (int >= 0)"


# --- what the tab is answered (SPEC 9) ----------------------------------------------------


def test_every_answer_carries_the_req_of_its_command() -> None:
    c = log(live=(P,))
    c.receive(P, chat("hello"), now=1)
    [history] = tab(c, "open", {"node_id": P, "req": "r1"}, now=2)
    assert history.event == "history" and history.data["req"] == "r1"
    assert tab(c, "unread", {"req": "r2"}, now=2) == [
        TabReply("peerchat", "unread", {"counts": {P: 1}, "req": "r2"})]
    [listing] = tab(c, "conversations", {"req": "r3"}, now=2)
    assert listing.data["req"] == "r3"
    assert "req" not in tab(c, "unread", {}, now=2)[0].data


@pytest.mark.parametrize("event", ["send", "read", "close"])
def test_a_command_with_a_req_and_no_answer_of_its_own_is_acked_with_the_unread_counts(
    event: str,
) -> None:
    c = log(live=(P,))
    c.receive(P, chat("hello"), now=1)
    out = tab(c, event, {"node_id": P, "text": "yo", "req": "r"}, now=2, at=0)
    counts = {P: 0} if event == "read" else {P: 1}
    assert out[-1] == TabReply("peerchat", "unread", {"counts": counts, "req": "r"})
    assert [e for e in out if isinstance(e, TabReply)] == [out[-1]]  # the one answer
    assert all("req" not in e.data for e in out if isinstance(e, TabEvent))


@pytest.mark.parametrize("event", ["send", "read", "close"])
def test_without_a_req_nothing_answers_a_command_that_has_no_answer(event: str) -> None:
    c = log(live=(P,))
    c.receive(P, chat("hello"), now=1)
    out = tab(c, event, {"node_id": P, "text": "yo"}, now=2, at=0)
    assert not any(isinstance(e, TabReply) for e in out)


def test_messages_and_effects_are_immutable() -> None:
    c = log()
    [persist, _] = c.send(P, "x", now=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        persist.message.status = "delivered"  # type: ignore[union-attr, misc]


def test_a_message_that_cannot_fit_one_sealed_envelope_is_refused_and_not_stored() -> None:
    # 16 KiB of control characters pass the byte check but escape to six bytes each:
    # with a small envelope limit the message could never leave, so it is not stored.
    c = log(live=(P,), limits=Limits(max_envelope_bytes=4096))
    with pytest.raises(ProtocolError) as exc:
        c.send(P, "a" + "\x01" * 1000 + "b", now=1)
    assert exc.value.code == "too_large"
    assert c.history(P) == []


def test_a_message_unacked_in_a_live_session_is_sent_again_with_the_same_id() -> None:
    c = log(live=(P,), limits=Limits(chat_ack_timeout_ms=30_000))
    (first,) = of_type(c.send(P, "hi", now=1, at=0), SendChat)
    assert c.next_deadline() == 30_000
    assert c.on_timer(29_999) == []
    assert c.on_timer(30_000) == [first]  # same id: the receiver keeps one copy
    assert c.next_deadline() == 30_000 + 60_000  # then twice as long
    assert c.on_timer(90_000) == [first]
    c.receive(P, ack(first.msg_id), 2)
    assert c.next_deadline() is None and c.on_timer(10**9) == []


def test_no_resend_after_the_session_closed_or_the_message_failed() -> None:
    c = log(live=(P, Q), limits=Limits(chat_ack_timeout_ms=1_000))
    (to_p,) = of_type(c.send(P, "a", now=1, at=0), SendChat)
    (to_q,) = of_type(c.send(Q, "b", now=1, at=0), SendChat)
    c.session_closed(P)
    c.peer_error(Q, to_q.msg_id)
    assert c.on_timer(5_000) == [] and c.next_deadline() is None
    # A new session flushes P's message and starts its timer again.
    assert of_type(c.session_opened(P, at=6_000), SendChat) == [to_p]
    assert c.next_deadline() == 7_000


def test_timers_without_a_clock_start_at_the_next_tick() -> None:
    c = log(live=(P,), limits=Limits(chat_ack_timeout_ms=1_000))
    (sent,) = of_type(c.send(P, "a", now=1), SendChat)
    assert c.next_deadline() == 0  # due at once: the timer must be started
    assert c.on_timer(500) == [] and c.next_deadline() == 1_500
    assert c.on_timer(1_500) == [sent]


def test_resends_wait_30_60_120_then_240_s_for_good() -> None:
    c = log(live=(P,), limits=Limits(chat_ack_timeout_ms=30_000))
    (first,) = of_type(c.send(P, "hi", now=1, at=0), SendChat)
    t, waits = 0, []
    for _ in range(6):
        due = c.next_deadline()
        assert due is not None
        waits.append(due - t)
        t = due
        assert c.on_timer(t) == [first]
    assert waits == [30_000, 60_000, 120_000, 240_000, 240_000, 240_000]


def test_closing_one_peers_session_keeps_the_timers_of_the_others() -> None:
    c = log(live=(P, Q), limits=Limits(chat_ack_timeout_ms=1_000))
    c.send(P, "a", now=1, at=0)
    (to_q,) = of_type(c.send(Q, "b", now=1, at=0), SendChat)
    c.session_closed(P)
    assert c.on_timer(1_000) == [to_q]


def test_a_tab_send_stamps_the_wall_clock_and_starts_the_ack_timer_on_the_monotonic_one(
) -> None:
    c = log(live=(P,), limits=Limits(chat_ack_timeout_ms=1_000))
    out = tab(c, "send", {"node_id": P, "text": "x"}, 1_764_000_000_000, at=50)
    (stored,) = of_type(out, PersistMessage)
    assert stored.message.ts == stored.message.received_at == 1_764_000_000_000
    assert c.next_deadline() == 1_050


def test_a_message_that_exactly_fits_one_sealed_envelope_is_accepted() -> None:
    text = "x" * 1_000
    limit = sealed_size({"text": text, "from_name": "me"})
    c = log(live=(P,), limits=Limits(max_envelope_bytes=limit))
    assert of_type(c.send(P, text, now=1), SendChat)
    with pytest.raises(ProtocolError) as info:
        c.send(P, text + "x" * 3, now=1)
    assert info.value.code == "too_large"


def test_reading_a_conversation_of_only_our_own_messages_still_sets_the_read_mark() -> None:
    c = log()
    c.send(P, "mine", now=1)
    assert c.read(P) == [PersistReadMark(P, 1), TabEvent("peerchat", "unread", {"counts": {P: 0}})]
    assert c.read(P) == []


def test_local_errors_carry_their_codes() -> None:
    with pytest.raises(LocalProtocolError) as info:
        ChatLog("not a node id", rng=counter_rng())
    assert info.value.code == "bad_request"
    with pytest.raises(LocalProtocolError) as info:
        log().receive(P, Message("collab_op", IN_ID, None, {}, 0), 1)
    assert info.value.code == "bad_type"


def test_text_that_is_not_unicode_is_a_bad_request() -> None:
    with pytest.raises(ProtocolError) as info:
        log().send(P, "lone \ud800 surrogate", now=1)
    assert info.value.code == "bad_request"


def test_a_message_shows_in_tabs_with_every_field() -> None:
    m = ChatMessage(P, IN_ID, "in", "hi", ts=5, received_at=6, status="delivered", seq=3,
                    from_name="pat")
    assert m.tab_data() == {"id": IN_ID, "node_id": P, "direction": "in", "text": "hi",
                            "from_name": "pat", "ts": 5, "received_at": 6,
                            "status": "delivered", "seq": 3}


def test_a_log_without_a_name_sends_an_empty_from_name() -> None:
    c = ChatLog(ME, rng=counter_rng())
    c.session_opened(P)
    (sent,) = of_type(c.send(P, "hi", now=1), SendChat)
    assert sent.data == {"text": "hi", "from_name": ""}


def test_a_closed_session_leaves_no_ack_timer_behind() -> None:
    c = log(live=(P,), limits=Limits(chat_ack_timeout_ms=1_000))
    c.send(P, "a", now=1, at=0)
    c.session_closed(P)
    assert c.next_deadline() is None
