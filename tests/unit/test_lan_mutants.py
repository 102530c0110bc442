"""LAN discovery (SPEC 8.5): the edges the main tests leave open — bounds on names, ports
and TXT keys, IPv6 hosts under open-lan, and the table's schedule (issue 13)."""

from __future__ import annotations

from typing import Any

import pytest

from hd_protocol import Identity, Policy, ProtocolError
from hd_protocol.reach.lan import (
    MAX_NAME_CHARS,
    MAX_TXT_KEYS,
    SERVICE_TYPE,
    LanAnnouncement,
    LanTable,
    announcement_txt,
    candidate_urls,
    decide_lan_dial,
    parse_announcement,
    parse_txt,
)

ME = "m" * 16
SERVICE = f"hd-x.{SERVICE_TYPE}"
OPEN_LAN = Policy(trust_mode="open-lan")


def props(ident: Identity, **over: Any) -> dict[bytes, bytes | None]:
    txt: dict[str, Any] = dict(announcement_txt(ident.node_id, ident.public_key))
    txt.update(over)
    return {k.encode(): (v.encode() if isinstance(v, str) else v)
            for k, v in txt.items() if v is not ...}


def parse(p: dict[bytes, bytes | None], addrs: list[str] | None = None,
          port: int | None = 4242, service: str = SERVICE) -> LanAnnouncement:
    return parse_announcement(service, p, ["192.168.1.7"] if addrs is None else addrs, port,
                              own_id=ME)


def code_of(fn: Any) -> str:
    with pytest.raises(ProtocolError) as exc:
        fn()
    return exc.value.code


# --- the TXT we announce ---------------------------------------------------------------


def test_without_a_name_the_txt_has_no_name_key(alice: Identity) -> None:
    assert "name" not in announcement_txt(alice.node_id, alice.public_key)
    assert "name" not in announcement_txt(alice.node_id, alice.public_key, "   ")


def test_a_name_of_at_most_200_utf8_bytes_is_announced_and_a_longer_one_is_not(
        alice: Identity) -> None:
    fits = "\U0001f600" * 50  # 50 characters, 200 bytes
    over = "\U0001f600" * 49 + "abcde"  # 54 characters, 201 bytes
    assert announcement_txt(alice.node_id, alice.public_key, fits)["name"] == fits
    assert "name" not in announcement_txt(alice.node_id, alice.public_key, over)


def test_a_name_with_a_lone_surrogate_is_not_announced(alice: Identity) -> None:
    # it could not even be encoded into the TXT record
    assert "name" not in announcement_txt(alice.node_id, alice.public_key, "a\ud800b")


# --- what an announcement's name may be -----------------------------------------------


def test_display_names_from_one_to_max_characters_are_kept(alice: Identity) -> None:
    assert parse(props(alice, name="x")).node_name == "x"
    longest = "y" * MAX_NAME_CHARS
    assert parse(props(alice, name=longest)).node_name == longest
    assert parse(props(alice, name="   ")).node_name is None  # blank after strip


# --- TXT keys, version, path and port ---------------------------------------------------


def test_exactly_max_txt_keys_is_still_fine(alice: Identity) -> None:
    p = props(alice, name="a")
    extra = MAX_TXT_KEYS - len(p)
    p.update({f"k{i}".encode(): b"x" for i in range(extra)})
    assert len(p) == MAX_TXT_KEYS
    assert parse(p).node_id == alice.node_id
    assert len(parse_txt(p)) == MAX_TXT_KEYS


def test_another_version_says_which_one_it_saw(alice: Identity) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse(props(alice, v="7"))
    assert exc.value.code == "version" and "'7'" in str(exc.value)


def test_an_announcement_without_a_path_is_malformed(alice: Identity) -> None:
    assert code_of(lambda: parse(props(alice, path=...))) == "malformed"


def test_the_port_bounds_are_one_and_65535(alice: Identity) -> None:
    assert parse(props(alice), port=1).urls == ("ws://192.168.1.7:1/peer-ws",)
    assert parse(props(alice), port=65535).urls == ("ws://192.168.1.7:65535/peer-ws",)
    assert code_of(lambda: parse(props(alice), port=65536)) == "malformed"


def test_unusable_addresses_are_skipped_not_the_end_of_the_list() -> None:
    assert candidate_urls(["junk", "10.0.0.1"], 9, "/p") == ("ws://10.0.0.1:9/p",)
    assert candidate_urls(["224.0.0.251", "10.0.0.1"], 9, "/p") == ("ws://10.0.0.1:9/p",)
    assert candidate_urls(["fe80::1", "10.0.0.1"], 9, "/p") == ("ws://10.0.0.1:9/p",)


# --- open-lan and IPv6 hosts ------------------------------------------------------------


def test_open_lan_dials_a_private_ipv6_address(alice: Identity) -> None:
    ann = parse(props(alice), addrs=["fd00::7"])
    d = decide_lan_dial(ann, policy=OPEN_LAN, record=None, connected=False,
                        user_disconnected=False)
    assert d.dial and d.urls == ("ws://[fd00::7]:4242/peer-ws",)
    public = parse(props(alice), addrs=["2001:db8::7", "fd00::8"])
    d = decide_lan_dial(public, policy=OPEN_LAN, record=None, connected=False,
                        user_disconnected=False)
    assert d.urls == ("ws://[fd00::8]:4242/peer-ws",)


# --- the table --------------------------------------------------------------------------


def ann_of(ident: Identity, service: str = SERVICE, addr: str = "192.168.1.7"
           ) -> LanAnnouncement:
    return parse(props(ident), addrs=[addr], service=service)


def test_announcements_are_listed_by_node_id_and_looked_up_by_service_and_node(
        alice: Identity, bob: Identity) -> None:
    t = LanTable()
    first, second = sorted([alice, bob], key=lambda i: i.node_id)
    t.seen(ann_of(second, "b." + SERVICE_TYPE), 0)
    t.seen(ann_of(first, "a." + SERVICE_TYPE), 0)
    t.seen(ann_of(first, "c." + SERVICE_TYPE), 0)
    assert [(a.node_id, a.service) for a in t.announcements()] == [
        (first.node_id, "a." + SERVICE_TYPE), (first.node_id, "c." + SERVICE_TYPE),
        (second.node_id, "b." + SERVICE_TYPE)]
    got = t.get("b." + SERVICE_TYPE)
    assert got is not None and got.node_id == second.node_id
    assert t.get("nope." + SERVICE_TYPE) is None
    assert [a.service for a in t.by_node(first.node_id)] == ["a." + SERVICE_TYPE,
                                                             "c." + SERVICE_TYPE]
    assert [a.service for a in t.by_node(second.node_id)] == ["b." + SERVICE_TYPE]
    assert t.by_node(ME) == []


def test_the_next_deadline_is_the_earliest_expiry_or_due_time(alice: Identity) -> None:
    t = LanTable(ttl_ms=1000, retry_min_ms=5000)
    t.seen(ann_of(alice), 0)
    assert t.next_deadline() == 0  # due at once
    t.due(0)
    t.dial_failed(SERVICE, 0)  # due at 5000, but it expires at 1000
    assert t.next_deadline() == 1000


def test_a_poke_never_postpones_a_decision_already_due(alice: Identity) -> None:
    t = LanTable(retry_min_ms=1000)
    t.seen(ann_of(alice), 0)  # due at 0, not taken yet
    t.poke(alice.node_id, 100)  # would be 1100
    assert len(t.due(0)) == 1
    t.dial_failed(SERVICE, 0)  # due at 1000
    t.poke(alice.node_id, 0, delay_ms=300)  # sooner: 300 wins
    assert t.due(299) == [] and len(t.due(300)) == 1


def test_a_changed_address_starts_the_backoff_afresh(alice: Identity) -> None:
    t = LanTable(retry_min_ms=1000, retry_max_ms=60_000)
    t.seen(ann_of(alice), 0)
    t.dial_failed(SERVICE, 0)
    t.dial_failed(SERVICE, 0)
    t.seen(ann_of(alice, addr="192.168.1.8"), 10)  # due at once, failures forgotten
    assert len(t.due(10)) == 1
    t.dial_failed(SERVICE, 10)
    assert t.next_deadline() == 1010


def test_the_backoff_stops_doubling_after_twenty_failures(alice: Identity) -> None:
    t = LanTable(ttl_ms=10**12, retry_min_ms=1, retry_max_ms=10**12)
    t.seen(ann_of(alice), 0)
    for _ in range(22):
        t.dial_failed(SERVICE, 0)
    assert t.next_deadline() == 2**20
