"""The web page in a real Chromium against two real nodes (SPEC 6.1, 6.2, 9).

Plain (non-trio) tests: playwright's sync API runs its own event loop. Chromium is
Debian's package (``make test`` installs it), launched with the flags of ENV.md so it
never leaves the machine.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio
from playwright.sync_api import Page, expect, sync_playwright

from ..conftest import Cluster, NodeProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
TIMEOUT_MS = 10_000


def _open(browser: object, node: NodeProcess) -> Page:
    page: Page = browser.new_page()  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{node.ui_url}?token={node.token}")
    expect(page.locator("#conn")).to_have_text("connected")
    expect(page.locator("#self-id")).to_have_text(node.node_id)
    return page


@pytest.fixture
def two_nodes(cluster: Cluster) -> tuple[NodeProcess, NodeProcess]:
    alice = cluster.new("alice").start()
    bob = cluster.new("bob").start()
    trio.run(cluster.pair, alice, bob)
    return alice, bob


def test_page_shows_the_peer_shares_the_scratch_pane_and_chats(
    two_nodes: tuple[NodeProcess, NodeProcess],
) -> None:
    alice, bob = two_nodes
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pa, pb = _open(browser, alice), _open(browser, bob)
            row = pa.locator(f"#peers tr[data-node-id='{bob.node_id}']")
            expect(row).to_contain_text("connected")
            expect(row).to_contain_text("trusted")

            # The pane: alice shares it with bob and types; bob's textarea follows.
            pa.fill("#share-with", bob.node_id)
            pa.click("#share")
            expect(pa.locator("#pane-sharers")).to_contain_text(bob.node_id)
            pa.fill("#pane", "hello from alice")
            expect(pb.locator("#pane")).to_have_value("hello from alice")
            pb.fill("#pane", "hello from alice, and bob")
            expect(pa.locator("#pane")).to_have_value("hello from alice, and bob")
            expect(pa.locator("#pane-rev")).to_contain_text("rev 2")

            # Chat: alice opens a conversation with bob and sends; bob's page shows it,
            # alice's shows it delivered.
            pa.click(f"#peers tr[data-node-id='{bob.node_id}'] button")
            box = pa.locator(f"#chats div[data-node-id='{bob.node_id}'] input")
            box.fill("hi bob")
            box.press("Enter")
            expect(pb.locator(f"#chats div[data-node-id='{alice.node_id}'] .chatlog")
                   ).to_contain_text("hi bob")
            expect(pa.locator(f"#chats div[data-node-id='{bob.node_id}'] .chatlog")
                   ).to_contain_text("[delivered]")
        finally:
            browser.close()


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
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            foreign = browser.new_page()
            foreign.goto(evil_site)
            assert foreign.evaluate(script, url) == "refused"
            own = _open(browser, alice)
            assert own.evaluate(script, url) == "open"
        finally:
            browser.close()
