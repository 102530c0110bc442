"""A lobby and two nodes on one machine: a room, a guest, a session through the relay.

It starts ``hd-lobby`` (with its bundled relay) and two ``hd-node`` processes on
loopback, each with its own temporary data directory:

- ``alice`` runs with her direct listener off (as if behind a NAT nobody can dial):
  the lobby's relay is her only way in;
- ``bob`` is an ordinary node. The two never paired and both are in trust mode
  ``manual``.

Then, the way a browser tab would, over ``/ws``: both connect to the lobby; alice
creates an ``open`` room; bob joins it — the lobby tells alice (she records bob's id
and key as a guest of her room) and tells bob alice's candidates; bob's join ladder
finds no direct path and reaches alice through the relay; they chat, end to end
encrypted (the relay routes sealed envelopes it cannot open).

Exits 0 when everything went as the spec says, 1 otherwise. Never prints a token.
Run: ``python examples/lobby_demo.py``.
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

from hd_node.client import NodeClient

START_TIMEOUT = 20.0
WAIT = 15.0


class DemoFailed(Exception):
    pass


class Proc:
    """A subprocess that writes an info file once it listens."""

    def __init__(self, root: Path, name: str, cmd: list[str], info_file: str) -> None:
        self.name = name
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self.cmd = [*cmd, "--data-dir", str(self.data_dir)]
        self.info_file = info_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HD_")}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoFailed(f"{self.name} exited early, see {self.log_path}")
            try:
                info = json.loads((self.data_dir / self.info_file).read_text())
                if info.get("pid") == self.proc.pid:
                    self.info = info
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise DemoFailed(f"{self.name} did not start, see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tab(self) -> Any:
        return NodeClient.open(self.info["ws_url"], self.info["token"])


def say(who: str, text: str) -> None:
    print(f"{who:>5}: {text}", flush=True)


async def demo(lobby: Proc, alice: Proc, bob: Proc) -> None:
    url = lobby.info["url"]
    async with alice.tab() as ta, bob.tab() as tb:
        for who, tab in (("alice", ta), ("bob", tb)):
            await tab.request("lobby", "connect", {"url": url})
            with trio.fail_after(WAIT):
                while not (await tab.request("lobby", "state"))["connected"]:
                    await trio.sleep(0.1)
            say(who, "registered with the lobby")
        room = (await ta.request("lobby", "create_room", {
            "name": "demo", "visibility": "public", "joinPolicy": "open"}))["room"]
        say("alice", f"created the open room '{room['name']}'")
        rooms = (await tb.request("lobby", "list_rooms"))["rooms"]
        if not any(r["id"] == room["id"] for r in rooms):
            raise DemoFailed("bob does not see the room")
        say("bob", f"sees {len(rooms)} public room(s); joining '{room['name']}'")
        joined = await tb.request("lobby", "join_room", {"roomId": room["id"]}, timeout=30)
        say("bob", f"joined: session with {joined['peer']['node_name']} via "
                   f"{joined['via']}, level {joined['peer']['level']}")
        if joined["via"] != "relay" or joined["peer"]["level"] != "guest":
            raise DemoFailed(f"expected a guest session through the relay: {joined}")
        await tb.request("peerchat", "send", {"node_id": alice.info["node_id"],
                                              "text": "hi alice, bob here (via the relay)"})
        got = await ta.wait_for("peerchat", "message",
                                lambda d: d["direction"] == "in", timeout=WAIT)
        say("alice", f"got '{got['data']['text']}' from {got['data']['from_name']}")
        await ta.request("peerchat", "send", {"node_id": bob.info["node_id"],
                                              "text": "hi bob, welcome to my room"})
        await ta.wait_for("peerchat", "status", lambda d: d["status"] == "delivered",
                          timeout=WAIT)
        say("alice", "her answer is delivered (acked by bob)")
    print("demo ok: lobby room joined through the relay, guest admitted without an invite,"
          " chat delivered both ways")


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="hd-lobby-demo-"))
    node = [sys.executable, "-m", "hd_node", "run", "--ui-port", "0", "--peer-port", "0",
            "--peer-host", "127.0.0.1"]
    no_direct = root / "alice.toml"
    no_direct.write_text("[network]\nenableDirect = false\n")
    lobby = Proc(root, "lobby", [sys.executable, "-m", "hd_lobby", "run", "--port", "0"],
                 "lobby.json")
    alice = Proc(root, "alice", [*node, "--name", "alice", "--config", str(no_direct)],
                 "node.json")
    bob = Proc(root, "bob", [*node, "--name", "bob"], "node.json")
    procs = [lobby, alice, bob]
    try:
        for p in procs:
            p.start()
        say("lobby", f"listening at {lobby.info['url']} (relay at {lobby.info['relay_url']})")
        trio.run(demo, lobby, alice, bob)
        return 0
    except (DemoFailed, trio.TooSlowError) as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    sys.exit(main())
