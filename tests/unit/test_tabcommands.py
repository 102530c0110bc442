"""The one table of tab commands (SPEC 9, ``hd_protocol.apps.tabcommands``): each command's
fields are checked once, in a fixed order, into a typed command."""

from __future__ import annotations

from typing import Any

import pytest

from hd_protocol import RemoteProtocolError
from hd_protocol.apps.tabcommands import (
    COMMANDS,
    AgentAskPeer,
    CollabOp,
    CollabShare,
    LobbyConnect,
    NetworkBench,
    NetworkConnect,
    NetworkInviteCreate,
    NetworkSetTrust,
    PeerchatOpen,
    decode_command,
    req_of,
)
from hd_protocol.apps.ws import CLIENT_EVENTS

P = "p" * 16


def error_of(channel: str, event: str, data: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(RemoteProtocolError) as info:
        decode_command(channel, event, data)
    return info.value.code, info.value.message


def test_a_command_keeps_its_typed_fields_and_the_req_id_and_ignores_the_rest() -> None:
    cmd = decode_command("network", "set_trust",
                         {"node_id": "n", "trusted": True, "extra": 1, "req": "r" * 64})
    assert cmd == NetworkSetTrust(node_id="n", trusted=True, req="r" * 64)
    assert decode_command("network", "connect", {"address": "ws://h:1/peer-ws",
                                                 "node_id": None}) == NetworkConnect(
        address="ws://h:1/peer-ws")
    assert decode_command("network", "invite_create", {}) == NetworkInviteCreate()
    ping = decode_command("system", "ping", {"anything": 1})
    assert (ping.channel, ping.event, ping.req) == ("system", "ping", None)


@pytest.mark.parametrize(
    ("channel", "event", "data", "message"),
    [("network", "disconnect", {}, "disconnect needs node_id"),
     ("network", "set_trust", {"node_id": "n"}, "set_trust needs trusted"),
     ("network", "set_trust", {"node_id": "n", "trusted": 1}, "trusted has the wrong type"),
     ("collab", "op", {"paneKey": "k", "baseRev": "1", "text": "t"},
      "baseRev has the wrong type"),
     ("collab", "op", {"paneKey": "k", "baseRev": True, "text": "t"},
      "baseRev has the wrong type"),
     ("network", "bench", {"node_id": "n", "count": 1.0}, "count has the wrong type"),
     ("peerchat", "send", {"node_id": "n", "text": None}, "text has the wrong type"),
     ("system", "ping", {"req": "r" * 65}, "req must be a string of at most 64 chars"),
     ("system", "ping", {"req": 7}, "req must be a string of at most 64 chars")],
    ids=["missing", "missing bool", "int for bool", "str for int", "bool for int",
         "float for int", "null for str", "long req", "int req"],
)
def test_a_command_with_a_missing_or_mistyped_field_is_a_bad_request(
    channel: str, event: str, data: dict[str, object], message: str
) -> None:
    assert error_of(channel, event, data) == ("bad_request", message)


def test_an_optional_field_left_out_does_not_stop_the_check_of_the_next_ones() -> None:
    assert decode_command("network", "bench", {"node_id": "n", "size": 5}) == NetworkBench(
        node_id="n", size=5)
    assert error_of("network", "bench", {"node_id": "n", "size": "5"})[0] == "bad_request"


@pytest.mark.parametrize(
    ("channel", "event", "data", "error"),
    [("collab", "join", {"paneKey": "bad key"},
      ("bad_request", "paneKey must be 1..128 chars of [A-Za-z0-9_.:-]")),
     ("collab", "op", {"paneKey": "k", "baseRev": -1, "text": "t"},
      ("bad_request", "baseRev must be an integer in 0..2**53-1")),
     ("collab", "share", {"paneKey": "k", "node_id": "nope"},
      ("bad_request", "node_id must be a node id")),
     ("peerchat", "send", {"node_id": "P", "text": "hi"},
      ("bad_request", "node_id must be a node id")),
     ("agent", "ask", {"turnId": "", "prompt": "p"},
      ("bad_request", "turnId is 1..64 characters")),
     ("agent", "cancel", {"turnId": "t" * 65}, ("bad_request", "turnId is 1..64 characters")),
     ("network", "invite_create", {"ttl": 0},
      ("bad_request", "ttl must be a positive number of seconds")),
     ("lobby", "connect", {"url": "http://lobby"},
      ("bad_request", "url is a ws:// or wss:// URL of /lobby-ws")),
     ("network", "connect", {"address": "http://h:1/peer-ws"}, None)],
)
def test_a_field_that_breaks_its_rule_is_refused_with_the_rules_words(
    channel: str, event: str, data: dict[str, object], error: tuple[str, str] | None
) -> None:
    code, message = error_of(channel, event, data)
    if error is not None:
        assert (code, message) == error
    else:
        assert code == "bad_address"


def test_every_type_is_checked_before_the_req_and_the_req_before_any_rule() -> None:
    # A bad pane key, a bad req and a mistyped text: the type is named first ...
    bad = {"paneKey": "bad key", "baseRev": 0, "text": 5, "req": 5}
    assert error_of("collab", "op", bad)[1] == "text has the wrong type"
    # ... then the req, then the rules in field order.
    assert error_of("collab", "op", {**bad, "text": "t"})[1].startswith("req must be")
    assert error_of("collab", "op", {**bad, "text": "t", "req": "r", "baseRev": -1})[1] == (
        "paneKey must be 1..128 chars of [A-Za-z0-9_.:-]")
    assert error_of("agent", "ask_peer", {"turnId": "", "node_id": "x", "prompt": 3})[1] == (
        "prompt has the wrong type")


def test_rules_leave_a_good_value_and_an_absent_optional_field_alone() -> None:
    assert decode_command("collab", "op", {"paneKey": "a.b:c-d_1", "baseRev": 2**53 - 1,
                                           "text": "t", "req": "x"}) == CollabOp(
        paneKey="a.b:c-d_1", baseRev=2**53 - 1, text="t", req="x")
    assert decode_command("collab", "share", {"paneKey": "k", "node_id": P}) == CollabShare(
        paneKey="k", node_id=P)
    assert decode_command("lobby", "connect", {"url": None}) == LobbyConnect()
    assert decode_command("lobby", "connect", {"url": "wss://l/lobby-ws"}).url == (  # type: ignore[attr-defined]
        "wss://l/lobby-ws")
    assert decode_command("network", "invite_create", {"ttl": 1}) == NetworkInviteCreate(ttl=1)
    assert decode_command("agent", "ask_peer", {"turnId": "t" * 64, "node_id": P,
                                                "prompt": ""}) == AgentAskPeer(
        turnId="t" * 64, node_id=P, prompt="")
    assert decode_command("peerchat", "open", {"node_id": P, "limit": 0}) == PeerchatOpen(
        node_id=P, limit=0)  # the limit's range is the machine's (after its self check)


def test_a_command_the_table_does_not_hold_is_unsupported() -> None:
    assert error_of("network", "reboot", {}) == ("unsupported",
                                                 "network reboot is not served yet")


def test_the_frame_decoder_allows_exactly_the_commands_of_the_table() -> None:
    assert {(c, e) for c, events in CLIENT_EVENTS.items() for e in events} == set(COMMANDS)
    for (channel, event), cls in COMMANDS.items():
        assert (cls.channel, cls.event) == (channel, event)


def test_long_commands_are_the_ones_that_wait_on_the_network_or_an_agent() -> None:
    assert {k for k, cls in COMMANDS.items() if cls.long} == {
        ("network", "connect"), ("network", "pair_redeem"), ("network", "bench"),
        ("lobby", "join_room"), ("lobby", "list_rooms"), ("lobby", "create_room"),
        ("lobby", "leave_room"), ("agent", "ask"), ("agent", "ask_peer")}


@pytest.mark.parametrize(("data", "req"), [
    ({"req": "r"}, "r"), ({"req": "r" * 64}, "r" * 64), ({"req": "r" * 65}, None),
    ({"req": 5}, None), ({}, None)])
def test_req_of_gives_only_a_valid_req(data: dict[str, Any], req: str | None) -> None:
    assert req_of(data) == req


def test_commands_are_immutable() -> None:
    cmd = decode_command("collab", "join", {"paneKey": "k"})
    with pytest.raises(AttributeError):
        cmd.paneKey = "other"  # type: ignore[attr-defined, misc]
