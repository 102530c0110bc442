"""Two real nodes share a pane, edit it from both sides, and chat (SPEC 6.1, 6.1.1, 6.2).

It starts two ``hd-node run`` processes (``alice`` and ``bob``) on loopback, each with
its own temporary data directory and ports picked by the OS, and drives each one the
way a browser tab does, over ``/ws`` (``hd_node.client.NodeClient``):

1. bob redeems alice's invite: the two nodes are paired and trust each other;
2. alice shares the pane ``notes`` with bob and writes it; bob writes back;
3. a conflict: bob edits the revision he has while alice's newer one has already
   reached his node. His node answers ``rejected``; his tab rebases the edit onto
   alice's text (``SharedPane``) and resubmits, so both edits survive;
4. alice sends bob a chat message; bob's tab gets it, alice's tab sees it
   ``delivered``; bob reads it and his unread count drops to 0.

Then both nodes are stopped (SIGINT). Exits 0 when everything went as the spec says,
1 otherwise. Never prints a token. Run: ``python examples/collab_chat_demo.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from hd_node.client import NodeClient, NodeError, SharedPane

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
WAIT = 10.0
PANE = "notes"


class DemoFailed(Exception):
    pass


def check(ok: bool, what: str) -> None:
    if not ok:
        raise DemoFailed(what)


class Node:
    """One ``hd-node run`` subprocess with its data directory and log file."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HD_")}
        cmd = [sys.executable, "-m", "hd_node", "run", "--data-dir", str(self.data_dir),
               "--ui-port", "0", "--peer-port", "0", "--peer-host", "127.0.0.1",
               "--name", self.name]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise DemoFailed(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                info = json.loads((self.data_dir / "node.json").read_text())
            except (OSError, ValueError):
                info = None
            # node.json is written once both listeners are bound.
            if isinstance(info, dict) and info.get("pid") == self.proc.pid:
                self.info = info
                return
            if time.monotonic() > deadline:
                raise DemoFailed(f"{self.name} did not start:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def node_id(self) -> str:
        return str(self.info["node_id"])

    def tab(self) -> Any:
        return NodeClient.open(self.info["ws_url"], self.info["token"])


def say(who: str, text: str) -> None:
    print(f"{who:>5}: {text}", flush=True)


async def demo(alice: Node, bob: Node) -> None:
    async with alice.tab() as ta, bob.tab() as tb:
        # 1. Pairing.
        inv = await ta.request("network", "invite_create")
        say("alice", "created an invite")
        res = await tb.request("network", "pair_redeem", {"invite": inv["invite"]})
        check(res["ok"] and res["peer"]["level"] == "trusted", f"pairing failed: {res}")
        say("bob", f"paired with {res['peer']['node_name']} ({alice.node_id}), level trusted")
        await ta.wait_for("network", "peer_update",
                          lambda d: d["peer"]["node_id"] == bob.node_id
                          and d["peer"]["status"] == "connected", timeout=WAIT)
        say("alice", f"sees bob ({bob.node_id}) connected")

        # 2. A shared pane, written from both sides.
        pa, pb = SharedPane(ta, PANE), SharedPane(tb, PANE)
        await pa.join()
        await pb.join()
        await ta.request("collab", "share", {"paneKey": PANE, "node_id": bob.node_id})
        say("alice", f"shares pane '{PANE}' with bob")
        st = await pa.write("alpha beta gamma")
        say("alice", f"writes rev {st['rev']}: {st['text']!r}")
        op = await tb.wait_for("collab", "op", lambda d: d["rev"] == 1, timeout=WAIT)
        check(op["data"]["text"] == "alpha beta gamma", f"bob saw {op}")
        say("bob", f"sees op rev 1 by alice: {op['data']['text']!r}")
        pb.refresh()
        st = await pb.write("alpha beta gamma delta")
        say("bob", f"writes rev {st['rev']}: {st['text']!r}")
        op = await ta.wait_for("collab", "op", lambda d: d["rev"] == 2, timeout=WAIT)
        say("alice", f"sees op rev 2 by bob: {op['data']['text']!r}")
        pa.refresh()

        # 3. A conflict: bob edits rev 2 after alice's rev 3 has reached his node.
        st = await pa.write("ALPHA beta gamma delta")
        say("alice", f"writes rev {st['rev']}: {st['text']!r}")
        await tb.wait_for("collab", "op", lambda d: d["rev"] == 3, timeout=WAIT)
        say("bob", f"still typing on rev {pb.rev}: edits the end to 'DELTA'")
        mark = tb.mark()
        st = await pb.write("alpha beta gamma DELTA")
        rej = await tb.wait_for("collab", "rejected", since=mark, timeout=WAIT)
        say("bob", f"rejected: the pane is at rev {rej['data']['rev']} "
                   f"({rej['data']['text']!r})")
        say("bob", f"rebased and resubmitted: rev {st['rev']}: {st['text']!r}")
        check(st["text"] == "ALPHA beta gamma DELTA", f"rebase lost an edit: {st}")
        op = await ta.wait_for("collab", "op", lambda d: d["rev"] == 4, timeout=WAIT)
        say("alice", f"sees op rev 4 by bob: {op['data']['text']!r}")
        check(op["data"]["text"] == st["text"], "alice and bob disagree")
        say("both", f"converged on rev 4: {st['text']!r} (both edits kept)")

        # 4. Chat.
        await ta.request("peerchat", "send", {"node_id": bob.node_id, "text": "lunch at 1?"})
        sent = await ta.wait_for("peerchat", "message", lambda d: d["direction"] == "out",
                                 timeout=WAIT)
        msg_id = sent["data"]["id"]
        say("alice", f"sends chat {msg_id[:8]}: {sent['data']['text']!r}")
        got = await tb.wait_for("peerchat", "message", lambda d: d["id"] == msg_id,
                                timeout=WAIT)
        say("bob", f"receives chat {msg_id[:8]} from {got['data']['from_name']}: "
                   f"{got['data']['text']!r}")
        await ta.wait_for("peerchat", "status",
                          lambda d: d["id"] == msg_id and d["status"] == "delivered",
                          timeout=WAIT)
        say("alice", f"chat {msg_id[:8]} status: delivered")
        unread = (await tb.request("peerchat", "unread"))["counts"]
        say("bob", f"unread from alice: {unread.get(alice.node_id)}")
        check(unread.get(alice.node_id) == 1, f"unread {unread}")
        await tb.request("peerchat", "read", {"node_id": alice.node_id})
        unread = (await tb.request("peerchat", "unread"))["counts"]
        say("bob", f"reads the conversation; unread now {unread.get(alice.node_id)}")
        check(unread.get(alice.node_id) == 0, f"unread {unread}")
        await tb.request("peerchat", "send", {"node_id": alice.node_id, "text": "sure"})
        got = await ta.wait_for("peerchat", "message", lambda d: d["direction"] == "in",
                                timeout=WAIT)
        say("alice", f"receives chat from bob: {got['data']['text']!r}")


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hd-demo-") as tmp:
        root = Path(tmp)
        alice, bob = Node(root, "alice"), Node(root, "bob")
        try:
            alice.start()
            bob.start()
            print(f"started alice ({alice.node_id}) and bob ({bob.node_id}) on loopback",
                  flush=True)
            trio.run(demo, alice, bob)
        except Exception as exc:
            # Failures inside the tabs' nurseries arrive wrapped in exception groups.
            leaf = _leaf(exc)
            if not isinstance(leaf, DemoFailed | NodeError | trio.TooSlowError):
                raise
            print(f"demo FAILED: {type(leaf).__name__}: {leaf}", flush=True)
            for node in (alice, bob):
                print(f"--- {node.name} log\n{node.log_tail()}")
            return 1
        finally:
            codes = [node.stop() for node in (alice, bob)]
        print(f"stopped both nodes (exit codes {codes[0]}, {codes[1]})")
        if codes != [0, 0]:
            print("demo FAILED: a node did not stop cleanly")
            return 1
    print("demo ok: paired, pane converged after a rejected edit was rebased, "
          "chat delivered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
