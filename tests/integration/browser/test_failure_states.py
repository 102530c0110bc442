"""What the page says when it cannot work, in a real Chromium against real nodes (SPEC
9): no token or a wrong one → how to get the page's link (`hd-node ui`) within 2 s; the
node stopped → everything greyed out and disabled, "node offline, retrying", no peer
shown online, within 5 s; the node back → the page reads its state again by itself.
"""

from __future__ import annotations

import time

from playwright.sync_api import Browser, Page, expect

from ..conftest import Cluster, free_port
from .helpers import (
    TIMEOUT_MS,
    open_page,
    pair,
    peer_row,
    screenshot,
    send_chat,
    wait_online,
)

HINT_MS = 2_000
OFFLINE_MS = 5_000
BACK_MS = 20_000  # a restarted node: a cold interpreter, then the page's next try
INPUTS = ("#invite-in", "#invite-create", "#pane", "#pane-new", "#agent-prompt", "#lobby-url",
          "#rename-open", "#chat-input", "#chat-send", "#room-name")


def _hint_shown(page: Page, why: str) -> None:
    auth = page.locator("#auth")
    expect(auth).to_be_visible(timeout=HINT_MS)
    expect(auth).to_contain_text("hd-node ui --data-dir DIR")
    expect(page.locator("#auth-why")).to_contain_text(why)
    expect(page.locator("#app")).to_be_hidden()


def test_without_a_token_or_with_a_wrong_one_the_page_says_how_to_get_its_link(
    cluster: Cluster, browser: Browser,
) -> None:
    alice = cluster.new("alice").start()
    page = browser.new_page()
    try:
        started = time.monotonic()
        page.goto(alice.ui_url + "/")
        _hint_shown(page, "no access token")
        screenshot(page, "no-token")
        page.goto(alice.ui_url + "/?token=" + "0" * 43)
        _hint_shown(page, "refused the page's access token")
        assert time.monotonic() - started < 2 * HINT_MS + 2
        assert "token=" not in page.url  # taken out of the address bar
        screenshot(page, "wrong-token")
        # The right link works in the same tab afterwards.
        page.goto(f"{alice.ui_url}/?token={alice.token}")
        expect(page.locator("#conn")).to_have_text("connected")
        expect(page.locator("#auth")).to_be_hidden()
    finally:
        page.close()


def test_a_stopped_node_greys_the_page_out_and_a_restarted_one_is_read_again(
    cluster: Cluster, browser: Browser,
) -> None:
    alice = cluster.new("alice", ui_port=free_port()).start()  # same page URL after a restart
    bob = cluster.new("bob").start()
    pair(cluster, alice, bob)
    page = open_page(browser, alice)
    try:
        wait_online(page, bob)
        peer_row(page, bob).locator("[data-action='chat']").click()
        expect(page.locator("#chat-input")).to_be_enabled()

        alice.stop()
        banner = page.locator("#offline")
        expect(banner).to_be_visible(timeout=OFFLINE_MS)
        expect(banner).to_contain_text("Node offline, retrying")
        expect(page.locator("#conn")).to_have_text("node offline, retrying…")
        expect(page.locator("#peer-list li.peer[data-status='connected']")).to_have_count(0)
        expect(peer_row(page, bob).locator(".peer-status")).to_contain_text("unknown")
        for sel in INPUTS:
            expect(page.locator(sel)).to_be_disabled()
        expect(page.locator("#retry-now")).to_be_enabled()
        screenshot(page, "offline")

        # While it was away bob wrote; back, the page shows it without a reload.
        send_chat(bob, alice, "while you were away")
        alice.start()
        expect(page.locator("#conn")).to_have_text("connected", timeout=BACK_MS)
        expect(banner).to_be_hidden()
        for sel in INPUTS:
            expect(page.locator(sel)).to_be_enabled()
        wait_online(page, bob, timeout=BACK_MS)
        expect(page.locator("#messages")).to_contain_text("while you were away",
                                                          timeout=TIMEOUT_MS)
    finally:
        page.close()
