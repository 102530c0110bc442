"""The page as a person uses it, in a real Chromium against two real, paired nodes
(SPEC 6.1, 6.2, 9; the /ws contract of issue 12): peers by name with unread messages
and the last one, chat with paging and delivery state, a notice while the page is in
the background, panes shared from a peer's row with who is editing, renaming.

alice and bob are shared by the module; every test leaves them paired and named as it
found them, and uses its own conversation content or pane.
"""

from __future__ import annotations

import contextlib
import secrets

from playwright.sync_api import Browser, expect

from ..conftest import NodeProcess
from .helpers import (
    TIMEOUT_MS,
    open_page,
    peer_action,
    peer_row,
    screenshot,
    send_chat,
    tab_request,
    wait_online,
)

Pair = tuple[NodeProcess, NodeProcess]


def _read_all(node: NodeProcess, peer: NodeProcess) -> None:
    tab_request(node, "peerchat", "read", {"node_id": peer.node_id})


def test_a_message_from_before_the_page_opened_is_unread_on_its_row_until_a_tab_opens_it(
    pair_of_nodes: Pair, browser: Browser,
) -> None:
    alice, bob = pair_of_nodes
    _read_all(alice, bob)
    text = f"are you there? {secrets.token_hex(3)}"
    send_chat(bob, alice, "an older one", text)  # no page of alice's is open

    context = browser.new_context()
    try:
        first = open_page(context, alice)
        row = peer_row(first, bob)
        expect(row.locator(".badge.unread")).to_contain_text("2")
        expect(row.locator(".peer-last")).to_contain_text(text)
        expect(row.locator("[data-action='chat']")).to_have_attribute(
            "aria-label", "Chat with bob, 2 unread")
        conv = first.locator(f"#conversations li[data-node-id='{bob.node_id}']")
        expect(conv.locator(".badge")).to_contain_text("2")
        expect(conv).to_contain_text(text)
        expect(first).to_have_title("(2) hd fabric — alice")
        screenshot(first, "unread-on-load")

        # A second tab; the first opens the conversation: both badges go.
        second = open_page(context, alice)
        expect(peer_row(second, bob).locator(".badge.unread")).to_contain_text("2")
        peer_action(first, bob, "chat").click()
        expect(first.locator("#messages li.msg.in", has_text=text)).to_be_visible()
        expect(first.locator("#chat-input")).to_be_focused()
        for page in (first, second):
            expect(peer_row(page, bob).locator(".badge")).to_have_count(0)
            expect(page.locator(f"#conversations li[data-node-id='{bob.node_id}'] .badge")
                   ).to_have_count(0)
            expect(page).to_have_title("hd fabric — alice")
    finally:
        context.close()


def test_delivery_state_shows_per_message_and_a_background_page_badges_its_title_and_notifies(
    pair_of_nodes: Pair, browser: Browser,
) -> None:
    alice, bob = pair_of_nodes
    _read_all(alice, bob)
    context = browser.new_context()
    context.grant_permissions(["notifications"])
    # The page believes it is in the background, and Notification records what it shows.
    context.add_init_script("""
        Object.defineProperty(document, "hidden", {get: () => true});
        Object.defineProperty(document, "visibilityState", {get: () => "hidden"});
        window.__notes = [];
        window.Notification = class {
            constructor(title, opts) { window.__notes.push([title, opts.body]); }
            close() {}
            static get permission() { return "granted"; }
            static requestPermission() { return Promise.resolve("granted"); } };
    """)
    try:
        page = open_page(context, alice)
        peer_action(page, bob, "chat").click()
        page.fill("#chat-input", "first line")
        page.press("#chat-input", "Shift+Enter")
        page.keyboard.type("second line")
        page.click("#chat-send")
        mine = page.locator("#messages li.msg.out", has_text="second line")
        expect(mine.locator(".msg-text")).to_have_text("first line\nsecond line")
        expect(mine.locator(".tick")).to_have_attribute("aria-label", "delivered")
        expect(mine).to_have_attribute("data-status", "delivered")

        text = f"ping {secrets.token_hex(3)}"
        send_chat(bob, alice, text)
        # The conversation is open, but nobody is looking: it stays unread.
        expect(page.locator("#messages li.msg.in", has_text=text)).to_be_visible()
        expect(page).to_have_title("(1) hd fabric — alice")
        expect(page.locator("#nav-unread")).to_have_text("1")
        page.wait_for_function("() => window.__notes.length > 0", timeout=TIMEOUT_MS)
        assert page.evaluate("() => window.__notes") == [["bob", text]]
    finally:
        context.close()
        _read_all(alice, bob)


def test_history_loads_fifty_messages_then_pages_back_on_request(
    pair_of_nodes: Pair, browser: Browser,
) -> None:
    """Contract 4: `peerchat open {node_id, before, limit}` answers `history {messages,
    more}`."""
    alice, bob = pair_of_nodes
    tag = secrets.token_hex(2)
    send_chat(bob, alice, *[f"m{i:02d}-{tag}" for i in range(60)])
    page = open_page(browser, alice)
    try:
        peer_action(page, bob, "chat").click()
        msgs = page.locator("#messages li.msg")
        expect(page.locator("#messages li.msg", has_text=f"m59-{tag}")).to_be_visible()
        expect(msgs).to_have_count(50)
        expect(page.locator("#messages li.msg", has_text=f"m09-{tag}")).to_have_count(0)
        more = page.locator("#chat-more")
        expect(more).to_be_visible()
        more.click()
        expect(page.locator("#messages li.msg", has_text=f"m00-{tag}")).to_have_count(1)
        # Oldest first, and nothing shown twice.
        texts = [t for t in msgs.locator(".msg-text").all_text_contents() if t.endswith(tag)]
        assert texts == [f"m{i:02d}-{tag}" for i in range(60)]
    finally:
        page.close()
        _read_all(alice, bob)


def test_a_pane_shared_from_a_peers_row_reaches_the_peers_page_which_shows_who_is_editing(
    pair_of_nodes: Pair, browser: Browser,
) -> None:
    alice, bob = pair_of_nodes
    key = f"plans-{secrets.token_hex(2)}"
    pa, pb = open_page(browser, alice), open_page(browser, bob)
    try:
        pa.fill("#pane-new", key)
        pa.press("#pane-new", "Enter")
        expect(pa.locator("#pane-title")).to_have_text(key)
        expect(pa.locator("#pane")).to_be_focused()
        share = peer_action(pa, bob, "share")
        expect(share).to_have_attribute("aria-label", f"Share pane “{key}” with bob")
        share.click()
        expect(share).to_have_attribute("aria-pressed", "true")
        pa.locator("#pane").press_sequentially("first plan")

        # bob's page lists the pane (nobody typed an id) and opens it.
        item = pb.locator(f"#pane-list li[data-pane-key='{key}'] button")
        expect(item).to_contain_text("alice", timeout=TIMEOUT_MS)
        item.click()
        expect(pb.locator("#pane-title")).to_have_text(key)
        expect(pb.locator("#pane")).to_have_value("first plan")
        expect(pb.locator("#pane-sharers")).to_contain_text("alice")

        pa.locator("#pane").press("End")
        pa.locator("#pane").press_sequentially(", second plan")
        expect(pb.locator("#pane")).to_have_value("first plan, second plan")
        expect(pb.locator("#pane-editing")).to_have_text("alice is editing now")
        screenshot(pb, "pane-editing")

        pb.locator("#pane").press("End")
        pb.locator("#pane").press_sequentially(" (ok)")
        expect(pa.locator("#pane")).to_have_value("first plan, second plan (ok)")
        expect(pa.locator("#pane-editing")).to_have_text("bob is editing now")
        # The mark goes once nobody has written for a while.
        expect(pa.locator("#pane-editing")).to_have_text("", timeout=15_000)
    finally:
        pa.close()
        pb.close()


def test_renaming_the_node_shows_in_its_header_and_on_the_peers_page(
    pair_of_nodes: Pair, browser: Browser,
) -> None:
    """Contract 1: `network rename {node_name}` answers `self`, pushes `network self` to
    every tab and a presence to peers."""
    alice, bob = pair_of_nodes
    pa, pb = open_page(browser, alice), open_page(browser, bob)
    other_tab = open_page(browser, alice)
    try:
        pa.click("#rename-open")
        expect(pa.locator("#rename-input")).to_be_focused()
        expect(pa.locator("#rename-input")).to_have_value("alice")
        pa.fill("#rename-input", "   ")
        pa.press("#rename-input", "Enter")
        expect(pa.locator("#rename-error")).to_contain_text("needs a name")
        pa.fill("#rename-input", "Alice Liddell")
        pa.press("#rename-input", "Enter")
        expect(pa.locator("#rename-error")).to_be_hidden()
        expect(pa.locator("#self-name")).to_have_text("Alice Liddell")
        expect(pa.locator("#self-avatar")).to_have_text("AL")
        expect(pa.locator("#rename-open")).to_be_focused()
        expect(pa).to_have_title("hd fabric — Alice Liddell")
        expect(other_tab.locator("#self-name")).to_have_text("Alice Liddell")
        expect(peer_row(pb, alice).locator(".peer-name")).to_have_text("Alice Liddell")
    finally:
        for page in (pa, pb, other_tab):
            page.close()
        with contextlib.suppress(Exception):  # the node may not serve rename yet
            tab_request(alice, "network", "rename", {"node_name": "alice"})
    page = open_page(browser, alice)
    try:
        expect(page.locator("#self-name")).to_have_text("alice")
        wait_online(page, bob)
    finally:
        page.close()
