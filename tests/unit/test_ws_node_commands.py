"""The /ws commands about the node itself and browsing (SPEC 9): ``network self``,
``rename``, ``forget``, ``peerchat conversations``, ``open`` paging, ``collab list`` —
accepted as frames, their fields type-checked, a bad name a typed error."""

from __future__ import annotations

from typing import Any

import pytest

from hd_protocol import RemoteProtocolError, WsFrame, decode_ws_frame, encode_ws_frame
from hd_protocol.apps.tabcommands import decode_command
from hd_protocol.apps.ws import check_node_name


@pytest.mark.parametrize(("channel", "event"), [
    ("network", "self"), ("network", "rename"), ("network", "forget"),
    ("peerchat", "conversations"), ("collab", "list"),
])
def test_the_new_commands_are_frames_a_tab_may_send(channel: str, event: str) -> None:
    assert decode_ws_frame(encode_ws_frame(channel, event, {})) == WsFrame(channel, event, {})


@pytest.mark.parametrize(("channel", "event", "data", "want"), [
    ("network", "rename", {"node_name": " bob ", "x": 1}, {"node_name": " bob "}),
    ("network", "forget", {"node_id": "n" * 16}, {"node_id": "n" * 16}),
    ("peerchat", "open", {"node_id": "n" * 16, "before": 7, "limit": 20},
     {"node_id": "n" * 16, "before": 7, "limit": 20}),
    ("peerchat", "open", {"node_id": "n" * 16, "before": None},
     {"node_id": "n" * 16, "before": None}),
    ("peerchat", "open", {"node_id": "n" * 16}, {"node_id": "n" * 16}),
    ("peerchat", "conversations", {"req": "r1"}, {"req": "r1"}),
    ("collab", "list", {"anything": 1}, {}),
])
def test_fields_of_the_new_commands_are_kept(channel: str, event: str, data: dict[str, Any],
                                             want: dict[str, Any]) -> None:
    cmd = decode_command(channel, event, data)
    got = {f: getattr(cmd, f) for f in ("node_name", "node_id", "before", "limit", "req")
           if hasattr(cmd, f) and (getattr(cmd, f) is not None or f in data)}
    assert got == want


@pytest.mark.parametrize(("channel", "event", "data"), [
    ("network", "rename", {}),
    ("network", "rename", {"node_name": None}),
    ("network", "rename", {"node_name": 5}),
    ("network", "forget", {}),
    ("network", "forget", {"node_id": ["n"]}),
    ("peerchat", "open", {"node_id": "n", "before": "3"}),
    ("peerchat", "open", {"node_id": "n", "limit": 2.5}),
    ("peerchat", "open", {"node_id": "n", "limit": False}),
])
def test_mistyped_fields_of_the_new_commands_are_a_bad_request(
        channel: str, event: str, data: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_command(channel, event, data)
    assert info.value.code == "bad_request"


@pytest.mark.parametrize(("given", "kept"), [
    ("alice", "alice"),
    ("  alice's laptop ☕ \n", "alice's laptop ☕"),
    ("a" * 64, "a" * 64),
    (" " + "é" * 64 + "\t", "é" * 64),
    ("x", "x"),
])
def test_a_node_name_is_trimmed_and_kept(given: str, kept: str) -> None:
    assert check_node_name(given) == kept


@pytest.mark.parametrize("given", [
    "", "   ", "\n\t", "a" * 65, "line\nbreak", "bell\x07", "nul\x00", "del\x7f", "\ud800",
    None, 3, ["a"],
])
def test_a_bad_node_name_is_a_bad_request(given: object) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_node_name(given)
    assert info.value.code == "bad_request"


def test_the_name_length_limit_is_the_callers() -> None:
    assert check_node_name("abcd", max_chars=4) == "abcd"
    with pytest.raises(RemoteProtocolError):
        check_node_name("abcde", max_chars=4)
