"""LAN discovery decisions (SPEC 8.5): TXT validation, the table of what was seen, and
whether to dial. No sockets, no zeroconf: what zeroconf resolves comes in as data."""

from __future__ import annotations

from typing import Any

import pytest

from hd_protocol import Identity, PeerRecord, Policy, ProtocolError
from hd_protocol.reach.lan import (
    MAX_URLS,
    SERVICE_TYPE,
    LanAnnouncement,
    LanTable,
    announced_from,
    announcement_txt,
    candidate_urls,
    decide_lan_dial,
    parse_announcement,
    parse_txt,
    service_name,
)

MANUAL = Policy()
OPEN_LAN = Policy(trust_mode="open-lan")
ME = "m" * 16  # our own node id (valid base32 alphabet)
SERVICE = f"hd-x.{SERVICE_TYPE}"


def props(ident: Identity, **over: Any) -> dict[bytes, bytes | None]:
    txt: dict[str, Any] = dict(announcement_txt(ident.node_id, ident.public_key, "alice"))
    txt.update(over)
    return {k.encode(): (v.encode() if isinstance(v, str) else v)
            for k, v in txt.items() if v is not ...}


def parse(p: dict[bytes, bytes | None], addrs: list[str] | None = None,
          port: int | None = 4242, own_id: str = ME) -> LanAnnouncement:
    return parse_announcement(SERVICE, p, ["192.168.1.7"] if addrs is None else addrs, port,
                              own_id=own_id)


def reason(fn: Any) -> str:
    with pytest.raises(ProtocolError) as exc:
        fn()
    return exc.value.code


# --- TXT validation -----------------------------------------------------------------


def test_our_announcement_txt_is_what_spec_8_5_lists(alice: Identity) -> None:
    txt = announcement_txt(alice.node_id, alice.public_key, "alice")
    assert txt == {"v": "1", "id": alice.node_id, "pk": alice.public_key,
                   "path": "/peer-ws", "name": "alice"}
    assert service_name(alice.node_id) == f"hd-{alice.node_id}._hd-peer._tcp.local."


def test_a_valid_announcement_parses_to_id_key_and_urls(alice: Identity) -> None:
    ann = parse(props(alice))
    assert ann == LanAnnouncement(SERVICE, alice.node_id, alice.public_key,
                                  ("ws://192.168.1.7:4242/peer-ws",), "alice")


def test_txt_keys_are_case_insensitive(alice: Identity) -> None:
    p = {k.upper(): v for k, v in props(alice).items()}
    assert parse(p).node_id == alice.node_id


@pytest.mark.parametrize("case, over, expected", [
    ("no version", {"v": ...}, "malformed"),
    ("another version", {"v": "2"}, "version"),
    ("no id", {"id": ...}, "malformed"),
    ("id not a node id", {"id": "NOT-AN-ID"}, "malformed"),
    ("no key", {"pk": ...}, "malformed"),
    ("key not base64", {"pk": "%%%"}, "malformed"),
    ("key of the wrong size", {"pk": "AAAA"}, "malformed"),
    ("key without value", {"pk": None}, "malformed"),
    ("path relative", {"path": "peer-ws"}, "malformed"),
    ("path with a query", {"path": "/peer-ws?x=1"}, "malformed"),
    ("value not utf-8", {"name": b"\xff\xfe"}, "malformed"),
])
def test_a_malformed_txt_is_ignored_with_its_reason(alice: Identity, case: str,
                                                    over: dict[str, Any],
                                                    expected: str) -> None:
    assert reason(lambda: parse(props(alice, **over))) == expected, case


def test_too_many_txt_keys_is_malformed(alice: Identity) -> None:
    p = props(alice, **{f"k{i}": "x" for i in range(20)})
    assert reason(lambda: parse(p)) == "malformed"


def test_a_repeated_key_differing_only_in_case_is_malformed() -> None:
    assert reason(lambda: parse_txt({b"id": b"a", b"ID": b"b"})) == "malformed"


def test_an_id_that_is_not_the_node_id_of_the_key_is_ignored_as_spoofed(
        alice: Identity, carol: Identity) -> None:
    # carol's key under alice's id: a node id is only ever trusted with its own key.
    spoof = props(carol, id=alice.node_id)
    assert reason(lambda: parse(spoof)) == "id_mismatch"


def test_our_own_announcement_is_ignored(alice: Identity) -> None:
    assert reason(lambda: parse(props(alice), own_id=alice.node_id)) == "own"


def test_an_announcement_without_a_usable_port_or_address_is_ignored(alice: Identity) -> None:
    assert reason(lambda: parse(props(alice), port=0)) == "malformed"
    assert reason(lambda: parse(props(alice), port=None)) == "malformed"
    assert reason(lambda: parse(props(alice), addrs=[])) == "no_address"
    assert reason(lambda: parse(props(alice), addrs=["224.0.0.251", "0.0.0.0",
                                                     "fe80::1%eth0", "junk"])) == "no_address"


def test_a_bad_display_name_is_dropped_not_fatal(alice: Identity) -> None:
    assert parse(props(alice, name="x" * 65)).node_name is None
    assert parse(props(alice, name="bell\x07")).node_name is None
    assert parse(props(alice, name=...)).node_name is None
    assert parse(props(alice, name="  bob  ")).node_name == "bob"


def test_urls_prefer_private_ipv4_then_ipv6_and_are_bounded() -> None:
    urls = candidate_urls(["127.0.0.1", "fd00::2", "10.0.0.2", "10.0.0.2", "10.0.0.3",
                           "10.0.0.4", "10.0.0.5"], 9, "/peer-ws")
    assert urls[0] == "ws://10.0.0.2:9/peer-ws"
    assert len(urls) == MAX_URLS and len(set(urls)) == MAX_URLS
    assert candidate_urls(["fd00::2", "127.0.0.1"], 9, "/p") == (
        "ws://127.0.0.1:9/p", "ws://[fd00::2]:9/p")


def test_an_inbound_link_is_from_the_lan_when_its_address_was_announced(
        alice: Identity) -> None:
    ann = parse(props(alice), addrs=["192.168.1.7", "fd00::7"])
    assert announced_from(ann, "192.168.1.7")
    assert announced_from(ann, "fd00::7")
    assert not announced_from(ann, "192.168.1.70")
    assert not announced_from(ann, None)


# --- whether to dial ---------------------------------------------------------------------


def decide(ann: LanAnnouncement, policy: Policy = MANUAL, record: PeerRecord | None = None,
           *, connected: bool = False, user_disconnected: bool = False) -> tuple[bool, str]:
    d = decide_lan_dial(ann, policy=policy, record=record, connected=connected,
                        user_disconnected=user_disconnected)
    if d.dial:  # every dial pins the announced id's key
        assert d.expected_key == ann.public_key and d.urls
    return d.dial, d.reason


def test_a_known_trusted_peer_seen_on_the_lan_is_reconnected(alice: Identity) -> None:
    ann = parse(props(alice))
    trusted = PeerRecord(alice.node_id, alice.public_key, trusted=True)
    assert decide(ann, MANUAL, trusted) == (True, "reconnect")
    assert decide(ann, OPEN_LAN, trusted) == (True, "reconnect")


def test_an_unknown_peer_in_manual_mode_is_listed_only(alice: Identity) -> None:
    assert decide(parse(props(alice)), MANUAL) == (False, "pairing_required")
    directory = Policy(trust_mode="directory", directory_key="k")
    assert decide(parse(props(alice)), directory) == (False, "pairing_required")


def test_a_known_but_untrusted_peer_in_manual_mode_is_listed_only(alice: Identity) -> None:
    known = PeerRecord(alice.node_id, alice.public_key)
    assert decide(parse(props(alice)), MANUAL, known) == (False, "pairing_required")


def test_an_unknown_peer_in_open_lan_mode_is_dialled(alice: Identity) -> None:
    assert decide(parse(props(alice)), OPEN_LAN) == (True, "open_lan")


def test_open_lan_dials_private_addresses_only(alice: Identity) -> None:
    ann = parse(props(alice), addrs=["203.0.113.9", "192.168.1.7"])
    d = decide_lan_dial(ann, policy=OPEN_LAN, record=None, connected=False,
                        user_disconnected=False)
    assert d.dial and d.urls == ("ws://192.168.1.7:4242/peer-ws",)
    public = parse(props(alice), addrs=["203.0.113.9"])
    assert decide(public, OPEN_LAN) == (False, "not_private")


def test_a_blocked_disconnected_or_connected_peer_is_not_dialled(alice: Identity) -> None:
    ann = parse(props(alice))
    blocked = PeerRecord(alice.node_id, alice.public_key, trusted=True, blocked=True)
    trusted = PeerRecord(alice.node_id, alice.public_key, trusted=True)
    assert decide(ann, OPEN_LAN, blocked) == (False, "blocked")
    assert decide(ann, OPEN_LAN, trusted, user_disconnected=True) == (
        False, "user_disconnected")
    assert decide(ann, OPEN_LAN, trusted, connected=True) == (False, "connected")


def test_a_pinned_key_that_differs_from_the_announced_one_is_never_dialled(
        alice: Identity, carol: Identity) -> None:
    ann = parse(props(alice))
    pinned_other = PeerRecord(alice.node_id, carol.public_key, trusted=True)
    assert decide(ann, OPEN_LAN, pinned_other) == (False, "key_mismatch")


def test_a_spoofed_announcement_never_reaches_a_dial_decision(
        alice: Identity, carol: Identity) -> None:
    # alice's id with carol's key, even with alice stored as trusted and open-lan on:
    # the parse refuses it, so there is nothing to decide about.
    assert reason(lambda: parse(props(carol, id=alice.node_id))) == "id_mismatch"


# --- the table -------------------------------------------------------------------------


def ann_of(ident: Identity, service: str = SERVICE, addr: str = "192.168.1.7",
           name: str = "alice") -> LanAnnouncement:
    return parse_announcement(service, props(ident, name=name), [addr], 4242, own_id=ME)


def test_a_new_announcement_is_a_change_and_due_at_once(alice: Identity) -> None:
    t = LanTable()
    assert t.seen(ann_of(alice), 1000) is True
    assert t.seen(ann_of(alice), 1500) is False  # the same again: only refreshed
    assert [a.node_id for a in t.due(1500)] == [alice.node_id]
    assert t.due(1500) == []  # taken off the schedule until something happens


def test_a_changed_address_is_due_again_a_changed_name_is_not(alice: Identity) -> None:
    t = LanTable()
    t.seen(ann_of(alice), 0)
    t.due(0)
    assert t.seen(ann_of(alice, name="alice2"), 10) is True
    assert t.due(10) == []
    assert t.seen(ann_of(alice, addr="192.168.1.8"), 20) is True
    assert len(t.due(20)) == 1


def test_entries_expire_after_the_ttl_unless_confirmed(alice: Identity, bob: Identity) -> None:
    t = LanTable(ttl_ms=1000)
    t.seen(ann_of(alice, "a." + SERVICE_TYPE), 0)
    t.seen(ann_of(bob, "b." + SERVICE_TYPE), 0)
    t.seen(ann_of(alice, "a." + SERVICE_TYPE), 800)  # confirmed
    assert [a.node_id for a in t.expire(1000)] == [bob.node_id]
    assert [a.node_id for a in t.announcements()] == [alice.node_id]
    assert t.expire(1799) == [] and len(t.expire(1800)) == 1


def test_a_removed_service_is_gone(alice: Identity) -> None:
    t = LanTable()
    t.seen(ann_of(alice), 0)
    assert t.removed(SERVICE) is True
    assert t.removed(SERVICE) is False
    assert t.announcements() == [] and t.next_deadline() is None


def test_the_table_is_bounded(alice: Identity, bob: Identity) -> None:
    t = LanTable(max_entries=1)
    t.seen(ann_of(alice, "a." + SERVICE_TYPE), 0)
    assert reason(lambda: t.seen(ann_of(bob, "b." + SERVICE_TYPE), 0)) == "full"
    t.seen(ann_of(alice, "a." + SERVICE_TYPE), 5)  # an existing entry still refreshes
    assert len(t) == 1


def test_failed_dials_back_off_doubling_to_the_cap(alice: Identity) -> None:
    t = LanTable(retry_min_ms=1000, retry_max_ms=4000)
    t.seen(ann_of(alice), 0)
    delays = []
    now = 0
    for _ in range(5):
        assert len(t.due(now)) == 1
        t.dial_failed(SERVICE, now)
        nxt = t.next_deadline()
        assert nxt is not None
        delays.append(nxt - now)
        assert t.due(nxt - 1) == []
        now = nxt
    assert delays == [1000, 2000, 4000, 4000, 4000]
    t.dial_succeeded(SERVICE)
    t.dial_failed(SERVICE, now)
    assert t.next_deadline() == now + 1000


def test_a_busy_node_waits_and_a_poke_makes_it_due(alice: Identity) -> None:
    t = LanTable(retry_min_ms=500)
    t.seen(ann_of(alice), 0)
    assert t.due(0, busy={alice.node_id}) == []
    assert len(t.due(0)) == 1
    t.poke(alice.node_id, 100)  # its session ended
    assert t.due(599) == [] and len(t.due(600)) == 1
    t.poke(alice.node_id, 1000, delay_ms=0)
    assert len(t.due(1000)) == 1
