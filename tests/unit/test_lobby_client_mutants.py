"""The node's side of a lobby connection (SPEC 7), pinned where mutation testing found it
loose: what a ``registered`` frame becomes, the heartbeat bounds, the code of each
dropped frame, tolerant reading of lists, and the frame size limit.

The lobby is played by hand: each test hands the client the frames a lobby (honest,
lying or broken) could send and reads what the client makes of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest

from hd_protocol import Identity
from hd_protocol.brokers.frames import challenge, encode_frame
from hd_protocol.brokers.lobby_client import (
    Attestation,
    DirectoryUpdate,
    Dropped,
    LobbyClient,
    LobbyError,
    Registered,
)
from hd_protocol.limits import DEFAULT_LIMITS
from hd_protocol.peer.admission import issue_attestation

T0 = 5_000


def ident(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(f"lobby-client-mutants/{name}".encode()).digest())


LOBBY, ME, OTHER = ident("lobby"), ident("me"), ident("other")


def entry(who: Identity, status: str = "online") -> dict[str, Any]:
    return {"node_id": who.node_id, "public_key": who.public_key, "node_name": "x",
            "capabilities": [], "status": status, "listed": False}


def card(who: Identity) -> dict[str, Any]:
    return {"node_id": who.node_id, "public_key": who.public_key, "node_name": "x",
            "addresses": []}


def challenged(**kw: Any) -> LobbyClient:
    c = LobbyClient(ME, node_name="me", addresses=[], capabilities=["chat"], **kw)
    [_register] = c.receive(challenge(LOBBY, bytes(32)), T0)
    return c


def registered(**fields: Any) -> LobbyClient:
    c = challenged()
    body: dict[str, Any] = {"session": "s", "heartbeat_s": 15, "presence": [], "rooms": []}
    body.update(fields)
    [reg] = c.receive(encode_frame("registered", body), T0)
    assert isinstance(reg, Registered)
    return c


def dropped(c: LobbyClient, type_: str, body: dict[str, Any]) -> Dropped:
    [d] = c.receive(encode_frame(type_, body), T0)
    assert isinstance(d, Dropped), d
    return d


# --- registered --------------------------------------------------------------------------------


def test_registered_keeps_the_session_the_heartbeat_and_the_rooms_of_the_frame() -> None:
    rooms = [{"id": "r1", "name": "one"}, {"id": "r2", "name": "two"}]
    c = registered(session="c2Vzc2lvbg==", heartbeat_s=20, rooms=[*rooms, 5, "x"])
    assert c.registered == Registered("c2Vzc2lvbg==", 20, (), tuple(rooms))


def test_registered_without_a_session_or_rooms_has_empty_ones() -> None:
    c = challenged()
    [reg] = c.receive(encode_frame("registered", {"heartbeat_s": 15}), T0)
    assert reg == Registered("", 15, (), ())


@pytest.mark.parametrize("rooms", [5, None, "rooms", {"id": "r"}])
def test_registered_with_rooms_that_are_no_list_has_no_rooms(rooms: object) -> None:
    assert registered(rooms=rooms).registered == Registered("s", 15, (), ())


@pytest.mark.parametrize("hb", [1, 3600])
def test_a_heartbeat_of_1_to_3600_seconds_is_taken(hb: int) -> None:
    c = registered(heartbeat_s=hb)
    assert c.registered is not None and c.registered.heartbeat_s == hb
    assert c.next_deadline() == T0 + hb * 1000


@pytest.mark.parametrize("hb", [0, 3601, "15", None])
def test_a_heartbeat_out_of_bounds_is_a_dropped_bad_frame(hb: object) -> None:
    d = dropped(challenged(), "registered", {"session": "s", "heartbeat_s": hb})
    assert (d.code, d.message) == ("bad_frame", "heartbeat_s is 1..3600")


def test_a_directory_entry_whose_key_is_no_key_is_skipped_and_the_next_one_read() -> None:
    broken = {**entry(OTHER), "node_id": "a" * 16, "public_key": "no key"}
    c = registered(presence=[broken, entry(OTHER)])
    assert list(c.directory) == [OTHER.node_id]


# --- frames out of order ---------------------------------------------------------------------


def test_a_frame_before_the_challenge_is_a_dropped_bad_frame() -> None:
    c = LobbyClient(ME, node_name="me", addresses=[], capabilities=[])
    d = dropped(c, "registered", {"session": "s", "heartbeat_s": 15})
    assert (d.code, d.message) == ("bad_frame", "registered before the challenge")


def test_a_frame_before_registered_is_a_dropped_bad_frame() -> None:
    d = dropped(challenged(), "rooms", {"rooms": []})
    assert (d.code, d.message) == ("bad_frame", "rooms before registered")


def test_an_error_frame_without_code_or_message_is_an_empty_lobby_error() -> None:
    c = LobbyClient(ME, node_name="me", addresses=[], capabilities=[])
    assert c.receive(encode_frame("error"), T0) == [LobbyError("", "")]
    assert c.receive(encode_frame("error", {"code": "full", "message": "m"}), T0) == [
        LobbyError("full", "m")]


# --- registered frames ---------------------------------------------------------------------------


def test_a_node_card_that_is_no_object_is_a_dropped_bad_frame() -> None:
    d = dropped(registered(), "room_info", {"roomId": "r", "host": "a card"})
    assert (d.code, d.message) == ("bad_frame", "a node card is an object")


def test_a_room_id_that_is_no_string_is_a_dropped_bad_frame() -> None:
    d = dropped(registered(), "room_info", {"roomId": 5, "host": card(OTHER)})
    assert (d.code, d.message) == ("bad_frame", "roomId is a string")


def test_an_offline_node_the_directory_never_had_is_passed_on_without_harm() -> None:
    c = registered()
    gone = entry(OTHER, status="offline")
    assert c.receive(encode_frame("presence", {"node": gone}), T0) == [DirectoryUpdate(gone)]
    assert c.directory == {}


def test_an_attestation_valid_until_1_ms_is_ours_whatever_the_clock() -> None:
    """The client has no wall clock: it checks everything of its attestation but the
    expiry, which is the receiver's to judge."""
    att = issue_attestation(LOBBY, ME.node_id, ME.public_key, 1)
    assert registered().receive(encode_frame("attestation", att), T0) == [Attestation(att)]


# --- size -----------------------------------------------------------------------------------------


def test_a_frame_may_be_4096_bytes_larger_than_an_envelope_and_not_one_more() -> None:
    limits = replace(DEFAULT_LIMITS, max_envelope_bytes=100)
    c = LobbyClient(ME, node_name="me", addresses=[], capabilities=[], limits=limits)
    shell = encode_frame("error", {"code": "c", "message": ""})
    pad = 100 + 4096 - len(shell.encode("utf-8"))
    at_limit = encode_frame("error", {"code": "c", "message": "m" * pad})
    assert len(at_limit.encode("utf-8")) == 4196
    assert c.receive(at_limit, T0) == [LobbyError("c", "m" * pad)]
    over = encode_frame("error", {"code": "c", "message": "m" * (pad + 1)})
    [d] = c.receive(over, T0)
    assert isinstance(d, Dropped) and d.code == "too_large"
