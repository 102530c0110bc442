"""The lobby (SPEC 7.1-7.5), pinned where mutation testing found it loose: the exact
close of a replaced, silent or misbehaving connection, the boundaries of a presence
update, what each field refusal names, and frames whose ids are not even strings.

The shell is played by hand: each test feeds the ``LobbyServer`` and reads what it
returns, so every field of every output can be checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from hd_protocol import Identity
from hd_protocol.brokers.frames import encode_frame
from hd_protocol.brokers.lobby import HEARTBEAT_S, MISSED_HEARTBEATS, LobbyServer, Output
from hd_protocol.brokers.lobby_client import LobbyClient
from hd_protocol.brokers.relay import CloseConn, ToConn
from hd_protocol.effects import Send

T0 = 1_000
WALL = 1_764_000_000_000
EXPIRY_MS = MISSED_HEARTBEATS * HEARTBEAT_S * 1000


def ident(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(f"lobby-mutants/{name}".encode()).digest())


LOBBY, A, B = ident("lobby"), ident("a"), ident("b")


def sha_rng() -> Any:
    counter = iter(range(1 << 62))

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"lobby-mutants/{next(counter)}".encode()).digest()
        return out[:n]

    return rng


def lobby() -> LobbyServer:
    return LobbyServer(LOBBY, rng=sha_rng())


def register(s: LobbyServer, conn: int, who: Identity, now: int = T0) -> list[Output]:
    [chal] = s.connect(conn, now)
    assert isinstance(chal, ToConn)
    client = LobbyClient(who, node_name="n", addresses=[], capabilities=["chat"])
    [reg] = client.receive(chal.frame, now)
    assert isinstance(reg, Send)
    return s.receive(conn, reg.wire, now, WALL)


def frames(outs: list[Output], conn: int) -> list[dict[str, Any]]:
    return [json.loads(o.frame) for o in outs if isinstance(o, ToConn) and o.conn == conn]


def send(s: LobbyServer, conn: int, frame: dict[str, Any], now: int = T0) -> list[Output]:
    return s.receive(conn, json.dumps(frame), now, WALL)


def error(s: LobbyServer, conn: int, frame: dict[str, Any]) -> tuple[str, str]:
    [e] = frames(send(s, conn, frame), conn)
    assert e["type"] == "error", e
    return e["code"], e["message"]


# --- registration ----------------------------------------------------------------------------


def test_a_registration_gets_a_session_of_16_random_bytes() -> None:
    s = lobby()
    [reg] = frames(register(s, 1, A), 1)
    assert len(base64.b64decode(reg["session"], validate=True)) == 16


def test_a_second_registration_closes_the_old_connection_with_replaced() -> None:
    s = lobby()
    register(s, 1, A)
    out = register(s, 2, A)
    assert out[:2] == [
        ToConn(1, encode_frame("error", {"code": "replaced",
                                         "message": "registered on another connection"})),
        CloseConn(1, 1000, "replaced")]


def test_a_register_with_a_bad_node_name_names_the_node_name() -> None:
    s = lobby()
    [chal] = s.connect(1, T0)
    assert isinstance(chal, ToConn)
    reg = {"type": "register", "node_id": A.node_id, "public_key": A.public_key,
           "node_name": "n" * 65, "addresses": [], "capabilities": [], "sig": "x"}
    assert error(s, 1, reg) == ("bad_request", "node_name is a string of 0..64 chars")


def test_a_register_may_carry_a_one_character_capability() -> None:
    s = lobby()
    [chal] = s.connect(1, T0)
    assert isinstance(chal, ToConn)
    client = LobbyClient(A, node_name="n", addresses=[], capabilities=["x"])
    [reg] = client.receive(chal.frame, T0)
    assert isinstance(reg, Send)
    [registered] = frames(s.receive(1, reg.wire, T0, WALL), 1)
    assert registered["type"] == "registered"


# --- closing ------------------------------------------------------------------------------------


def test_a_bad_proof_closes_with_authentication_failed() -> None:
    s = lobby()
    s.connect(1, T0)
    reg = {"type": "register", "node_id": A.node_id, "public_key": A.public_key,
           "node_name": "n", "addresses": [], "capabilities": [], "sig": "x"}
    out = send(s, 1, reg)
    assert out[-1] == CloseConn(1, 1008, "authentication failed")


def test_too_many_bad_frames_close_with_that_reason() -> None:
    s = lobby()
    register(s, 1, A)
    outs: list[Output] = []
    for _ in range(16):
        outs += send(s, 1, {"type": "nonsense"})
    assert outs[-1] == CloseConn(1, 1008, "too many bad frames")
    assert [o for o in outs if isinstance(o, CloseConn)] == [outs[-1]]


def test_connections_silent_for_three_heartbeats_are_all_closed_at_one_tick() -> None:
    s = lobby()
    register(s, 1, A)
    register(s, 2, B)
    s.connect(3, T0)
    out = s.on_timer(T0 + EXPIRY_MS, WALL)
    closes = [o for o in out if isinstance(o, CloseConn)]
    assert closes == [CloseConn(c, 1000, "silent for three heartbeats") for c in (1, 2, 3)]


# --- presence -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "caps"), [
    ("x", []),  # a status of one character
    ("away", ["c"] * 32),  # exactly the capability limit
    ("away", ["c"]),  # a capability of one character
    ("away", ["c" * 64]),  # ... and of 64
])
def test_a_presence_at_its_boundaries_is_taken(status: str, caps: list[str]) -> None:
    s = lobby()
    register(s, 1, A)
    register(s, 2, B)
    assert send(s, 1, {"type": "presence", "status": status, "capabilities": caps}) == []
    entry = s.node(A.node_id)
    assert entry is not None and (entry["status"], entry["capabilities"]) == (status, caps)


def test_a_presence_with_a_capability_of_65_characters_is_a_bad_request() -> None:
    s = lobby()
    register(s, 1, A)
    assert error(s, 1, {"type": "presence", "status": "away", "capabilities": ["c" * 65]})[0] \
        == "bad_request"


@pytest.mark.parametrize("status", ["", "s" * 33, 5])
def test_a_presence_with_a_bad_status_names_the_status(status: object) -> None:
    s = lobby()
    register(s, 1, A)
    assert error(s, 1, {"type": "presence", "status": status, "capabilities": []}) == (
        "bad_request", "status is a string of 1..32 chars")


# --- rooms and signals ----------------------------------------------------------------------


def test_a_room_id_is_16_random_bytes_in_hex() -> None:
    s = lobby()
    register(s, 1, A)
    [created] = frames(send(s, 1, {"type": "create_room", "name": "r", "visibility": "public",
                                   "joinPolicy": "open"}), 1)
    room_id = created["room"]["id"]
    assert len(bytes.fromhex(room_id)) == 16 and room_id == room_id.lower()


@pytest.mark.parametrize("room_id", [[1], {"a": 1}, 5, None])
def test_a_room_id_that_is_no_string_is_no_room(room_id: object) -> None:
    s = lobby()
    register(s, 1, A)
    assert error(s, 1, {"type": "join_room", "roomId": room_id})[0] == "no_room"
    assert error(s, 1, {"type": "leave_room", "roomId": room_id})[0] == "no_room"


def signal(**over: Any) -> dict[str, Any]:
    return {"type": "signal", "to": B.node_id, "sid": "s1", "kind": "offer", "sdp": "v=0"} | over


@pytest.mark.parametrize("to", [[1], {"a": 1}, 5, "not a node id"])
def test_a_signal_to_something_that_is_no_node_id_is_not_found(to: object) -> None:
    s = lobby()
    register(s, 1, A)
    assert error(s, 1, signal(to=to))[0] == "not_found"


@pytest.mark.parametrize(("over", "message"), [
    ({"sid": ""}, "sid is a string of 1..64 chars"),
    ({"sid": 5}, "sid is a string of 1..64 chars"),
    ({"sdp": 5}, "sdp is a string of 0..32768 chars"),
    ({"sdp": "x" * (32 * 1024 + 1)}, "sdp is a string of 0..32768 chars"),
])
def test_a_malformed_signal_names_its_field(over: dict[str, Any], message: str) -> None:
    s = lobby()
    register(s, 1, A)
    assert error(s, 1, signal(**over)) == ("bad_request", message)
