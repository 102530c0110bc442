"""The page's Agent box in a real Chromium against real nodes (SPEC 6.3, 9).

Plain (non-trio) tests like test_page: playwright's sync API runs its own event loop,
and Chromium is Debian's, launched with test_page's flags so it never leaves the machine.
alice has no agent backend; bob runs the demo backend (it echoes
``demo-agent@<bob's id>: <prompt>`` word by word, 10 ms apart) and takes requests from
trusted peers. The two nodes and the browser are shared by the module; each test opens
its own pages, so its turns are its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import trio
from playwright.sync_api import Browser, Dialog, Locator, Page, expect

from ..conftest import Cluster, NodeProcess
from .helpers import TIMEOUT_MS
from .test_page import _open

AGENT_REMOTE = "[network]\nagentBackend = \"demo\"\nallowRemoteAgent = true\n"
TURN_TIMEOUT_MS = 20_000  # a demo turn through a peer, on a loaded 2-core machine
LOG_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess,
                                                                       NodeProcess]]:
    """alice (no agent backend) and bob (demo backend, remote turns allowed), paired."""
    cluster = Cluster(tmp_path_factory.mktemp("agent-box"))
    try:
        alice = cluster.new("alice")
        bob = cluster.new("bob", config=AGENT_REMOTE)
        trio.run(cluster.start, alice, bob)
        trio.run(cluster.pair, alice, bob)
        yield alice, bob
    finally:
        cluster.stop_all()


def _page(browser: Browser, node: NodeProcess) -> Page:
    page = _open(browser, node)
    expect(page.locator("#agent-cancel")).to_be_disabled()
    return page


def _target(page: Page, peer: NodeProcess | None) -> None:
    if peer is not None:  # the peer shows up once the page has the peer list
        expect(page.locator(f"#agent-target option[value='{peer.node_id}']")
               ).to_have_count(1, timeout=TIMEOUT_MS)
    page.select_option("#agent-target", value="" if peer is None else peer.node_id)


def _ask(page: Page, peer: NodeProcess | None, prompt: str, *, keyboard: bool = False
         ) -> Locator:
    """Ask ``peer``'s agent (None: this node's) and return the new turn's entry."""
    _target(page, peer)
    entries = page.locator("#agent-turns > li")
    before = entries.count()
    page.fill("#agent-prompt", prompt)
    if keyboard:
        page.press("#agent-prompt", "Control+Enter")
    else:
        page.click("#agent-ask")
    expect(entries).to_have_count(before + 1)
    turn_id = entries.first.get_attribute("data-turn-id")  # newest first
    assert turn_id
    return page.locator(f"#agent-turns > li[data-turn-id='{turn_id}']")


def _wait_logged(node: NodeProcess, text: str, timeout: float = LOG_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while text not in node.log_text():
        assert time.monotonic() < deadline, f"{node.name}'s log never said {text!r}"
        time.sleep(0.05)


def test_a_peers_agent_answers_into_its_own_entry_and_no_backend_here_says_so(
    nodes: tuple[NodeProcess, NodeProcess], browser: Browser,
) -> None:
    alice, bob = nodes
    page = _page(browser, alice)
    try:
        # bob is offered by name, with what he advertises.
        option = page.locator(f"#agent-target option[value='{bob.node_id}']")
        expect(option).to_contain_text("bob", timeout=TIMEOUT_MS)
        expect(option).to_contain_text("takes agent requests")

        # An empty prompt is not sent.
        page.click("#agent-ask")
        expect(page.locator("#agent-notice")).to_contain_text("write a prompt first")
        expect(page.locator("#agent-turns > li")).to_have_count(0)

        # Ctrl+Enter asks bob; his demo agent's answer streams into the entry.
        entry = _ask(page, bob, "what is the weather on the moon", keyboard=True)
        expect(page.locator("#agent-notice")).to_be_hidden()
        expect(page.locator("#agent-prompt")).to_have_value("")
        expect(entry.locator(".agent-head")).to_contain_text("to bob")
        expect(entry.locator(".agent-prompt-text")).to_have_text(
            "what is the weather on the moon")
        expect(entry).to_have_attribute("data-state", "answered", timeout=TURN_TIMEOUT_MS)
        expect(entry.locator(".agent-answer")).to_contain_text(
            f"demo-agent@{bob.node_id}: what is the weather on the moon")
        expect(entry.locator(".agent-state")).to_have_text("answered")
        expect(entry.locator(".agent-error")).to_be_hidden()
        expect(page.locator("#agent-cancel")).to_be_disabled()

        # alice's own agent: she has no backend; the target's note says so before
        # anything is asked, and the entry says so plainly.
        page.select_option("#agent-target", value="")
        expect(page.locator("#agent-target-note")).to_contain_text(
            "this node has no agent backend")
        mine = _ask(page, None, "hello")
        expect(page.locator("#agent-turns > li").first).to_have_attribute(
            "data-turn-id", mine.get_attribute("data-turn-id") or "")
        expect(mine).to_have_attribute("data-state", "failed", timeout=TURN_TIMEOUT_MS)
        error = mine.locator(".agent-error")
        expect(error).to_be_visible()
        expect(error).to_have_attribute("role", "alert")
        expect(error).to_contain_text("unsupported")
        expect(error).to_contain_text(
            "this node has no agent backend (start it with --agent-backend")
        expect(mine.locator(".agent-state")).to_have_text("failed: unsupported")
        expect(mine.locator(".agent-head")).to_contain_text("to this node's agent")
        expect(page.locator("#agent-cancel")).to_be_disabled()
        # The earlier entry is untouched.
        expect(entry).to_have_attribute("data-state", "answered")
    finally:
        page.close()


def test_cancel_stops_a_long_turn_on_the_peer_while_a_newer_turn_answers(
    nodes: tuple[NodeProcess, NodeProcess], browser: Browser,
) -> None:
    alice, bob = nodes
    page = _page(browser, alice)
    try:
        words = [f"w{i}" for i in range(600)]  # ~6 s of demo streaming
        long_turn = _ask(page, bob, " ".join(words))
        # Tokens show while the turn runs; only now may it be cancelled.
        expect(long_turn.locator(".agent-answer")).to_contain_text(
            "w5 ", timeout=TURN_TIMEOUT_MS)
        expect(long_turn).to_have_attribute("data-state", "running")
        expect(page.locator("#agent-cancel")).to_be_enabled()

        # A second turn runs beside it, listed above it, and answers first.
        short = _ask(page, bob, "quick one")
        expect(page.locator("#agent-turns > li").first).to_have_attribute(
            "data-turn-id", short.get_attribute("data-turn-id") or "")
        expect(short).to_have_attribute("data-state", "answered", timeout=TURN_TIMEOUT_MS)
        expect(short.locator(".agent-answer")).to_contain_text(
            f"demo-agent@{bob.node_id}: quick one")
        expect(long_turn).to_have_attribute("data-state", "running")
        expect(page.locator("#agent-running")).to_have_text("1 turn running")

        page.click("#agent-cancel")
        expect(long_turn).to_have_attribute("data-state", "cancelled", timeout=TURN_TIMEOUT_MS)
        expect(long_turn.locator(".agent-error")).to_have_text(
            "cancelled — the turn was cancelled; the agent was told to stop")
        expect(long_turn.locator(".agent-answer")).not_to_contain_text("w599")
        expect(long_turn.locator(".agent-cancel-one")).to_be_hidden()
        expect(page.locator("#agent-cancel")).to_be_disabled()
        expect(page.locator("#agent-running")).to_have_text("")
        _wait_logged(bob, "reason=cancelled")
        expect(short).to_have_attribute("data-state", "answered")
    finally:
        page.close()


def test_markup_in_a_prompt_and_in_the_answer_is_shown_as_text(
    nodes: tuple[NodeProcess, NodeProcess], browser: Browser,
) -> None:
    alice, bob = nodes
    page = _page(browser, alice)
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:  # an alert() would mean the markup ran
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        markup = "<img src=x onerror=alert(1)>"
        entry = _ask(page, bob, f"look {markup}")
        expect(entry).to_have_attribute("data-state", "answered", timeout=TURN_TIMEOUT_MS)
        expect(entry.locator(".agent-answer")).to_contain_text(
            f"demo-agent@{bob.node_id}: look {markup}")
        expect(entry.locator(".agent-prompt-text")).to_have_text(f"look {markup}")
        expect(page.locator("img")).to_have_count(0)
        assert dialogs == []
    finally:
        page.close()


def test_a_tool_call_and_a_peers_refusal_show_in_the_entry(
    nodes: tuple[NodeProcess, NodeProcess], browser: Browser,
) -> None:
    """bob's page: bob's own (demo) agent calls agent.ask_peer on alice, who takes no
    agent requests; then bob asks alice's agent directly."""
    alice, bob = nodes
    page = _page(browser, bob)
    try:
        entry = _ask(page, None, f"ask {alice.node_id}: are you there")
        expect(entry).to_have_attribute("data-state", "answered", timeout=TURN_TIMEOUT_MS)
        call = entry.locator(".agent-tools li")
        expect(call).to_have_count(1)
        expect(call).to_contain_text("agent.ask_peer")
        expect(call.locator(".bad")).to_have_text("failed")
        expect(call).to_contain_text("not_allowed")
        # The arguments are there, collapsed until opened.
        args = call.locator("details", has_text="arguments")
        expect(args.locator("pre")).to_be_hidden()
        args.locator("summary").click()
        expect(args.locator("pre")).to_be_visible()
        expect(args.locator("pre")).to_contain_text(alice.node_id)
        expect(entry.locator(".agent-answer")).to_contain_text(
            f"demo-agent@{bob.node_id}: peer {alice.node_id} could not answer")

        refused = _ask(page, alice, "hello alice")
        expect(refused).to_have_attribute("data-state", "failed", timeout=TURN_TIMEOUT_MS)
        error = refused.locator(".agent-error")
        expect(error).to_contain_text("not_allowed")
        expect(error).to_contain_text("the peer does not take agent requests")
        expect(page.locator("#agent-cancel")).to_be_disabled()
    finally:
        page.close()


def test_a_turn_goes_on_after_a_reload_and_shows_once_in_the_task_list_of_every_page(
    nodes: tuple[NodeProcess, NodeProcess], browser: Browser,
) -> None:
    alice, bob = nodes
    page, other = _page(browser, alice), _page(browser, alice)
    try:
        words = [f"w{i}" for i in range(1000)]  # ~10 s of demo streaming
        answer = f"demo-agent@{bob.node_id}: {' '.join(words)} (demo backend, no model)"
        turn = _ask(page, bob, " ".join(words))
        expect(turn.locator(".agent-answer")).to_contain_text("w5 ", timeout=TURN_TIMEOUT_MS)
        task_id = turn.get_attribute("data-task-id")
        assert task_id
        page.reload()  # the tab that asked is gone; the turn is the node's
        task = page.locator(f"#agent-tasks > li[data-task-id='{task_id}']")
        expect(task).to_have_attribute("data-state", "working", timeout=TURN_TIMEOUT_MS)
        expect(task.locator(".task-target")).to_contain_text("bob")
        expect(task.locator(".task-asker")).to_contain_text("asked by a tab")
        expect(task.locator(".task-elapsed")).to_contain_text(" s")
        stream = task.locator(".task-stream")
        expect(stream).to_contain_text("w50 ", timeout=TURN_TIMEOUT_MS)
        shown = stream.inner_text()
        assert answer.startswith(shown), "tokens shown twice or out of order after reload"
        # The other page, open all along, lists the same task and sees it finish.
        mirror = other.locator(f"#agent-tasks > li[data-task-id='{task_id}']")
        expect(mirror).to_have_attribute("data-state", "completed", timeout=TURN_TIMEOUT_MS)
        expect(task).to_have_attribute("data-state", "completed")
        expect(stream).to_have_text(answer)
        expect(task.locator(".task-cancel")).to_be_hidden()
    finally:
        page.close()
        other.close()


def test_another_page_cancels_a_running_task_from_its_task_list(
    nodes: tuple[NodeProcess, NodeProcess], browser: Browser,
) -> None:
    alice, bob = nodes
    page, other = _page(browser, alice), _page(browser, alice)
    try:
        before = bob.log_text().count("reason=cancelled")
        turn = _ask(page, bob, " ".join(f"x{i}" for i in range(600)))
        expect(turn.locator(".agent-answer")).to_contain_text("x5 ", timeout=TURN_TIMEOUT_MS)
        task_id = turn.get_attribute("data-task-id")
        mirror = other.locator(f"#agent-tasks > li[data-task-id='{task_id}']")
        expect(mirror).to_have_attribute("data-state", "working", timeout=TURN_TIMEOUT_MS)
        mirror.locator(".task-cancel").click()
        expect(mirror).to_have_attribute("data-state", "canceled", timeout=TURN_TIMEOUT_MS)
        expect(page.locator(f"#agent-tasks > li[data-task-id='{task_id}']")
               ).to_have_attribute("data-state", "canceled", timeout=TURN_TIMEOUT_MS)
        expect(turn).to_have_attribute("data-state", "cancelled", timeout=TURN_TIMEOUT_MS)
        deadline = time.monotonic() + LOG_TIMEOUT_S
        while bob.log_text().count("reason=cancelled") <= before:
            assert time.monotonic() < deadline, "bob never stopped the turn"
            time.sleep(0.05)
    finally:
        page.close()
        other.close()
