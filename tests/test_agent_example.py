"""examples/agent_demo.py runs as a user runs it: two nodes, a peer's agent answers
(streamed), and a side effect in a peer's turn is denied in plan mode; exit 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL_KEY_RE = re.compile(r"[A-Za-z0-9+/]{43}=")


def test_agent_demo_streams_a_peers_answer_and_denies_a_side_effect() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "agent_demo.py")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert proc.stderr == ""
    assert re.search(r"bob's agent streams: demo-agent@[a-z2-7]{16}: which node are you", out)
    assert "(demo backend, no model)" in out
    assert "plan mode" in out and "demo ok:" in out
    assert FULL_KEY_RE.search(out) is None and "token" not in out
