"""The browser socket frame ``{channel, event, data}`` (SPEC 9)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hd_protocol import (
    ProtocolError,
    WsFrame,
    decode_ws_frame,
    encode_ws_frame,
)
from hd_protocol.apps.ws import CLIENT_EVENTS, error_frame

MiB = 1024 * 1024

# SPEC 9 table, client -> node column.
SPEC_CLIENT_EVENTS = {
    "network": {"list_peers", "connect", "disconnect", "invite_create", "invite_revoke",
                "pair_redeem", "set_trust", "list_metrics", "bench"},
    "collab": {"join", "leave", "op", "share", "unshare"},
    "peerchat": {"open", "send", "read", "unread", "close"},
    "agent": {"ask", "ask_peer", "cancel"},
    "lobby": {"state", "connect", "disconnect", "list_rooms", "create_room", "join_room",
              "leave_room"},
}


def code_of(text: Any, **kw: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_ws_frame(text, **kw)
    return info.value.code


def test_every_client_event_of_the_spec_table_is_accepted() -> None:
    for channel, events in SPEC_CLIENT_EVENTS.items():
        assert events <= CLIENT_EVENTS[channel]
        for event in events:
            frame = decode_ws_frame(encode_ws_frame(channel, event, {"x": 1}))
            assert frame == WsFrame(channel, event, {"x": 1})


@pytest.mark.parametrize(
    "channel, event, data",
    [("network", "peers", {"self": {"node_id": "a"}, "peers": []}),
     ("system", "hello", {"node_id": "abc", "version": "0.1.0"}),
     ("peerchat", "message", {"text": "h\u00e9llo \u2603", "n": -3, "ok": True, "z": None}),
     ("collab", "state", {})],
)
def test_frame_round_trips_through_encode_and_decode(
    channel: str, event: str, data: dict[str, Any]
) -> None:
    text = encode_ws_frame(channel, event, data)
    assert json.loads(text) == {"channel": channel, "event": event, "data": data}
    assert decode_ws_frame(text, allowed=None) == WsFrame(channel, event, data)
    assert decode_ws_frame(text.encode("utf-8"), allowed=None) == WsFrame(channel, event, data)


def test_encode_without_data_sends_an_empty_object() -> None:
    assert json.loads(encode_ws_frame("lobby", "state")) == {
        "channel": "lobby", "event": "state", "data": {}
    }


def test_missing_or_null_data_decodes_as_an_empty_object() -> None:
    assert decode_ws_frame('{"channel":"network","event":"list_peers"}').data == {}
    assert decode_ws_frame('{"channel":"network","event":"list_peers","data":null}').data == {}


def test_error_frame_carries_code_and_message_on_the_channel() -> None:
    frame = decode_ws_frame(error_frame("collab", "bad_request", "no pane"), allowed=None)
    assert frame == WsFrame("collab", "error", {"code": "bad_request", "message": "no pane"})


def test_unknown_channel_is_reported_as_unknown_channel() -> None:
    assert code_of(encode_ws_frame("weather", "list_peers")) == "unknown_channel"


@pytest.mark.parametrize("channel, event", [("network", "peers"), ("collab", "state"),
                                            ("agent", "delete_everything")])
def test_unknown_or_node_only_event_is_reported_as_unknown_event(channel: str, event: str) -> None:
    assert code_of(encode_ws_frame(channel, event)) == "unknown_event"


def test_custom_allowed_table_is_honoured() -> None:
    allowed = {"mine": frozenset({"go"})}
    assert decode_ws_frame(encode_ws_frame("mine", "go"), allowed=allowed).event == "go"
    assert code_of(encode_ws_frame("network", "list_peers"), allowed=allowed) == \
        "unknown_channel"


@pytest.mark.parametrize("text", ["{", "not json", "", '{"channel":"a",}', b"\xff\xfe",
                                  '{"channel":"network","event":"connect","data":{"n":1.5}}',
                                  '{"channel":"network","channel":"lobby","event":"state"}'])
def test_malformed_json_is_reported_as_bad_json(text: str | bytes) -> None:
    assert code_of(text) == "bad_json"


@pytest.mark.parametrize(
    "obj",
    [[], "frame", 5, None,
     {"event": "list_peers"},  # no channel
     {"channel": "network"},  # no event
     {"channel": "network", "event": "list_peers", "extra": 1},
     {"channel": "Network", "event": "list_peers"},
     {"channel": "network", "event": "list-peers"},
     {"channel": "network\n", "event": "list_peers"},
     {"channel": 5, "event": "list_peers"},
     {"channel": "network", "event": None},
     {"channel": "network", "event": "x" * 33},
     {"channel": "network", "event": "list_peers", "data": [1]},
     {"channel": "network", "event": "list_peers", "data": "x"}],
    ids=repr,
)
def test_structurally_wrong_frame_is_reported_as_bad_frame(obj: Any) -> None:
    assert code_of(json.dumps(obj)) == "bad_frame"


@pytest.mark.parametrize("value", [None, 12, ["x"], {"channel": "network"}])
def test_input_that_is_not_text_is_reported_as_bad_frame(value: Any) -> None:
    assert code_of(value) == "bad_frame"


def test_frame_over_one_mebibyte_is_too_large() -> None:
    text = encode_ws_frame("peerchat", "send", {"node_id": "a", "text": "x" * MiB})
    assert code_of(text) == "too_large"
    small = encode_ws_frame("peerchat", "send", {"text": "abc"})
    size = len(small.encode("utf-8"))
    assert decode_ws_frame(small, max_bytes=size).data == {"text": "abc"}
    assert code_of(small, max_bytes=size - 1) == "too_large"


def test_frame_size_is_counted_in_utf8_bytes() -> None:
    text = encode_ws_frame("peerchat", "send", {"text": "\u2603" * (MiB // 3 + 10)})
    assert len(text) < MiB < len(text.encode("utf-8"))
    assert code_of(text) == "too_large"
