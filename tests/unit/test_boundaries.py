"""Every size and count limit at its edge: the largest value allowed is taken and the
next one is refused (SPEC 3, 4.2, 5, 9, 11).

A test that only checks a value far past a limit passes whether the check says ``>``
or ``>=``, or whether the limit is the configured one or the default; these pin the
exact edge, and the configured limit where there is one.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from hd_protocol import (
    Identity,
    Limits,
    ProtocolError,
    canonical_json,
    decode_envelope,
    decode_invite,
    decode_ws_frame,
    encode_envelope,
    encode_invite,
    encode_ws_frame,
    make_candidate,
    make_envelope,
    parse_presence,
    sign_envelope,
)
from hd_protocol.envelope import wire_size

NOW = 1_764_000_000_000


def code_of(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        fn(*args, **kw)
    return info.value.code


# --- envelope and browser frame size ------------------------------------------------


def _envelope(alice: Identity, text: str) -> str:
    env = make_envelope("presence", msg_id="1" * 32, src=alice.node_id, dst=None, ts=NOW,
                        data={"t": text})
    return encode_envelope(sign_envelope(env, alice))


@pytest.mark.parametrize("text", ["ascii", "caf\u00e9 \u2603"], ids=["ascii", "utf8"])
def test_an_envelope_of_exactly_max_bytes_decodes_and_one_byte_less_room_refuses_it(
    alice: Identity, text: str
) -> None:
    wire = _envelope(alice, text * 50)
    size = len(wire.encode("utf-8"))
    for frame in (wire, wire.encode("utf-8")):
        assert decode_envelope(frame, max_bytes=size).data == {"t": text * 50}
        assert code_of(decode_envelope, frame, max_bytes=size - 1) == "too_large"


def test_the_default_envelope_limit_is_one_mebibyte(alice: Identity) -> None:
    base = _envelope(alice, "")
    wire = _envelope(alice, "x" * (1024 * 1024 - len(base)))
    assert wire_size(wire) == 1024 * 1024
    assert decode_envelope(wire).data["t"].startswith("x")
    assert code_of(decode_envelope, _envelope(alice, "x" * (1024 * 1024 - len(base) + 1))) == (
        "too_large")


def test_a_browser_frame_of_exactly_max_bytes_decodes_and_one_more_byte_is_too_large() -> None:
    frame = encode_ws_frame("peerchat", "send", {"node_id": "n", "text": "\u00e9" * 40})
    size = wire_size(frame)
    assert decode_ws_frame(frame, max_bytes=size).data["text"] == "\u00e9" * 40
    assert code_of(decode_ws_frame, frame, max_bytes=size - 1) == "too_large"


# --- invite fields --------------------------------------------------------------------


def invite_text(alice: Identity, **change: Any) -> str:
    body: dict[str, Any] = {
        "addrs": [make_candidate("host", "ws://192.168.1.5:8766/peer-ws")], "exp": NOW,
        "node_id": alice.node_id, "public_key": alice.public_key, "token": "t" * 32,
    }
    body.update(change)
    return "hd1:" + base64.urlsafe_b64encode(canonical_json(body)).rstrip(b"=").decode()


@pytest.mark.parametrize("token_len", [16, 256])
def test_an_invite_token_of_16_to_256_chars_is_taken(alice: Identity, token_len: int) -> None:
    assert decode_invite(invite_text(alice, token="t" * token_len))["token"] == "t" * token_len


@pytest.mark.parametrize("token_len", [15, 257, 0])
def test_an_invite_token_outside_16_to_256_chars_is_refused(
    alice: Identity, token_len: int
) -> None:
    assert code_of(decode_invite, invite_text(alice, token="t" * token_len)) == "bad_invite"
    with pytest.raises(ProtocolError):
        encode_invite(addrs=[], exp=NOW, node_id=alice.node_id, public_key=alice.public_key,
                      token="t" * token_len)


def test_an_invite_may_expire_at_0_but_not_before(alice: Identity) -> None:
    assert decode_invite(invite_text(alice, exp=0))["exp"] == 0
    assert code_of(decode_invite, invite_text(alice, exp=-1)) == "bad_invite"


def _addrs(n: int) -> list[dict[str, Any]]:
    return [make_candidate("host", f"ws://10.0.0.{i}:8766/peer-ws") for i in range(n)]


@pytest.mark.parametrize("n", [0, 16])
def test_an_invite_carries_up_to_16_addresses(alice: Identity, n: int) -> None:
    assert decode_invite(invite_text(alice, addrs=_addrs(n)))["addrs"] == _addrs(n)


def test_an_invite_with_17_addresses_is_refused(alice: Identity) -> None:
    assert code_of(decode_invite, invite_text(alice, addrs=_addrs(17))) == "bad_invite"


def test_an_invite_address_of_512_chars_is_taken_and_513_refused(alice: Identity) -> None:
    def url(n: int) -> str:
        return "ws://" + "h" * (n - len("ws://:1/peer-ws")) + ":1/peer-ws"

    assert len(url(512)) == 512
    taken = decode_invite(invite_text(alice, addrs=[make_candidate("host", url(512))]))
    assert taken["addrs"][0]["url"] == url(512)
    refused = invite_text(alice, addrs=[make_candidate("host", url(513))])
    assert code_of(decode_invite, refused) == "bad_invite"


@pytest.mark.parametrize(("priority", "ok"), [(0, True), (2**32 - 1, True), (2**32, False),
                                                (-1, False), (True, False)])
def test_an_invite_address_priority_is_a_32_bit_unsigned_integer(
    alice: Identity, priority: int, ok: bool
) -> None:
    addr = {"type": "relay", "url": "wss://relay.example/relay-ws", "priority": priority}
    text = invite_text(alice, addrs=[addr])
    if ok:
        assert decode_invite(text)["addrs"] == [addr]
    else:
        assert code_of(decode_invite, text) == "bad_invite"


# --- presence ---------------------------------------------------------------------------


def test_presence_takes_a_64_char_name_32_capabilities_of_64_chars_and_16_addresses() -> None:
    caps = [f"{i:02d}" + "c" * 62 for i in range(32)]
    addrs = [f"ws://10.0.0.{i}:8766/peer-ws" for i in range(16)]
    p = parse_presence({"node_name": "n" * 64, "capabilities": caps, "addrs": addrs})
    assert (p.node_name, p.capabilities, p.addrs) == ("n" * 64, tuple(caps), tuple(addrs))


@pytest.mark.parametrize(
    "data",
    [{"node_name": "n" * 65}, {"capabilities": ["c"] * 33}, {"capabilities": ["c" * 65]},
     {"capabilities": [""]}, {"addrs": [f"ws://10.0.0.{i}:1/peer-ws" for i in range(17)]}],
    ids=["name 65", "33 caps", "cap 65", "empty cap", "17 addrs"],
)
def test_presence_one_past_a_limit_is_a_bad_request(data: dict[str, Any]) -> None:
    assert code_of(parse_presence, data) == "bad_request"


def test_presence_applies_the_configured_limits() -> None:
    small = Limits(node_name_chars=3, capabilities=1, addresses=1)
    ok = parse_presence({"node_name": "abc", "capabilities": ["a"],
                         "addrs": ["ws://h:1/peer-ws"]}, small)
    assert ok.node_name == "abc"
    for data in ({"node_name": "abcd"}, {"capabilities": ["a", "b"]},
                 {"addrs": ["ws://h:1/peer-ws", "ws://i:1/peer-ws"]}):
        assert code_of(parse_presence, data, small) == "bad_request"
