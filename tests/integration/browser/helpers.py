"""What the browser tests share: Debian's Chromium with ENV.md's flags, opening a node's
page, finding a peer's row, axe-core, layout and keyboard checks, screenshots.

Plain (non-trio) helpers: playwright's sync API runs its own event loop. axe-core comes
from the npm registry (``make browser-deps`` installs it under
``.venv/browser-deps``; ``AXE_CORE_JS`` may point at another ``axe.min.js``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import trio
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from ..conftest import Cluster, NodeProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
TIMEOUT_MS = 10_000
REPO = Path(__file__).resolve().parents[3]
AXE_JS = Path(os.environ.get("AXE_CORE_JS")
              or REPO / ".venv/browser-deps/node_modules/axe-core/axe.min.js")


def launch(p: Any) -> Browser:
    browser: Browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    return browser


def open_page(target: Browser | BrowserContext, node: NodeProcess, *,
              width: int = 1280, height: int = 900) -> Page:
    """A tab on ``node``'s page (its link with the token), once it is connected."""
    page = target.new_page()
    page.set_viewport_size({"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{node.ui_url}/?token={node.token}")
    expect(page.locator("#conn")).to_have_text("connected")
    expect(page.locator("#self-id")).to_have_attribute("data-node-id", node.node_id)
    return page


def peer_row(page: Page, node: NodeProcess) -> Locator:
    return page.locator(f"#peer-list li.peer[data-node-id='{node.node_id}']")


def peer_action(page: Page, node: NodeProcess, action: str) -> Locator:
    """A button of a peer's row; the ones in its "More" menu open the menu first."""
    row = peer_row(page, node)
    button = row.locator(f"[data-action='{action}']")
    if action not in ("chat", "share", "details"):
        menu = row.locator("details.menu")
        if menu.get_attribute("open") is None:
            row.locator("details.menu > summary").click()
    return button


def wait_online(page: Page, node: NodeProcess, timeout: float = TIMEOUT_MS) -> None:
    expect(peer_row(page, node)).to_have_attribute("data-status", "connected", timeout=timeout)


def pair(cluster: Cluster, a: NodeProcess, b: NodeProcess) -> None:
    trio.run(cluster.pair, a, b)


def tab_request(node: NodeProcess, channel: str, event: str, data: dict[str, Any]) -> Any:
    """One command from a script tab of ``node`` (``hd_node.client``), as a person's
    other device or a bot would send it."""

    async def go() -> Any:
        async with node.client() as tab:
            return await tab.request(channel, event, data)

    return trio.run(go)


def send_chat(node: NodeProcess, to: NodeProcess, *texts: str) -> None:
    async def go() -> None:
        async with node.client() as tab:
            for text in texts:
                await tab.request("peerchat", "send", {"node_id": to.node_id, "text": text})

    trio.run(go)


# --- artifacts, layout, keyboard, axe ----------------------------------------------------


# Screenshots are kept as test artifacts: test-artifacts/screenshots/ at the repository
# root (HD_TEST_ARTIFACTS for another place), one file per state, overwritten each run.
ARTIFACTS = Path(os.environ.get("HD_TEST_ARTIFACTS") or REPO / "test-artifacts") / "screenshots"


def screenshot(page: Page, name: str) -> Path:
    """The whole page as ``name``.png in the artifacts directory."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than its viewport (0: no sideways scroll)."""
    return int(page.evaluate(
        "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - document.documentElement.clientWidth"))


def wider_than_viewport(page: Page) -> list[str]:
    """Elements that stick out on the right, for the failure message."""
    return list(page.evaluate("""() => {
        const w = document.documentElement.clientWidth, out = [];
        for (const e of document.querySelectorAll("body *")) {
            const r = e.getBoundingClientRect();
            if (r.width && r.right > w + 1) out.push(e.tagName.toLowerCase()
                + (e.id ? "#" + e.id : "") + (e.className && e.className.baseVal === undefined
                ? "." + String(e.className).split(" ").join(".") : "")
                + " right=" + Math.round(r.right));
        }
        return out.slice(0, 15);
    }"""))


CONTROLS = ("button, input, select, textarea, a[href], summary, [tabindex]:not([tabindex='-1'])")


def keyboard_sweep(page: Page, limit: int = 400) -> tuple[list[str], list[str]]:
    """Press Tab from the top until the focus comes round again. Returns the controls
    that can be used (visible, enabled, not inert) and those Tab never reached."""
    page.evaluate("""(sel) => {
        let n = 0;
        for (const e of document.querySelectorAll(sel)) e.dataset.kbd = String(n++);
        window.__reached = new Set();
        document.addEventListener("focusin", (ev) => {
            const k = ev.target && ev.target.dataset ? ev.target.dataset.kbd : undefined;
            if (k !== undefined) window.__reached.add(k);
        });
        document.activeElement && document.activeElement.blur();
        window.scrollTo(0, 0);
    }""", CONTROLS)
    page.mouse.click(1, 1)
    first = None
    for _ in range(limit):
        page.keyboard.press("Tab")
        key = page.evaluate("() => document.activeElement && document.activeElement.dataset"
                            " ? document.activeElement.dataset.kbd || '' : ''")
        if first is None and key:
            first = key
        elif key and key == first:
            break
    # One evaluate for the controls and their descriptions: the page re-renders rows
    # (an RTT every few seconds), and a control made after the marking has no key —
    # it cannot be judged, so it is left out rather than reported or looked up.
    usable: list[tuple[str, str]] = [tuple(x) for x in page.evaluate("""(sel) =>
        [...document.querySelectorAll(sel)].filter((e) => {
            if (e.dataset.kbd === undefined) return false;
            if (e.disabled || e.closest("[inert], dialog:not([open])")) return false;
            const shut = e.closest("details:not([open])");  // only its summary shows
            if (shut && !(e.tagName === "SUMMARY" && e.parentElement === shut)) return false;
            if (e.closest("fieldset[disabled]")) return false;
            const r = e.getBoundingClientRect(), s = getComputedStyle(e);
            return r.width > 0 && r.height > 0 && s.visibility !== "hidden";
        }).map((e) => [e.dataset.kbd, e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
            + " " + (e.getAttribute("aria-label") || e.textContent
                     || e.getAttribute("placeholder") || "").trim().slice(0, 40)])""",
        CONTROLS)]
    reached = set(page.evaluate("() => [...window.__reached]"))
    return [d for _, d in usable], [d for k, d in usable if k not in reached]


def axe_serious(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    assert AXE_JS.is_file(), (
        f"axe-core is not installed at {AXE_JS}: run `make browser-deps` (npm install "
        "--prefix .venv/browser-deps axe-core@4) or set AXE_CORE_JS")
    # Through the DevTools protocol, so the page's CSP (no inline script) stays as it is.
    page.evaluate(AXE_JS.read_text() + "\n;0")
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ["violations"]});
        return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
            .map((v) => v.id + " (" + v.impact + "): " + v.help + " — "
                + v.nodes.slice(0, 4).map((n) => n.target.join(" ")).join(" | "));
    }""")
    return list(result)
