"""Shared fixtures for the hd_protocol tests.

Everything here is deterministic: identities come from the seeds in
``vectors/identity.json`` and randomness from a seeded SHA-256 stream, so a failing
test replays exactly. hd_protocol takes randomness only as ``rng(n) -> bytes`` and
time only as ``now`` (SPEC 0), which is what makes this possible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hd_protocol import (
    Acceptor,
    Decision,
    Dialer,
    Established,
    HandshakeResult,
    Identity,
    NeedAdmission,
)

VECTORS_DIR = Path(__file__).parent / "vectors"


class DeterministicRng:
    """``rng(n)``: bytes of SHA-256(seed ‖ counter). Every output is recorded so a test
    can recognise a value a machine drew (e.g. which 32 bytes became its X25519 seed)."""

    def __init__(self, seed: bytes | str | int) -> None:
        self._seed = seed if isinstance(seed, bytes) else str(seed).encode("utf-8")
        self._counter = 0
        self.outputs: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        self.outputs.append(out[:n])
        return out[:n]


def _identities() -> list[Identity]:
    cases = json.loads((VECTORS_DIR / "identity.json").read_text("utf-8"))["cases"]
    return [Identity.from_seed(bytes.fromhex(c["seed_hex"])) for c in cases]


@pytest.fixture(scope="session")
def rng_factory() -> type[DeterministicRng]:
    return DeterministicRng


@pytest.fixture(scope="session")
def alice() -> Identity:
    return _identities()[0]


@pytest.fixture(scope="session")
def bob() -> Identity:
    return _identities()[1]


@pytest.fixture(scope="session")
def carol() -> Identity:
    return _identities()[2]


def run_handshake(
    dialer: Identity,
    acceptor: Identity,
    *,
    now: int = 0,
    dialer_level: str = "trusted",
    acceptor_level: str = "trusted",
    seed: str = "handshake",
    **dialer_kw: Any,
) -> tuple[HandshakeResult, HandshakeResult]:
    """Drive Dialer and Acceptor through the four frames of SPEC 4 with the given
    admission decisions; returns (dialer result, acceptor result)."""
    d = Dialer(dialer, rng=DeterministicRng(seed + "/dialer"), now=now, **dialer_kw)
    a = Acceptor(acceptor, rng=DeterministicRng(seed + "/acceptor"), now=now)
    (hello,) = d.start(now)
    (ack,) = a.receive(hello.wire, now)
    (need,) = d.receive(ack.wire, now)
    assert isinstance(need, NeedAdmission)
    (auth,) = d.admit(Decision(dialer_level), now)
    (need,) = a.receive(auth.wire, now)
    assert isinstance(need, NeedAdmission)
    result_frame, est_a = a.admit(Decision(acceptor_level), now)
    (est_d,) = d.receive(result_frame.wire, now)
    assert isinstance(est_d, Established) and isinstance(est_a, Established)
    return est_d.result, est_a.result


@pytest.fixture(scope="session")
def handshake() -> Callable[..., tuple[HandshakeResult, HandshakeResult]]:
    """Factory: ``handshake(dialer_identity, acceptor_identity, **kw)``."""
    return run_handshake
