"""The examples run as a user runs them: a fresh interpreter, exit code and output checked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A raw Ed25519/X25519 key or a 32-byte value in standard base64 (44 chars, one "=").
FULL_KEY_RE = re.compile(r"[A-Za-z0-9+/]{43}=")


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )


def test_handshake_demo_pairs_shakes_hands_and_exchanges_sealed_envelopes() -> None:
    proc = run_example("handshake_demo.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "demo ok: invite redeemed, handshake verified, sealed envelopes exchanged" in out
    assert "admission of bob: trusted" in out
    assert re.search(r"handshake complete in \d+ ms", out)
    assert "peer_chat 4" in out or "peer_chat 3" in out  # a sealed chat crossed, with size
    assert "dropped (seq" in out and "dropped (sig)" in out  # replay and forgery refused
    assert proc.stderr == ""


def test_handshake_demo_never_prints_a_key_or_token_in_full() -> None:
    out = run_example("handshake_demo.py").stdout
    assert FULL_KEY_RE.search(out) is None
    invite_line = next(line for line in out.splitlines() if "invite hd1:" in line)
    assert re.search(r"hd1:[A-Za-z0-9_-]{1,16}\.\.\.", invite_line)  # truncated, not whole
