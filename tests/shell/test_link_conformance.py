"""Every Link implementation against the one link contract (``hd_shell.testing``).

Each check runs on a fresh pair of every carrier: the memory pair, a WebSocket over
127.0.0.1, a relay link through an in-process ``hd_relay`` service and a WebRTC data
channel (aiortc on loopback). What a carrier legitimately does differently is in its
``LinkTraits``; a check a carrier fails for a known defect is a strict xfail naming the
defect (strict: the day it is fixed, the xfail itself fails and must go).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from hd_shell.testing import (
    CHECKS,
    ConformanceError,
    LinkPair,
    LinkTraits,
    MemoryLink,
    memory_link_pair,
    memory_pair,
    run_check,
    ws_pair,
)

from .linkpairs import relay_pair, webrtc_pair

MiB = 1 << 20

PairFor = Callable[[Path], AbstractAsyncContextManager[LinkPair]]
CARRIERS: dict[str, tuple[PairFor, LinkTraits]] = {
    # 16 frames in flight, then the writer waits.
    "memory": (lambda _: memory_pair(),
               LinkTraits("memory", ahead_bound=17 * 16 * 1024)),
    # The kernel's socket buffers on both sides, then the writer waits (about 140 KiB
    # measured on loopback; the kernel may grow its buffers to a few MiB).
    "ws": (lambda _: ws_pair(), LinkTraits("direct", ahead_bound=16 * MiB)),
    # Envelopes only (bytes are sent as their text); a virtual link has no close of its
    # own (the session's bye ends it); 256 envelopes wait for a reader, then the relay
    # connection should wait.
    "relay": (relay_pair, LinkTraits("relay", keeps_bytes=False, close_reaches_peer=False,
                                     ahead_bound=257 * 16 * 1024)),
    # Text only (bytes as their UTF-8 text); what waits for the reader is capped at
    # 8 MiB, past which the link closes (the data channel does not wait for our reader).
    "webrtc": (lambda _: webrtc_pair(),
               LinkTraits("webrtc", keeps_bytes=False, backpressure="closes",
                          ahead_bound=8 * MiB)),
}

KNOWN_DEFECTS: dict[tuple[str, str], str] = {
    ("relay", "a_writer_gets_only_so_far_ahead"): (
        "a relay does not push back on a live sender: what a paused reader's link has no "
        "room for the relay client holds (up to MAX_HELD envelopes) and then drops, so "
        "the writer never waits"),
}


def _cases() -> list[object]:
    out: list[object] = []
    for carrier in CARRIERS:
        for check in CHECKS:
            why = KNOWN_DEFECTS.get((carrier, check))
            marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
            out.append(pytest.param(carrier, check, marks=marks, id=f"{carrier}-{check}"))
    return out


@pytest.mark.parametrize(("carrier", "check"), _cases())
async def test_link_conformance(carrier: str, check: str, tmp_path: Path) -> None:
    pair_for, traits = CARRIERS[carrier]

    @asynccontextmanager
    async def make_pair() -> AsyncIterator[LinkPair]:
        async with pair_for(tmp_path) as pair:
            yield pair

    await run_check(check, make_pair, traits)


# --- the suite bites: links that break the contract fail it --------------------------------


class Reversing(MemoryLink):
    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        await super().send_many(list(reversed(messages)))


class TextOnly(MemoryLink):
    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        await super().send_many([m.decode(errors="replace") if isinstance(m, bytes) else m
                                 for m in messages])


class Mute(MemoryLink):
    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        self.closed = True  # ... and never tells the other end


def _broken(cls: type[MemoryLink], capacity: float = 16) -> Callable[[], object]:
    @asynccontextmanager
    async def make() -> AsyncIterator[LinkPair]:
        a, b = memory_link_pair(capacity=capacity)  # type: ignore[arg-type]
        for end in (a, b):
            end.__class__ = cls
        yield LinkPair(a, b, "b", "a")

    return make


@pytest.mark.parametrize(("make", "check", "traits"), [
    pytest.param(_broken(Reversing), "frames_arrive_in_order_both_ways",
                 LinkTraits("memory"), id="reordering"),
    pytest.param(_broken(TextOnly), "text_and_bytes", LinkTraits("memory"), id="bytes-lost"),
    pytest.param(_broken(Mute), "closing_a_is_seen_by_b", LinkTraits("memory", deadline_s=1),
                 id="close-not-told"),
    pytest.param(_broken(MemoryLink, math.inf), "a_writer_gets_only_so_far_ahead",
                 LinkTraits("memory", ahead_bound=1 << 20), id="unbounded"),
    pytest.param(_broken(MemoryLink), "attributes", LinkTraits("direct"), id="wrong-kind"),
])
async def test_a_link_that_breaks_the_contract_fails_the_check(
    make: Callable[[], AbstractAsyncContextManager[LinkPair]], check: str,
    traits: LinkTraits,
) -> None:
    with pytest.raises(ConformanceError):
        await run_check(check, make, traits)
