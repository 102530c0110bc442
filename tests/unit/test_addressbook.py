"""A peer's address book: what a peer says about itself is data, below what the user gave."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol import RemoteProtocolError
from hd_protocol.peer.addressbook import (
    KnownAddress,
    check_peer_url,
    dial_order,
    from_json,
    learn,
    record,
    to_json,
)
from hd_protocol.peer.presence import parse_presence

U1, U2 = "ws://10.0.0.1:8766/peer-ws", "ws://10.0.0.2:8766/peer-ws"
P1, P2, P3 = ("ws://203.0.113.1:9/peer-ws", "ws://[2001:db8::1]:9/peer-ws",
              "wss://node.example:443/peer-ws")


@pytest.mark.parametrize("url", [U1, P2, P3, "ws://localhost:1/peer-ws"])
def test_well_formed_peer_addresses_pass(url: str) -> None:
    assert check_peer_url(url) == url


@pytest.mark.parametrize("url", [
    "http://10.0.0.1:8766/peer-ws", "ws://10.0.0.1/peer-ws", "ws://10.0.0.1:0/peer-ws",
    "ws://10.0.0.1:70000/peer-ws", "ws://10.0.0.1:8766/ws", "ws://10.0.0.1:8766/peer-ws?x=1",
    "ws://10.0.0.1:8766/peer-ws#f", "ws://user:pw@10.0.0.1:8766/peer-ws", "ws://:8766/peer-ws",
    "ws://10.0.0.1:8766/peer-ws ", "ws://ex\u00e4mple:1/peer-ws", "ws://a\n:1/peer-ws",
    "ws://" + "a" * 300 + ":1/peer-ws", "", 5, None, ["ws://a:1/peer-ws"], "ws://[::1:1/peer-ws",
])
def test_anything_else_is_a_bad_address(url: object) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        check_peer_url(url)
    assert err.value.code == "bad_address"


def test_a_presence_with_a_bad_address_is_refused_whole() -> None:
    good = {"node_name": "p", "capabilities": [], "addrs": [P1]}
    assert parse_presence(good).addrs == (P1,)
    with pytest.raises(RemoteProtocolError):
        parse_presence({**good, "addrs": [P1, "ws://10.0.0.1:8766/admin"]})
    with pytest.raises(RemoteProtocolError):
        parse_presence({**good, "addrs": [f"ws://10.0.0.{i}:1/peer-ws" for i in range(17)]})


def test_user_addresses_come_before_what_the_peer_says_and_it_cannot_remove_them() -> None:
    book = learn((), [U1], "user")
    book = learn(book, [P1, U1, P2], "peer")
    assert dial_order(book) == [U1, P1, P2]
    book = learn(book, [P3], "peer")  # the peer's latest word replaces its earlier one
    assert dial_order(book) == [U1, P3]
    assert book[0] == KnownAddress(U1, "user")


def test_an_address_the_user_gives_is_promoted_from_peer_learned() -> None:
    book = learn(learn((), [P1], "peer"), [P1], "user")
    assert book == (KnownAddress(P1, "user"),)


def test_a_failing_address_is_demoted_and_one_that_works_comes_back() -> None:
    book = learn(learn((), [U1, U2], "user"), [P1, P2], "peer")
    book = record(record(book, U1, ok=False), P1, ok=False)
    assert dial_order(book) == [U2, U1, P2, P1]
    book = record(book, U1, ok=True)
    assert dial_order(book) == [U1, U2, P2, P1]


def test_each_source_keeps_at_most_the_limit() -> None:
    many = [f"ws://10.0.1.{i}:1/peer-ws" for i in range(40)]
    book = learn(learn((), many, "user", limit=16), many[::-1], "peer", limit=16)
    assert len([a for a in book if a.source == "user"]) == 16
    assert len(book) <= 32


def test_the_book_round_trips_through_json_and_reads_old_plain_lists() -> None:
    book = record(learn(learn((), [U1], "user"), [P1], "peer"), P1, ok=False)
    assert from_json(to_json(book)) == book
    assert from_json([U1, U2]) == (KnownAddress(U1, "user"), KnownAddress(U2, "user"))
    assert from_json([{"url": 5}, "x", {"url": U1, "source": "evil"}]) == (
        KnownAddress("x", "user"),)
    assert from_json("nonsense") == ()


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(
    st.sampled_from(["user", "peer", "ok", "fail"]),
    st.lists(st.sampled_from([U1, U2, P1, P2, P3]), max_size=4)), max_size=20))
def test_user_addresses_always_dial_before_peer_ones_and_nothing_is_listed_twice(
    steps: list[tuple[str, list[str]]],
) -> None:
    book: tuple[KnownAddress, ...] = ()
    for kind, urls in steps:
        if kind in ("user", "peer"):
            book = learn(book, urls, kind)  # type: ignore[arg-type]
        else:
            for u in urls:
                book = record(book, u, ok=kind == "ok")
    order = dial_order(book)
    assert len(order) == len(set(order))
    sources = [next(a.source for a in book if a.url == u) for u in order]
    assert sources == sorted(sources, key=lambda s: s != "user")


def test_an_address_of_256_chars_passes_and_a_space_or_user_name_anywhere_does_not() -> None:
    longest = "ws://" + "a" * (256 - len("ws://:1/peer-ws")) + ":1/peer-ws"
    assert len(longest) == 256 and check_peer_url(longest) == longest
    assert check_peer_url("ws://h:65535/peer-ws") == "ws://h:65535/peer-ws"
    for url in ("ws://h h:1/peer-ws", "ws://user@h:1/peer-ws", "ws://h:1/peer-ws#"):
        with pytest.raises(RemoteProtocolError) as err:
            check_peer_url(url)
        assert err.value.code == "bad_address"


def test_the_default_limit_is_16_per_source() -> None:
    many = [f"ws://10.0.1.{i}:1/peer-ws" for i in range(20)]
    book = learn(learn((), many, "user"), [f"ws://10.0.2.{i}:1/peer-ws" for i in range(20)],
                 "peer")
    assert [a.source for a in book] == ["user"] * 16 + ["peer"] * 16
    assert [a.url for a in book[:16]] == many[:16]


def test_a_new_user_address_keeps_what_the_book_knew_about_it() -> None:
    book = record(learn((), [U1], "user"), U1, ok=False)
    book = learn(book, [U2, U1], "user")
    assert book == (KnownAddress(U2, "user"), KnownAddress(U1, "user", 1))


def test_peer_addresses_keep_their_failure_counts_when_the_peer_repeats_them() -> None:
    book = record(learn((), [P1, P2], "peer"), P2, ok=False)
    book = learn(book, [P2, P3], "peer")
    assert book == (KnownAddress(P2, "peer", 1), KnownAddress(P3, "peer"))
    assert learn(book, [P1], "user") == (KnownAddress(P1, "user"), KnownAddress(P2, "peer", 1),
                                         KnownAddress(P3, "peer"))


def test_each_failed_dial_counts_one() -> None:
    book = record(record(learn((), [U1], "user"), U1, ok=False), U1, ok=False)
    assert book == (KnownAddress(U1, "user", 2),)


def test_a_stored_entry_without_a_failure_count_starts_at_zero_and_a_bad_count_is_skipped(
) -> None:
    assert from_json([{"url": U1, "source": "peer"}]) == (KnownAddress(U1, "peer", 0),)
    assert from_json([{"url": U1, "source": "peer", "fails": "2"}]) == ()
    assert from_json([{"url": U1, "source": "user", "fails": -3}]) == (
        KnownAddress(U1, "user", 0),)
