"""Nodes seen on the LAN (SPEC 8.5, mDNS on 127.0.0.1) are listed on the page, in real
Chromium against real nodes: an unpaired one under "On this network" with how to reach
it (manual mode never dials it); once paired, it moves up to People and leaves that
list; a node without LAN discovery shows no such list at all.
"""

from __future__ import annotations

import pytest
import trio
from playwright.sync_api import Browser, expect

from ..conftest import Cluster
from .helpers import open_page, pair, peer_row, screenshot, wait_online

# mDNS is one multicast group per host: these run alone, after the parallel run
# (Makefile), so no other test's nodes announce beside them.
pytestmark = pytest.mark.lan

LAN = "[network]\nenableLanDiscovery = true\n"
SEEN_MS = 15_000  # zeroconf's first announcements and a browse on a loaded machine


def test_an_unpaired_node_on_the_lan_is_listed_then_moves_to_people_once_paired(
    cluster: Cluster, browser: Browser,
) -> None:
    alice, bob = cluster.new("alice", config=LAN), cluster.new("bob", config=LAN)
    carol = cluster.new("carol")  # no LAN discovery
    trio.run(cluster.start, alice, bob, carol)
    page = open_page(browser, alice)
    other = open_page(browser, carol)
    try:
        row = page.locator(f"#lan-list li.lan-peer[data-node-id='{bob.node_id}']")
        expect(row).to_be_visible(timeout=SEEN_MS)
        expect(row).to_contain_text("bob")
        expect(row).to_contain_text(bob.node_id[:8])
        expect(row).to_contain_text("not paired: send an invite to talk")
        expect(page.locator("#lan-h")).to_have_text("On this network")
        expect(peer_row(page, bob)).to_have_count(0)  # listed, not dialled
        screenshot(page, "lan-list")
        expect(other.locator("#lan")).to_be_hidden()

        pair(cluster, alice, bob)
        wait_online(page, bob)
        expect(row).to_have_count(0)
        expect(page.locator("#lan")).to_be_hidden()
    finally:
        page.close()
        other.close()
