"""The LAN table's limits under a flood (SPEC 8.5): anyone on the LAN can make up as many
valid identities as it likes, so the table is bounded in total and per node id, and a
full table never shuts out a peer we trust (``keep``): ``evict_for`` gives its
announcement the place of one that is not kept."""

from __future__ import annotations

from hd_protocol import Identity, ProtocolError
from hd_protocol.reach.lan import (
    MAX_LAN_PEERS,
    MAX_SERVICES_PER_NODE,
    SERVICE_TYPE,
    LanAnnouncement,
    LanTable,
    announcement_txt,
    parse_announcement,
)

ME = "m" * 16


def ann(ident: Identity, service: str, addr: str = "192.168.1.7") -> LanAnnouncement:
    txt = announcement_txt(ident.node_id, ident.public_key, "x")
    return parse_announcement(f"{service}.{SERVICE_TYPE}",
                              {k.encode(): v.encode() for k, v in txt.items()},
                              [addr], 4242, own_id=ME)


def refused(t: LanTable, a: LanAnnouncement, now: int, keep: bool = False) -> str | None:
    try:
        t.seen(a, now, keep=keep)
    except ProtocolError as exc:
        return exc.code
    return None


def flooded(n: int) -> tuple[LanTable, list[LanAnnouncement]]:
    t = LanTable(max_entries=n)
    anns = [ann(Identity.generate(), f"flood-{i}") for i in range(n)]
    for i, a in enumerate(anns):
        t.seen(a, i)  # flood-0 confirmed first (longest ago), flood-{n-1} last
    return t, anns


def test_the_default_limits() -> None:
    assert LanTable().max_entries == MAX_LAN_PEERS == 256
    assert LanTable().max_per_node == MAX_SERVICES_PER_NODE == 4


def test_a_trusted_peer_takes_the_place_of_the_entry_confirmed_longest_ago(
        alice: Identity) -> None:
    t, anns = flooded(4)
    t.seen(anns[0], 10)  # flood-0 confirmed again: flood-1 is now the oldest
    mine = ann(alice, "hd-alice")
    assert refused(t, mine, 20, keep=True) == "full"  # seen itself never evicts
    victim = t.evict_for(mine)
    assert victim == anns[1]
    assert t.seen(mine, 20, keep=True) is True
    assert len(t) == 4 and t.get(mine.service) == mine and t.get(anns[1].service) is None
    assert alice.node_id in [a.node_id for a in t.due(20)]  # due at once
    # What was dropped comes back to a full table: refused, it takes no one's place.
    assert refused(t, anns[1], 30) == "full"


def test_equal_ages_evict_the_first_service_name(alice: Identity, bob: Identity) -> None:
    t = LanTable(max_entries=2)
    t.seen(ann(bob, "b"), 0)
    t.seen(ann(Identity.generate(), "a"), 0)
    victim = t.evict_for(ann(alice, "hd-alice"))
    assert victim is not None and victim.service == f"a.{SERVICE_TYPE}"


def test_kept_entries_are_never_evicted(alice: Identity, bob: Identity) -> None:
    t = LanTable(max_entries=2)
    t.seen(ann(alice, "hd-alice"), 0, keep=True)
    stranger = ann(Identity.generate(), "stranger")
    t.seen(stranger, 5)
    carol = ann(Identity.generate(), "hd-carol")
    assert t.evict_for(carol) == stranger  # the stranger goes, not alice
    t.seen(carol, 6, keep=True)
    assert t.evict_for(ann(bob, "hd-bob")) is None  # every entry is kept: full it is
    assert refused(t, ann(bob, "hd-bob"), 7, keep=True) == "full"
    assert {a.service for a in t.announcements()} == {f"hd-alice.{SERVICE_TYPE}",
                                                      f"hd-carol.{SERVICE_TYPE}"}


def test_keep_is_what_the_last_confirmation_said(alice: Identity) -> None:
    # A peer no longer trusted (unpaired, blocked) is evictable once it is seen again.
    t = LanTable(max_entries=1)
    mine = ann(alice, "hd-alice")
    t.seen(mine, 0, keep=True)
    assert t.evict_for(ann(Identity.generate(), "other")) is None
    assert t.seen(mine, 1, keep=False) is False  # the same announcement: no change
    assert t.evict_for(ann(Identity.generate(), "other")) == mine


def test_evict_for_does_nothing_when_it_would_not_help(alice: Identity) -> None:
    t, anns = flooded(3)
    assert t.evict_for(anns[0]) is None  # already in
    roomy = LanTable(max_entries=10)
    roomy.seen(anns[0], 0)
    assert roomy.evict_for(ann(alice, "hd-alice")) is None  # not full
    assert len(t) == 3 and len(roomy) == 1


def test_one_node_holds_at_most_max_per_node_entries(alice: Identity) -> None:
    t = LanTable(max_per_node=2)
    a1, a2, a3 = (ann(alice, f"hd-alice-{i}", f"192.168.1.{i}") for i in (1, 2, 3))
    t.seen(a1, 0, keep=True)
    t.seen(a2, 0, keep=True)
    assert refused(t, a3, 0, keep=True) == "full"
    assert refused(t, a3, 0) == "full"
    assert t.seen(a1, 5, keep=True) is False  # its entries still refresh
    assert len(t.by_node(alice.node_id)) == 2
    t.removed(a1.service)
    assert t.seen(a3, 6, keep=True) is True  # room again


def test_a_node_at_its_cap_evicts_no_one(alice: Identity) -> None:
    # Clones of a trusted peer's (public) id and key cannot push strangers out beyond
    # the per-node cap, nor fill the table with entries nothing can evict.
    t = LanTable(max_entries=3, max_per_node=2)
    stranger = ann(Identity.generate(), "stranger")
    t.seen(stranger, 0)
    t.seen(ann(alice, "clone-1"), 1, keep=True)
    t.seen(ann(alice, "clone-2"), 2, keep=True)
    third = ann(alice, "clone-3")
    assert refused(t, third, 3, keep=True) == "full"
    assert t.evict_for(third) is None
    assert t.get(stranger.service) == stranger


def test_a_full_table_of_strangers_refuses_strangers_and_admits_trusted_peers(
        alice: Identity, bob: Identity) -> None:
    t, anns = flooded(MAX_LAN_PEERS)
    assert refused(t, ann(Identity.generate(), "late"), 1000) == "full"
    for ident in (alice, bob):
        mine = ann(ident, f"hd-{ident.node_id}")
        assert refused(t, mine, 1000, keep=True) == "full"
        assert t.evict_for(mine) is not None
        t.seen(mine, 1000, keep=True)
    assert len(t) == MAX_LAN_PEERS
    assert t.get(anns[0].service) is None and t.get(anns[1].service) is None
    assert t.get(anns[2].service) == anns[2]



def test_a_peer_trusted_after_it_was_first_seen_is_kept_from_then_on() -> None:
    # Seen while unknown, then paired: the next confirmation says keep, and from then on
    # no trusted newcomer may take its place, though it is the entry confirmed longest ago.
    t = LanTable(max_entries=2)
    later_trusted, other = ann(Identity.generate(), "paired"), ann(Identity.generate(), "o")
    assert refused(t, later_trusted, 0) is None
    assert refused(t, later_trusted, 1, keep=True) is None  # re-confirmed, now trusted
    assert refused(t, other, 2) is None
    newcomer = ann(Identity.generate(), "newcomer")
    assert refused(t, newcomer, 3, keep=True) == "full"
    assert t.evict_for(newcomer) == other  # not the older, but kept, entry
    assert t.get(later_trusted.service) == later_trusted
    # A trust withdrawn at the next confirmation makes it evictable again.
    assert refused(t, later_trusted, 4) is None
    assert refused(t, newcomer, 5, keep=True) is None
    third = ann(Identity.generate(), "third")
    assert refused(t, third, 6, keep=True) == "full"
    assert t.evict_for(third) == later_trusted
