"""examples/lobby_demo.py runs as a user runs it: a lobby and two nodes, one reachable
only through the relay; a room, a guest without an invite, chat both ways; exit 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL_KEY_RE = re.compile(r"[A-Za-z0-9+/]{43}=")


def test_lobby_demo_joins_a_room_through_the_relay_and_chats() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "lobby_demo.py")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert proc.stderr == ""
    assert "bob: joined: session with alice via relay, level guest" in out
    assert "alice: got 'hi alice, bob here (via the relay)' from bob" in out
    assert "demo ok:" in out
    assert FULL_KEY_RE.search(out) is None and "token" not in out
