"""What a ``create_room`` frame may ask for (SPEC 7.3), pinned where mutation testing
found it loose: the bounds of a token and what each refusal says it is about."""

from __future__ import annotations

from typing import Any

import pytest

from hd_protocol import RemoteProtocolError
from hd_protocol.brokers.rooms import parse_create_room, token_hash


def create(**over: Any) -> dict[str, Any]:
    f: dict[str, Any] = {"type": "create_room", "name": "room", "visibility": "public",
                         "joinPolicy": "token", "token": "secret"}
    f.update(over)
    return f


def refusal(frame: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(RemoteProtocolError) as err:
        parse_create_room(frame)
    return err.value.code, err.value.message


def test_a_token_of_256_chars_is_taken_and_one_of_257_refused() -> None:
    assert parse_create_room(create(token="t" * 256))[3] == token_hash("t" * 256)
    assert refusal(create(token="t" * 257)) == (
        "bad_request", "token is a string of 1..256 chars")


@pytest.mark.parametrize("token", ["", 5, None])
def test_a_token_room_without_a_usable_token_names_the_token(token: object) -> None:
    assert refusal(create(token=token)) == ("bad_request", "token is a string of 1..256 chars")


@pytest.mark.parametrize("name", ["", "n" * 65, 7])
def test_a_bad_room_name_names_the_name(name: object) -> None:
    assert refusal(create(name=name)) == ("bad_request", "name is a string of 1..64 chars")
