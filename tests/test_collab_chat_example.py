"""examples/collab_chat_demo.py runs as a user runs it: a fresh interpreter that starts
two real nodes, edits a shared pane from both sides (with a rejected, rebased edit),
chats, stops both nodes and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL_KEY_RE = re.compile(r"[A-Za-z0-9+/]{43}=")  # a raw key in standard base64


def test_collab_chat_demo_converges_after_a_rebased_edit_delivers_chat_and_exits_0() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "collab_chat_demo.py")],
        capture_output=True, text=True, timeout=90, cwd=ROOT, check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert proc.stderr == ""
    assert re.search(r"bob: paired with alice \([a-z2-7]{16}\), level trusted", out)
    assert "alice: shares pane 'notes' with bob" in out
    assert "bob: sees op rev 1 by alice: 'alpha beta gamma'" in out
    assert "alice: sees op rev 2 by bob: 'alpha beta gamma delta'" in out
    assert "bob: rejected: the pane is at rev 3 ('ALPHA beta gamma delta')" in out
    assert "bob: rebased and resubmitted: rev 4: 'ALPHA beta gamma DELTA'" in out
    assert "alice: sees op rev 4 by bob: 'ALPHA beta gamma DELTA'" in out
    assert re.search(r"bob: receives chat [0-9a-f]{8} from alice: 'lunch at 1\?'", out)
    assert re.search(r"alice: chat [0-9a-f]{8} status: delivered", out)
    assert "bob: unread from alice: 1" in out
    assert "bob: reads the conversation; unread now 0" in out
    assert "alice: receives chat from bob: 'sure'" in out
    assert "stopped both nodes (exit codes 0, 0)" in out
    assert out.rstrip().endswith("demo ok: paired, pane converged after a rejected edit was "
                                 "rebased, chat delivered")
    assert FULL_KEY_RE.search(out) is None
