"""Pairing and trust from the page, in a real Chromium against real nodes (SPEC 4.2, 9;
the /ws contract of issue 12): an invite copied, shown as a QR code with its expiry,
listed and revoked; redeeming with errors a person can act on; blocking, unblocking
and forgetting a peer.
"""

from __future__ import annotations

import re

from playwright.sync_api import Browser, expect

from ..conftest import Cluster
from .helpers import (
    TIMEOUT_MS,
    open_page,
    pair,
    peer_action,
    peer_row,
    screenshot,
    tab_request,
    wait_online,
)

OFFLINE_TIMEOUT_MS = 15_000  # a peer's page notices the session ended (bye, or pings)


def test_an_invite_is_copied_drawn_as_a_qr_code_listed_revoked_and_then_refused(
    cluster: Cluster, browser: Browser,
) -> None:
    alice, carol = cluster.new("alice").start(), cluster.new("carol").start()
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    try:
        page = open_page(context, alice)
        expect(page.locator("#invites")).to_contain_text("no invites yet")
        page.select_option("#invite-ttl", "3600")
        page.click("#invite-create")
        invite = page.locator("#invite-out")
        expect(invite).to_have_value(re.compile(r"^hd1:"))
        text = invite.input_value()
        expect(page.locator("#invite-expiry")).to_contain_text(
            re.compile(r"expires in (59 min|1 h)"))

        # The QR code is drawn by the page, big enough to scan.
        qr = page.locator("#invite-qr")
        expect(qr).to_be_visible()
        assert int(qr.get_attribute("data-modules") or 0) >= 21
        dark = page.evaluate("""() => { const c = document.getElementById("invite-qr");
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++;
            return n / (d.length / 4); }""")
        assert 0.2 < dark < 0.6, dark

        page.click("#invite-copy")
        expect(page.locator("#invite-copy")).to_have_text("Copied")
        assert page.evaluate("() => navigator.clipboard.readText()") == text

        # Listed, active, with its token id; revoked from the list.
        token_id = page.locator("#invite-box").get_attribute("data-token-id")
        assert token_id
        item = page.locator(f"#invites li[data-token-id='{token_id}']")
        expect(item).to_have_attribute("data-state", "active")
        expect(item).to_contain_text("expires in")
        screenshot(page, "invite")
        item.locator("[data-action='revoke']").click()
        expect(item).to_have_attribute("data-state", "revoked")
        expect(item.locator("[data-action='revoke']")).to_have_count(0)
        expect(page.locator("#invite-expiry")).to_contain_text("revoked")

        # carol's page: nonsense, then the revoked invite, are refused in plain words.
        cp = open_page(context, carol)
        result = cp.locator("#pair-result")
        cp.click("#invite-redeem")
        expect(result).to_have_text("Paste the invite first.")
        expect(result).to_have_attribute("role", "alert")
        cp.fill("#invite-in", "hello")
        cp.click("#invite-redeem")
        expect(result).to_contain_text("not a whole invite")
        cp.fill("#invite-in", text[:-12])
        cp.click("#invite-redeem")
        expect(result).to_contain_text("(bad_invite)")
        cp.fill("#invite-in", text)
        cp.click("#invite-redeem")
        expect(result).to_contain_text("token was not accepted", timeout=20_000)
        expect(result).to_contain_text("(pairing_required)")
        expect(peer_row(cp, alice)).to_have_count(0)

        # A fresh invite pairs, and both pages show the other online.
        page.click("#invite-create")
        expect(invite).not_to_have_value(text)
        cp.fill("#invite-in", invite.input_value())
        cp.click("#invite-redeem")
        expect(result).to_have_text("Paired with alice.", timeout=20_000)
        expect(result).to_have_attribute("role", "status")
        wait_online(cp, alice)
        wait_online(page, carol)
        redeemed = page.locator("#invites li[data-state='redeemed']")
        page.reload()  # the list is read again from the node
        expect(page.locator("#conn")).to_have_text("connected")
        expect(redeemed).to_have_count(1)
        expect(redeemed).to_contain_text("used by")
    finally:
        context.close()


def test_block_then_unblock_a_peer_from_its_row(
    cluster: Cluster, browser: Browser,
) -> None:
    alice, bob = cluster.new("alice").start(), cluster.new("bob").start()
    pair(cluster, alice, bob)
    pa, pb = open_page(browser, alice), open_page(browser, bob)
    try:
        row = peer_row(pa, bob)
        wait_online(pa, bob)
        peer_action(pa, bob, "block").click()
        expect(row).to_have_attribute("data-status", "blocked")
        expect(row.locator(".peer-status")).to_have_text("blocked")
        expect(peer_row(pb, alice)).not_to_have_attribute("data-status", "connected",
                                                         timeout=OFFLINE_TIMEOUT_MS)
        # A blocked peer is not offered for sharing.
        expect(pa.locator(f"#pane-share-with li[data-node-id='{bob.node_id}']")).to_have_count(0)

        peer_action(pa, bob, "unblock").click()
        expect(row).not_to_have_attribute("data-status", "blocked")
        expect(row.locator(".tag")).to_have_text("not trusted")
        peer_action(pa, bob, "trust").click()
        expect(row.locator(".tag")).to_have_count(0)
        expect(pa.locator("#people-error")).to_be_hidden()
    finally:
        pa.close()
        pb.close()


def test_forget_a_peer_asks_first_then_every_tab_drops_it_and_the_chat_stays(
    cluster: Cluster, browser: Browser,
) -> None:
    """Contract 2: `network forget {node_id}` answers `peer_removed`, pushed to every tab."""
    alice, bob = cluster.new("alice").start(), cluster.new("bob").start()
    pair(cluster, alice, bob)
    tab_request(bob, "peerchat", "send", {"node_id": alice.node_id, "text": "keep me"})
    pa, other = open_page(browser, alice), open_page(browser, alice)
    try:
        wait_online(pa, bob)
        peer_action(pa, bob, "forget").click()
        confirm = peer_row(pa, bob).locator("[data-action='forget-confirm']")
        expect(confirm).to_be_focused()
        expect(peer_row(pa, bob).locator(".confirm")).to_contain_text("the chat history stays")
        peer_row(pa, bob).locator("[data-action='forget-cancel']").click()
        expect(peer_row(pa, bob)).to_have_count(1)
        expect(peer_row(pa, bob).locator("[data-action='forget']")).to_be_focused()

        peer_row(pa, bob).locator("[data-action='forget']").click()
        peer_row(pa, bob).locator("[data-action='forget-confirm']").click()
        for page in (pa, other):
            expect(peer_row(page, bob)).to_have_count(0, timeout=TIMEOUT_MS)
        expect(pa.locator("#people-error")).to_be_hidden()
        conv = pa.locator(f"#conversations li[data-node-id='{bob.node_id}']")
        expect(conv).to_contain_text("keep me")
        conv.locator("button").click()
        expect(pa.locator("#messages")).to_contain_text("keep me")
    finally:
        pa.close()
        other.close()
