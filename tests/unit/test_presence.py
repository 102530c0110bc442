"""The ``presence`` payload (SPEC 5): what a peer says about itself, strictly parsed."""

from __future__ import annotations

from typing import Any

import pytest

from hd_protocol import ProtocolError, parse_presence
from hd_protocol.peer.presence import Presence, presence_data

ADDR = "ws://10.0.0.1:8766/peer-ws"


def test_presence_data_builds_the_payload_parse_presence_reads() -> None:
    data = presence_data("alice", ["collab"], [ADDR])
    assert data == {"node_name": "alice", "capabilities": ["collab"], "addrs": [ADDR]}
    assert parse_presence(data) == Presence("alice", ("collab",), (ADDR,))


def test_presence_data_copies_its_lists() -> None:
    caps, addrs = ["collab"], [ADDR]
    data = presence_data("a", caps, addrs)
    caps.append("x")
    addrs.clear()
    assert data["capabilities"] == ["collab"] and data["addrs"] == [ADDR]


def test_a_presence_without_fields_is_an_unnamed_node_with_nothing_to_offer() -> None:
    assert parse_presence({}) == Presence("", (), ())


@pytest.mark.parametrize(
    "data",
    [{"node_name": None}, {"node_name": 5}, {"capabilities": None}, {"capabilities": "c"},
     {"capabilities": ["ok", 5]}, {"capabilities": [""]}, {"addrs": None}, {"addrs": ADDR},
     {"addrs": [ADDR, "ws://h:1/admin"]}, {"addrs": [5]}],
    ids=["null_name", "int_name", "null_caps", "string_caps", "int_cap", "empty_cap",
         "null_addrs", "string_addrs", "bad_addr", "int_addr"],
)
def test_a_field_of_the_wrong_type_or_shape_is_a_bad_request(data: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_presence({"node_name": "n", "capabilities": [], "addrs": [], **data})
    assert info.value.code == "bad_request"
