"""SPEC 6.1.1: a rejected edit is rebased onto the newer text, not lost."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hd_protocol.apps.rebase import Change, change_between, rebase

# --- the change a side made -------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "new", "expected"),
    [
        ("hello world", "hello brave world", Change(6, 6, "brave ")),
        ("hello world", "hello", Change(5, 11, "")),
        ("abc", "abc", Change(3, 3, "")),
        ("", "xyz", Change(0, 0, "xyz")),
        ("abcdef", "aXef", Change(1, 4, "X")),
        # Ambiguous insertion in a repeated run: the maximal prefix places it rightmost.
        ("ab", "abab", Change(2, 2, "ab")),
    ],
)
def test_change_between_finds_the_single_replaced_region(
    base: str, new: str, expected: Change
) -> None:
    assert change_between(base, new) == expected


# --- rebase, case by case ---------------------------------------------------------------


def test_rebase_keeps_both_edits_when_mine_is_before_theirs() -> None:
    assert rebase("hello world", "hello brave world", "hello world!") == "hello brave world!"


def test_rebase_shifts_my_edit_past_their_earlier_insertion() -> None:
    assert rebase("abc def", "abc deF", "XXabc def") == "XXabc deF"


def test_rebase_shifts_my_edit_past_their_earlier_deletion() -> None:
    assert rebase("one two three", "one two threE", "one three") == "one threE"


def test_rebase_applies_my_deletion_to_their_appended_text() -> None:
    assert rebase("one two three", "one three", "one two three four") == "one three four"


def test_rebase_lets_my_edit_win_where_both_replaced_the_same_region() -> None:
    assert rebase("hello world", "hello earth", "hello there") == "hello earth"


def test_rebase_resolves_partial_overlap_with_my_version_of_the_union() -> None:
    # mine: "bcd" -> "X"; theirs: "de" -> "Y". Union "bcde" becomes my "Xe".
    assert rebase("abcdef", "aXef", "abcYf") == "aXef"


def test_rebase_reverts_their_deletion_around_my_insertion() -> None:
    # My insertion sits inside the region they deleted: the region is mine.
    assert rebase("abcdef", "abcXdef", "af") == "abcXdef"


def test_rebase_puts_my_insertion_first_when_both_inserted_at_the_same_place() -> None:
    assert rebase("ab", "aXb", "aYb") == "aXYb"


def test_rebase_keeps_their_insertion_at_the_end_of_my_replaced_region() -> None:
    assert rebase("abc", "aZc", "abYc") == "aZYc"


def test_rebase_of_an_unchanged_text_is_theirs() -> None:
    assert rebase("base", "base", "their text") == "their text"


def test_rebase_onto_an_unchanged_text_is_mine() -> None:
    assert rebase("base", "my text", "base") == "my text"


def test_rebase_onto_the_same_edit_does_not_duplicate_it() -> None:
    assert rebase("", "a", "a") == "a"


# --- properties -------------------------------------------------------------------------

texts = st.text(alphabet="ab|\nxé", max_size=24)
no_sep = st.text(alphabet="abxé\n", max_size=16)


@given(texts, texts)
def test_rebase_of_no_change_returns_theirs(base: str, theirs: str) -> None:
    assert rebase(base, base, theirs) == theirs


@given(texts, texts)
def test_rebase_onto_base_returns_mine(base: str, mine: str) -> None:
    assert rebase(base, mine, base) == mine


@given(texts, texts)
def test_rebase_onto_my_own_result_returns_it(base: str, mine: str) -> None:
    assert rebase(base, mine, mine) == mine


@given(texts, texts)
def test_change_between_rebuilds_the_new_text(base: str, new: str) -> None:
    c = change_between(base, new)
    assert 0 <= c.start <= c.end <= len(base)
    assert base[:c.start] + c.text + base[c.end:] == new


@given(texts, texts, texts)
def test_rebase_always_contains_what_i_typed(base: str, mine: str, theirs: str) -> None:
    assert change_between(base, mine).text in rebase(base, mine, theirs)


@given(no_sep, no_sep, no_sep, no_sep, st.booleans())
def test_rebase_preserves_both_edits_on_either_side_of_a_separator(
    left: str, left2: str, right: str, right2: str, mine_on_left: bool
) -> None:
    # The separator occurs in no edit, so each change is unambiguously on its side.
    base = left + "|" + right
    if mine_on_left:
        mine, theirs = left2 + "|" + right, left + "|" + right2
    else:
        mine, theirs = left + "|" + right2, left2 + "|" + right
    assert rebase(base, mine, theirs) == left2 + "|" + right2
