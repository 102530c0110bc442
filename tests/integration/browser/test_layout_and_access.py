"""The page for everyone, in a real Chromium against two real, paired nodes: no
sideways scrolling at 360 px or 1280 px wide, light and dark; every control reachable
with the keyboard; axe-core (from the npm registry) finds nothing serious or critical.
Screenshots of every state checked go to the test's tmp dir.

The page is filled first as a person would have it: a peer online with a conversation
open, an invite on show, a shared pane, the monitor's figures.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from ..conftest import NodeProcess
from .helpers import (
    axe_serious,
    horizontal_overflow,
    keyboard_sweep,
    open_page,
    peer_action,
    peer_row,
    screenshot,
    send_chat,
    wider_than_viewport,
)

Pair = tuple[NodeProcess, NodeProcess]
WIDTHS = (360, 1280)
SCHEMES = ("light", "dark")
METRICS_TIMEOUT_MS = 15_000  # the monitor pushes every 5 s


@pytest.fixture(scope="module")
def filled(pair_of_nodes: Pair, browser: Browser) -> Iterator[Page]:
    alice, bob = pair_of_nodes
    send_chat(bob, alice, "hello alice, a message long enough to wrap on a narrow screen "
              "with a_very_long_word_that_does_not_break_by_itself_at_all_anywhere")
    page = open_page(browser, alice)
    peer_action(page, bob, "chat").click()
    page.fill("#chat-input", "hi bob")
    page.press("#chat-input", "Enter")
    expect(page.locator("#messages li.msg.out .tick")).to_have_attribute("aria-label", "delivered")
    peer_action(page, bob, "share").click()
    page.fill("#pane", "notes for bob")
    page.click("#invite-create")
    expect(page.locator("#invite-out")).not_to_have_value("")
    expect(page.locator(f"#monitor-list li[data-node-id='{bob.node_id}']")).to_be_visible(
        timeout=METRICS_TIMEOUT_MS)
    yield page
    page.close()


@pytest.mark.parametrize(("width", "scheme"), list(itertools.product(WIDTHS, SCHEMES)))
def test_no_sideways_scrolling_and_no_serious_axe_violation(
    filled: Page, pair_of_nodes: Pair, width: int, scheme: str,
) -> None:
    page = filled
    _, bob = pair_of_nodes
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    page.set_viewport_size({"width": width, "height": 800})
    page.evaluate("() => window.scrollTo(0, 0)")
    assert horizontal_overflow(page) == 0, wider_than_viewport(page)
    # Every avatar colour, not only those of today's random node ids.
    page.evaluate("""() => { const probe = document.createElement("p"); probe.id = "hue-probe";
        for (let i = 0; i < 12; i++) { const a = document.createElement("span");
            a.className = "avatar"; a.dataset.hue = String(i); a.textContent = "AB";
            probe.append(a); }
        document.getElementById("people").append(probe); }""")
    try:
        assert axe_serious(page) == []
    finally:
        page.evaluate("() => document.getElementById('hue-probe').remove()")
    screenshot(page, f"page-{width}-{scheme}")

    # The peer's details, with the monitor's charts.
    peer_action(page, bob, "details").click()
    dialog = page.locator("#peer-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#pd-rtt svg[role='img']")).to_have_attribute(
        "aria-label", re.compile(r"^Round-trip time to bob: now \d"))
    assert horizontal_overflow(page) == 0, wider_than_viewport(page)
    assert axe_serious(page) == []
    screenshot(page, f"details-{width}-{scheme}")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


@pytest.mark.parametrize("width", WIDTHS)
def test_every_control_is_reachable_with_the_keyboard(
    filled: Page, pair_of_nodes: Pair, width: int,
) -> None:
    page = filled
    _, bob = pair_of_nodes
    page.set_viewport_size({"width": width, "height": 800})
    usable, missed = keyboard_sweep(page)
    assert len(usable) > 30, usable
    assert missed == []

    # The peer's menu and details work from the keyboard too; focus comes back.
    details = peer_row(page, bob).locator("[data-action='details']")
    details.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#peer-dialog")).to_be_visible()
    expect(page.locator("#pd-close")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#peer-dialog")).to_be_hidden()
    expect(details).to_be_focused()
    more = peer_row(page, bob).locator("details.menu > summary")
    more.focus()
    page.keyboard.press("Enter")
    expect(peer_row(page, bob).locator("[data-action='copy-id']")).to_be_visible()
    page.keyboard.press("Tab")
    try:
        expect(peer_row(page, bob).locator("[data-action='copy-id']")).to_be_focused()
    except AssertionError as exc:  # say where the focus went instead
        focused = page.evaluate("() => { const e = document.activeElement; return e ? "
                                "e.outerHTML.slice(0, 300) : 'nothing' }")
        raise AssertionError(f"Tab from the open menu's summary went to {focused}") from exc
    more.focus()
    page.keyboard.press("Enter")
    expect(peer_row(page, bob).locator("[data-action='copy-id']")).to_be_hidden()
