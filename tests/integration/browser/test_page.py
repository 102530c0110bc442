"""The web page in a real Chromium against two real nodes (SPEC 6.1, 6.2, 9).

Plain (non-trio) tests: playwright's sync API runs its own event loop. Chromium is
Debian's package (``make test`` installs it), launched with the flags of ENV.md so it
never leaves the machine (see ``helpers``).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from hd_node.web.app import STATIC_FILES

from ..conftest import Cluster, NodeProcess
from .helpers import ARGS, CHROMIUM, TIMEOUT_MS, launch, open_page, pair, peer_action, peer_row

__all__ = ["ARGS", "CHROMIUM", "TIMEOUT_MS", "_open"]


def _open(browser: object, node: NodeProcess) -> Page:
    return open_page(browser, node)  # type: ignore[arg-type]


@pytest.fixture
def two_nodes(cluster: Cluster) -> tuple[NodeProcess, NodeProcess]:
    alice = cluster.new("alice").start()
    bob = cluster.new("bob").start()
    pair(cluster, alice, bob)
    return alice, bob


def test_page_shows_the_peer_shares_the_scratch_pane_and_chats(
    two_nodes: tuple[NodeProcess, NodeProcess],
) -> None:
    alice, bob = two_nodes
    with sync_playwright() as p:
        browser = launch(p)
        try:
            pa, pb = _open(browser, alice), _open(browser, bob)
            row = peer_row(pa, bob)
            expect(row).to_have_attribute("data-status", "connected")
            expect(row.locator(".peer-name")).to_have_text("bob")
            expect(row.locator(".peer-status")).to_contain_text("online via direct")
            expect(row).not_to_contain_text("not trusted")

            # The pane: alice shares it with bob from his row (no id typed) and types;
            # bob's textarea follows, and the other way round.
            peer_action(pa, bob, "share").click()
            expect(peer_action(pa, bob, "share")).to_have_attribute("aria-pressed", "true")
            sharer = pa.locator(f"#pane-sharers li[data-node-id='{bob.node_id}']")
            expect(sharer).to_contain_text("bob")
            pa.fill("#pane", "hello from alice")
            expect(pb.locator("#pane")).to_have_value("hello from alice")
            pb.fill("#pane", "hello from alice, and bob")
            expect(pa.locator("#pane")).to_have_value("hello from alice, and bob")
            expect(pa.locator("#pane-rev")).to_contain_text("rev 2 by bob")

            # Chat: alice opens a conversation with bob from his row and sends; bob's
            # page lists it with an unread badge and shows it; alice's shows it delivered.
            peer_action(pa, bob, "chat").click()
            expect(pa.locator("#conversation")).to_have_attribute("data-node-id", bob.node_id)
            pa.fill("#chat-input", "hi bob")
            pa.press("#chat-input", "Enter")
            expect(pa.locator("#chat-input")).to_have_value("")
            sent = pa.locator("#messages li.msg.out", has_text="hi bob")
            expect(sent.locator(".tick")).to_have_attribute("aria-label", "delivered")
            expect(sent.locator(".sender")).to_have_text("You")
            conv = pb.locator(f"#conversations li[data-node-id='{alice.node_id}']")
            expect(conv.locator(".badge")).to_contain_text("1")
            expect(conv).to_contain_text("hi bob")
            conv.locator("button").click()
            got = pb.locator("#messages li.msg.in", has_text="hi bob")
            expect(got.locator(".sender")).to_have_text("alice")
            expect(got.locator("time")).to_have_count(1)
            expect(conv.locator(".badge")).to_have_count(0)
        finally:
            browser.close()


def test_static_files_are_an_allowlist_served_with_the_pages_headers(
    two_nodes: tuple[NodeProcess, NodeProcess],
) -> None:
    alice, _ = two_nodes
    with httpx.Client(timeout=10) as c:
        page = c.get(alice.ui_url + "/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css"),
                           ("qrcode.js", "text/javascript"), ("icon.svg", "image/svg+xml")):
            r = c.get(f"{alice.ui_url}/static/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-type"].startswith(kind), name
            assert r.headers["content-security-policy"] == csp
            assert r.headers["x-content-type-options"] == "nosniff"
        assert "MIT license" in c.get(alice.ui_url + "/static/qrcode.js").text
        # Every file the page is made of is served, and nothing that is not there.
        folder = resources.files("hd_node").joinpath("static")
        files = {p.name for p in folder.iterdir() if p.is_file()} - {"index.html"}
        assert files == set(STATIC_FILES)
        for name in sorted(STATIC_FILES):
            assert c.get(f"{alice.ui_url}/static/{name}").status_code == 200, name
        assert c.post(alice.ui_url + "/static/app.js").status_code == 404
    # Sent as they are (http.client normalizes nothing): only the listed names exist.
    for bad in ("index.html", "../web.py", "..%2Fweb.py", "%2e%2e/web.py", "nope.js", "",
                "app.js/", "APP.JS", "./app.js", "app.js%00", "/etc/passwd", "..\\web.py"):
        conn = http.client.HTTPConnection("127.0.0.1", alice.ui_port, timeout=10)
        try:
            conn.request("GET", "/static/" + bad)
            assert conn.getresponse().status == 404, bad
        finally:
            conn.close()


@pytest.fixture
def evil_site() -> Iterator[str]:
    """A plain page on another loopback port: another origin, and no CSP of ours."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = b"<!doctype html><title>elsewhere</title>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_page_from_another_origin_cannot_open_the_nodes_socket_even_with_its_token(
    two_nodes: tuple[NodeProcess, NodeProcess], evil_site: str
) -> None:
    """Cross-site WebSocket hijacking: a page of another origin that somehow holds
    alice's token still gets no socket to alice, while alice's own page does."""
    alice, _ = two_nodes
    script = """async (url) => await new Promise((resolve) => {
        const ws = new WebSocket(url);
        ws.onopen = () => { ws.close(); resolve("open"); };
        ws.onerror = () => resolve("refused");
        setTimeout(() => resolve("timeout"), 5000);
    })"""
    url = f"{alice.ws_url}?token={alice.token}"
    with sync_playwright() as p:
        browser = launch(p)
        try:
            foreign = browser.new_page()
            foreign.goto(evil_site)
            assert foreign.evaluate(script, url) == "refused"
            own = _open(browser, alice)
            assert own.evaluate(script, url) == "open"
        finally:
            browser.close()
