"""Agent to agent between two nodes on one machine (SPEC 6.3).

It starts two ``hd-node`` processes on loopback, each with a temporary data directory:

- ``bob`` runs the ``demo`` agent backend (no model: it answers
  ``demo-agent@<node id>: <prompt>`` word by word) and allows trusted peers to ask it;
- ``alice`` has no agent of her own and does not take requests.

They pair with an invite; then alice, the way a browser tab would over ``/ws``, asks
bob's agent a question and prints the answer as it streams in. Last, bob's agent is
asked to ask another agent: bob's node runs peers' turns in ``plan`` mode (read-only
tools only, no person to approve anything), so the tool call is denied and bob's agent
says so.

Exits 0 when everything went as the spec says, 1 otherwise. Never prints a token.
Run: ``python examples/agent_demo.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx
import trio
from lobby_demo import WAIT, DemoFailed, Proc, say


def api(p: Proc, method: str, path: str, **kw: object) -> dict:
    with httpx.Client(timeout=WAIT) as c:
        r = c.request(method, p.info["ui_url"].rstrip("/") + path,
                      headers={"Authorization": f"Bearer {p.info['token']}"}, **kw)
    if r.status_code != 200:
        raise DemoFailed(f"{path} answered {r.status_code}")
    out: dict = r.json()
    return out


async def demo(alice: Proc, bob: Proc) -> None:
    invite = api(alice, "POST", "/api/invites", json={})["invite"]
    if not api(bob, "POST", "/api/pair", json={"invite": invite})["ok"]:
        raise DemoFailed("pairing failed")
    say("bob", "paired with alice (her invite)")
    bob_id = bob.info["node_id"]
    async with alice.tab() as tab:
        with trio.fail_after(WAIT):
            while not any(p["node_id"] == bob_id and p["status"] == "connected"
                          for p in (await tab.request("network", "list_peers"))["peers"]):
                await trio.sleep(0.1)
        prompt = "which node are you, and what do you run on?"
        say("alice", f"asks bob's agent: {prompt}")
        print("  bob's agent streams: ", end="", flush=True)
        mark = tab.mark()
        async with trio.open_nursery() as n:
            n.start_soon(_print_tokens, tab, mark, "q1")
            done = await tab.request("agent", "ask_peer", {
                "turnId": "q1", "node_id": bob_id, "prompt": prompt}, timeout=WAIT)
            await trio.sleep(0.1)  # the printer shows the last tokens
            n.cancel_scope.cancel()
        answer = await tab.wait_for("agent", "answer", lambda d: d["turnId"] == "q1",
                                    since=mark, timeout=WAIT)
        print(flush=True)
        if not done["ok"] or f"demo-agent@{bob_id}: {prompt}" not in answer["data"]["text"]:
            raise DemoFailed(f"unexpected answer: {answer}")
        say("alice", "got the whole answer back")
        # bob's agent is asked to ask alice's: a side effect, denied in plan mode.
        chained = f"ask {alice.info['node_id']}: hello?"
        await tab.request("agent", "ask_peer", {"turnId": "q2", "node_id": bob_id,
                                                "prompt": chained}, timeout=WAIT)
        got = await tab.wait_for("agent", "answer", lambda d: d["turnId"] == "q2",
                                 since=mark, timeout=WAIT)
        if "denied" not in got["data"]["text"] or "plan" not in got["data"]["text"]:
            raise DemoFailed(f"expected bob's plan mode to deny the call: {got}")
        say("bob", "his agent was not allowed to ask another agent: peers' turns run in "
                   "plan mode (read-only tools)")
    print("demo ok: a peer's agent answered, streamed; a side effect in a peer's turn "
          "was denied")


async def _print_tokens(tab: object, mark: int, turn: str) -> None:
    seen = mark
    while True:
        events = list(tab.events)  # type: ignore[attr-defined]
        for e in events[seen:]:
            d = e.get("data") or {}
            if e.get("channel") == "agent" and e.get("event") == "token" and (
                    d.get("turnId") == turn):
                print(d["delta"], end="", flush=True)
        seen = len(events)
        await trio.sleep(0.02)


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="hd-agent-demo-"))
    node = [sys.executable, "-m", "hd_node", "run", "--ui-port", "0", "--peer-port", "0",
            "--peer-host", "127.0.0.1"]
    alice = Proc(root, "alice", [*node, "--name", "alice"], "node.json")
    bob = Proc(root, "bob", [*node, "--name", "bob", "--agent-backend", "demo",
                             "--allow-remote-agent"], "node.json")
    try:
        for p in (alice, bob):
            p.start()
        trio.run(demo, alice, bob)
        return 0
    except (DemoFailed, trio.TooSlowError) as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        for p in (bob, alice):
            p.stop()


if __name__ == "__main__":
    sys.exit(main())
