"""ICE-lite candidates (SPEC 8.1): priority and ordering."""

from __future__ import annotations

import pytest

from hd_protocol import ProtocolError, make_candidate, priority, sort_candidates
from hd_protocol.peer.candidates import DialCandidate, check_candidate, dial_candidates


@pytest.mark.parametrize(
    "type_, local_pref, expected",
    [("host", 65535, 126 * 2**24 + 65535 * 2**8 + 255),
     ("host", 0, 126 * 2**24 + 255),
     ("srflx", 65535, 100 * 2**24 + 65535 * 2**8 + 255),
     ("relay", 65535, 65535 * 2**8 + 255),
     ("relay", 1, 2**8 + 255)],
)
def test_priority_follows_rfc8445_with_the_spec_type_preferences(
    type_: str, local_pref: int, expected: int
) -> None:
    assert priority(type_, local_pref) == expected


def test_host_with_the_advertised_address_matches_the_invite_vector() -> None:
    assert priority("host", 65535) == 2130706431


def test_any_host_outranks_any_srflx_which_outranks_any_relay() -> None:
    assert priority("host", 0) > priority("srflx", 65535)
    assert priority("srflx", 0) > priority("relay", 65535)


@pytest.mark.parametrize("type_, local_pref", [("turn", 1), ("HOST", 1), ("host", -1),
                                               ("host", 65536)])
def test_priority_refuses_an_unknown_type_or_a_local_pref_out_of_range(
    type_: str, local_pref: int
) -> None:
    with pytest.raises(ValueError):
        priority(type_, local_pref)


def test_make_candidate_builds_the_wire_shape() -> None:
    assert make_candidate("srflx", "ws://203.0.113.4:8766/peer-ws", 100) == {
        "type": "srflx", "url": "ws://203.0.113.4:8766/peer-ws",
        "priority": priority("srflx", 100),
    }
    assert make_candidate("host", "ws://[fe80::1]:8766/peer-ws")["priority"] == 2130706431


def test_sort_candidates_puts_the_highest_priority_first_and_removes_duplicate_urls() -> None:
    relay = make_candidate("relay", "wss://relay.example/relay-ws")
    host_lan = make_candidate("host", "ws://192.168.1.5:8766/peer-ws", 65534)
    host_adv = make_candidate("host", "ws://198.51.100.7:8766/peer-ws", 65535)
    srflx = make_candidate("srflx", "ws://203.0.113.4:8766/peer-ws")
    dup_low = make_candidate("relay", "ws://192.168.1.5:8766/peer-ws")  # same url, worse
    got = sort_candidates([relay, dup_low, srflx, host_lan, host_adv])
    assert got == [host_adv, host_lan, srflx, relay]


def test_sort_candidates_leaves_its_input_alone() -> None:
    cands = [make_candidate("relay", "wss://r/x"), make_candidate("host", "ws://h/peer-ws")]
    before = list(cands)
    sort_candidates(cands)
    assert cands == before


@pytest.mark.parametrize(
    "cand",
    [[], {"type": "host", "url": "ws://h:1/peer-ws"},
     {"type": "turn", "url": "ws://h:1/peer-ws", "priority": 1},
     {"type": ["host"], "url": "ws://h:1/peer-ws", "priority": 1},
     {"type": {"host": 1}, "url": "ws://h:1/peer-ws", "priority": 1},
     {"type": "host", "url": "http://h:1/peer-ws", "priority": 1},
     {"type": "host", "url": 5, "priority": 1},
     {"type": "host", "url": "ws://h:1/peer-ws", "priority": -1},
     {"type": "host", "url": "ws://h:1/peer-ws", "priority": "1"}],
    ids=["list", "no priority", "turn", "type list", "type object", "http", "url int",
         "negative", "string priority"],
)
def test_a_malformed_candidate_is_bad_candidate(cand: object) -> None:
    with pytest.raises(ProtocolError) as info:
        check_candidate(cand)
    assert info.value.code == "bad_candidate"


def test_wire_candidates_become_ladder_candidates_and_malformed_ones_are_skipped() -> None:
    host = make_candidate("host", "ws://10.0.0.1:1/peer-ws")
    srflx = make_candidate("srflx", "ws://1.2.3.4:1/peer-ws", 7)
    relay = make_candidate("relay", "wss://relay.example/relay-ws", 3)
    assert dial_candidates([host, {"type": "turn"}, srflx, relay]) == [
        DialCandidate("direct", host["url"], host["priority"]),
        DialCandidate("direct", srflx["url"], srflx["priority"]),
        DialCandidate("relay", relay["url"], relay["priority"]),
    ]
