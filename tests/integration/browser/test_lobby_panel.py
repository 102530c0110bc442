"""The page's Lobby panel in a real Chromium against a real ``hd-lobby`` and real nodes
(SPEC 7, 9).

Plain (non-trio) tests like test_page: playwright's sync API runs its own event loop,
and Chromium is Debian's, launched with test_page's flags so it never leaves the machine.
Alice's node has direct connections off, so bob's join has to go through the relay.
"""

from __future__ import annotations

import re
import socket

from playwright.sync_api import Page, expect, sync_playwright

from ..conftest import Cluster
from ..servers import Servers, servers  # noqa: F401 - the fixture
from .helpers import TIMEOUT_MS, launch, peer_row
from .test_page import _open

NO_DIRECT = "[network]\nenableDirect = false\n"
JOIN_TIMEOUT_MS = 20_000  # the join ladder tries direct first, the relay from 1.5 s


def _connect(page: Page, url: str) -> None:
    page.fill("#lobby-url", url)
    page.click("#lobby-connect")


def _connected(page: Page, url: str) -> None:
    status = page.locator("#lobby-status")
    expect(status).to_have_attribute("data-state", "connected", timeout=TIMEOUT_MS)
    expect(status).to_have_text(f"connected to {url}")


def test_two_pages_meet_in_the_lobby_and_one_joins_the_others_room_through_the_relay(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    lobby = servers.lobby().start()
    alice = cluster.new("alice", config=NO_DIRECT).start()
    bob = cluster.new("bob").start()  # trust mode manual: never paired with alice
    with sync_playwright() as p:
        browser = launch(p)
        try:
            pa, pb = _open(browser, alice), _open(browser, bob)
            expect(pa.locator("#lobby-status")).to_have_text("disconnected")

            # Alice connects and creates an open public room; the token field only
            # shows for token rooms.
            _connect(pa, lobby.url)
            _connected(pa, lobby.url)
            pa.fill("#room-name", "study group")
            pa.select_option("#room-visibility", "public")
            pa.select_option("#room-policy", "token")
            expect(pa.locator("#room-token")).to_be_visible()
            pa.select_option("#room-policy", "open")
            expect(pa.locator("#room-token")).to_be_hidden()
            pa.click("#room-create")
            mine = pa.locator("#lobby-mine li[data-role='host']")
            expect(mine).to_contain_text("study group")
            expect(mine).to_contain_text("you host")

            # Bob connects, finds the room in the list and joins it.
            _connect(pb, lobby.url)
            _connected(pb, lobby.url)
            room = pb.locator("#lobby-rooms li", has_text="study group")
            expect(room).to_contain_text("by alice")
            expect(room).to_contain_text("0 members")
            expect(room).to_contain_text("open")
            expect(room.get_by_role("img", name="locked")).to_have_count(0)
            room.get_by_role("button", name="Join study group").click()

            # Bob's page tells the join took the relay; alice's that bob came in.
            activity_b = pb.locator("#lobby-activity")
            expect(activity_b).to_contain_text("joined alice via relay", timeout=JOIN_TIMEOUT_MS)
            expect(pb.locator("#lobby-mine li[data-role='guest']")).to_contain_text("via relay")
            expect(pa.locator("#lobby-activity")).to_contain_text(
                "bob joined your room “study group”")
            # The guest session shows in bob's Peers panel too.
            expect(peer_row(pb, alice)).to_have_attribute("data-status", "connected")
            expect(peer_row(pb, alice).locator(".tag")).to_have_text("guest")

            # Both pages list the other in the directory, by name with a short id.
            in_a = pa.locator(f"#lobby-directory li[data-node-id='{bob.node_id}']")
            in_b = pb.locator(f"#lobby-directory li[data-node-id='{alice.node_id}']")
            expect(in_a).to_contain_text("bob")
            expect(in_a).to_contain_text(bob.node_id[:8])
            expect(in_b).to_contain_text("alice")
            expect(in_b).to_contain_text(alice.node_id[:8])

            # Refreshed, the room counts bob; nothing went wrong on either page.
            pb.click("#lobby-refresh")
            expect(room).to_contain_text("1 member")
            expect(room).to_contain_text("joined")
            expect(pa.locator("#lobby-error")).to_be_hidden()
            expect(pb.locator("#lobby-error")).to_be_hidden()
        finally:
            browser.close()


def _closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_wrong_lobby_url_shows_on_the_page_and_the_page_goes_on(
    cluster: Cluster, servers: Servers,  # noqa: F811
) -> None:
    alice = cluster.new("alice").start()
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = _open(browser, alice)
            error = page.locator("#lobby-error")
            status = page.locator("#lobby-status")

            # Not a lobby URL at all: the node refuses it, the page says so.
            _connect(page, "http://127.0.0.1/lobby-ws")
            expect(error).to_be_visible()
            expect(error).to_contain_text("connecting to the lobby failed")
            expect(error).to_contain_text("bad_request")
            expect(status).to_have_attribute("data-state", "disconnected")

            # A ws:// URL where nothing listens: the page ends up saying it is not
            # connected, and asking for rooms gives a visible error.
            wrong = f"ws://127.0.0.1:{_closed_port()}/lobby-ws"
            _connect(page, wrong)
            expect(error).to_be_hidden()
            expect(status).to_have_attribute("data-state", "disconnected", timeout=TIMEOUT_MS)
            expect(status).to_contain_text(f"disconnected: no lobby answers at {wrong}")
            page.click("#lobby-refresh")
            expect(error).to_contain_text("listing rooms failed")
            expect(error).to_contain_text("unreachable")
            page.click("#lobby-error-dismiss")
            expect(error).to_be_hidden()

            # The rest of the page still works, and so does a right URL after a wrong one.
            page.click("#invite-create")
            expect(page.locator("#invite-out")).to_have_value(re.compile(r"^hd1:"))
            lobby = servers.lobby().start()
            _connect(page, lobby.url)
            _connected(page, lobby.url)
            expect(page.locator("#lobby-rooms")).to_contain_text("no public rooms")
            expect(page.locator("#conn")).to_have_text("connected")
            expect(error).to_be_hidden()
        finally:
            browser.close()
