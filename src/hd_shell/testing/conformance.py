"""The link conformance suite: what every ``Link`` must do, whatever carries it.

Frames in order both ways, text kept, closes seen by the peer within a deadline, a
closed end refusing to work, bounded buffering (``hd_shell.link``). Where a carrier
legitimately differs, ``LinkTraits`` says how and the check asserts that behaviour
instead — nothing is skipped. Each check takes a fresh ``LinkPair``; ``run_check`` makes
one and closes it afterwards, ``check_link_pair`` runs them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import trio

from hd_protocol import Envelope
from hd_shell.link import Link, LinkClosed

from .pairs import LinkPair, MakePair


@dataclass(frozen=True)
class LinkTraits:
    """What a carrier does where carriers legitimately differ."""

    kind: str
    # A bytes frame arrives as the same bytes (False: the carrier moves text only, and a
    # bytes frame arrives as the UTF-8 text it holds).
    keeps_bytes: bool = True
    # Closing one end makes the other's receive_some raise (False: nothing tells the
    # peer; over a relay the session's bye and its ping rule do that).
    close_reaches_peer: bool = True
    # A writer whose reader stopped reading: "blocks" (its send_many waits) or "closes"
    # (the reader's end closes once its queue is full) — after at most ``ahead_bound``
    # bytes either way.
    backpressure: Literal["blocks", "closes"] = "blocks"
    ahead_bound: int = 1 << 20
    big_frame: int = 256 * 1024  # a frame this big passes once both ends authenticated
    deadline_s: float = 10.0  # for any one wait on the carrier
    quiet_s: float = 0.5  # how long "nothing happens" is watched for


class ConformanceError(AssertionError):
    """A Link implementation broke the link contract."""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise ConformanceError(what)


FRAME_BYTES = 16 * 1024  # the backpressure check's frame size


# --- the checks ---------------------------------------------------------------------------


async def _receive_n(pair: LinkPair, link: Link, n: int, deadline_s: float,
                     ) -> list[str | bytes | Envelope]:
    got: list[str | bytes | Envelope] = []
    with trio.fail_after(deadline_s):
        while len(got) < n:  # (n may be 0: then nothing more must come)
            batch = await link.receive_some()
            _expect(len(batch) > 0, "receive_some returned no frame")
            got.extend(batch)
    _expect(len(got) == n, f"{len(got) - n} frames more than were sent")
    return got


async def _exchange(pair: LinkPair, frames: Sequence[str | bytes], traits: LinkTraits,
                    ) -> list[str | bytes | Envelope]:
    """``a`` sends ``frames`` while ``b`` reads them (a carrier may hold a writer back
    until its reader reads), all under one deadline."""
    got: list[str | bytes | Envelope] = []

    async def read() -> None:
        got.extend(await _receive_n(pair, pair.b, len(frames), traits.deadline_s))

    with trio.fail_after(traits.deadline_s):
        async with trio.open_nursery() as n:
            n.start_soon(read)
            await pair.a.send_many(frames)
    return got


async def _raises_closed(call: Callable[[], Awaitable[object]], deadline_s: float,
                         what: str) -> None:
    with trio.move_on_after(deadline_s):
        try:
            await call()
        except LinkClosed:
            return
        raise ConformanceError(f"{what} did not raise LinkClosed")
    raise ConformanceError(f"{what} did not raise LinkClosed within {deadline_s} s")


async def _drain_until_closed(link: Link, deadline_s: float) -> list[str | bytes | Envelope]:
    got: list[str | bytes | Envelope] = []
    with trio.fail_after(deadline_s):
        try:
            while True:
                got += await link.receive_some()
        except LinkClosed:
            return got


async def check_attributes(pair: LinkPair, traits: LinkTraits) -> None:
    """``kind`` and ``remote_addr`` say what carries the link and who is at the other end;
    ``authenticated`` is a plain call that changes nothing a test can see here."""
    for end, sees in ((pair.a, pair.a_sees), (pair.b, pair.b_sees)):
        _expect(end.kind == traits.kind, f"kind is {end.kind!r}, not {traits.kind!r}")
        _expect(end.remote_addr == sees, f"remote_addr is {end.remote_addr!r}, not {sees!r}")
        end.authenticated()


async def check_frames_arrive_in_order_both_ways(pair: LinkPair, traits: LinkTraits) -> None:
    """Batches of every size, both directions at once (one reader and one writer per
    end, concurrently): everything arrives once, in order."""
    sizes = [1, 7, 64, 1, 128, 3]
    out: dict[int, list[str]] = {s: [f"{s}:{i}" for i in range(sum(sizes))] for s in (0, 1)}
    got: dict[int, list[str | bytes]] = {}

    async def write(sender: int, link: Link) -> None:
        payloads = iter(out[sender])
        for n in sizes:
            await link.send_many([pair.encode(sender, next(payloads)) for _ in range(n)])

    async def read(receiver: int, link: Link) -> None:
        frames = await _receive_n(pair, link, sum(sizes), traits.deadline_s)
        got[receiver] = [pair.decode(f) for f in frames]

    with trio.fail_after(traits.deadline_s):
        async with trio.open_nursery() as n:
            n.start_soon(write, 0, pair.a)
            n.start_soon(write, 1, pair.b)
            n.start_soon(read, 1, pair.b)
            n.start_soon(read, 0, pair.a)
    _expect(got[1] == out[0], "a -> b: frames lost, doubled or out of order")
    _expect(got[0] == out[1], "b -> a: frames lost, doubled or out of order")


async def check_a_big_frame_arrives_whole(pair: LinkPair, traits: LinkTraits) -> None:
    pair.a.authenticated()
    pair.b.authenticated()
    big = "".join(chr(0x41 + i % 26) for i in range(traits.big_frame))
    got = [pair.decode(f) for f in
           await _exchange(pair, [pair.encode(0, big), pair.encode(0, "after")], traits)]
    _expect(got == [big, "after"], "a big frame did not arrive whole, or not in order")


async def check_text_and_bytes(pair: LinkPair, traits: LinkTraits) -> None:
    """Text arrives as the same text (any unicode, and empty); bytes as the same bytes,
    or, on a text-only carrier, as the text they encode."""
    texts = ["plain", "ünïcødé ✓ \U0001f600", "", '{"json": [1, 2]}']
    frames: list[str | bytes] = [pair.encode(0, t) for t in texts]
    if traits.keeps_bytes:
        raw = [b"\x00\xff\x80 not utf-8", b"", "é".encode()]
        frames += raw
    else:
        frames += [pair.encode(0, t).encode() for t in texts]
    got = await _exchange(pair, frames, traits)
    for i, t in enumerate(texts):
        _expect(pair.decode(got[i]) == t and not isinstance(got[i], bytes),
                f"text frame {i} arrived as {got[i]!r}")
    for i, sent in enumerate(frames[len(texts):], len(texts)):
        if traits.keeps_bytes:
            _expect(got[i] == sent and isinstance(got[i], bytes),
                    f"bytes frame {sent!r} arrived as {got[i]!r}")
        else:
            _expect(not isinstance(got[i], bytes)
                    and pair.decode(got[i]) == texts[i - len(texts)],
                    f"bytes frame {i} arrived as {got[i]!r}, not as the text it holds")


async def _check_close_from(pair: LinkPair, traits: LinkTraits, closer: int) -> None:
    near, far = (pair.a, pair.b) if closer == 0 else (pair.b, pair.a)
    with trio.fail_after(traits.deadline_s):
        await near.aclose(1000, "done")
    await _raises_closed(lambda: near.send_many([pair.encode(closer, "late")]),
                         traits.deadline_s, "send_many on the end that closed")
    await _raises_closed(near.receive_some, traits.deadline_s,
                         "receive_some on the end that closed")
    if not traits.close_reaches_peer:
        with trio.move_on_after(traits.quiet_s) as quiet:
            await far.receive_some()
        _expect(quiet.cancelled_caught, "the peer heard of a close it should not hear of")
        with trio.fail_after(traits.deadline_s):
            await far.send_many([pair.encode(1 - closer, "into the void")])
        return
    await _raises_closed(far.receive_some, traits.deadline_s,
                         "receive_some at the peer of the end that closed")
    await _raises_closed(far.receive_some, traits.deadline_s, "a second receive_some there")
    await _raises_closed(lambda: far.send_many([pair.encode(1 - closer, "late")]),
                         traits.deadline_s, "send_many at the peer of the end that closed")


async def check_closing_a_is_seen_by_b(pair: LinkPair, traits: LinkTraits) -> None:
    await _check_close_from(pair, traits, 0)


async def check_closing_b_is_seen_by_a(pair: LinkPair, traits: LinkTraits) -> None:
    await _check_close_from(pair, traits, 1)


async def check_frames_sent_before_a_close_arrive_first(pair: LinkPair,
                                                        traits: LinkTraits) -> None:
    """What ``send_many`` returned from is delivered even if ``aclose`` follows at once
    (the session's last words, a ``bye``, depend on it)."""
    payloads = [f"last {i}" for i in range(20)]

    async def last_words() -> None:
        with trio.fail_after(traits.deadline_s):
            await pair.a.send_many([pair.encode(0, p) for p in payloads])
            await pair.a.aclose(1000, "bye")

    async with trio.open_nursery() as n:
        n.start_soon(last_words)
        if traits.close_reaches_peer:
            got = await _drain_until_closed(pair.b, traits.deadline_s)
        else:
            got = await _receive_n(pair, pair.b, len(payloads), traits.deadline_s)
    _expect([pair.decode(f) for f in got] == payloads, "frames before the close were lost")


async def check_aclose_is_idempotent_and_never_raises(pair: LinkPair,
                                                      traits: LinkTraits) -> None:
    with trio.fail_after(traits.deadline_s):
        await pair.a.aclose()
        await pair.a.aclose()
        await pair.b.aclose(4000, "again")  # after its peer closed
        await pair.b.aclose()


async def check_a_cancelled_receive_loses_nothing(pair: LinkPair, traits: LinkTraits) -> None:
    """A ``receive_some`` cancelled while it waits, or as it starts, takes nothing with
    it (one that returns, without a checkpoint, returns what it took)."""
    frames: list[str | bytes | Envelope] = []
    with trio.move_on_after(traits.quiet_s / 5):
        frames += await pair.b.receive_some()
    with trio.fail_after(traits.deadline_s):
        await pair.a.send_many([pair.encode(0, "one"), pair.encode(0, "two")])
    with trio.move_on_after(0):  # cancelled at once, maybe with frames already there
        frames += await pair.b.receive_some()
    frames += await _receive_n(pair, pair.b, 2 - len(frames), traits.deadline_s)
    got = [pair.decode(f) for f in frames]
    _expect(got == ["one", "two"], f"after cancelled receives: {got!r}")


async def check_a_writer_gets_only_so_far_ahead(pair: LinkPair, traits: LinkTraits) -> None:
    """A reader that stops reading costs its writer at most ``ahead_bound`` bytes of
    buffering: then the writer waits, or the reader's end closes (``backpressure``)."""
    pair.a.authenticated()
    pair.b.authenticated()
    count = 2 * traits.ahead_bound // FRAME_BYTES + 2
    payloads = [f"{i}:".ljust(FRAME_BYTES, "x") for i in range(count)]
    sent = [0]
    done = trio.Event()

    async def writer() -> None:
        try:
            for p in payloads:
                await pair.a.send_many([pair.encode(0, p)])
                sent[0] += 1
        except LinkClosed:
            pass
        done.set()

    got: list[str | bytes | Envelope] = []
    with trio.fail_after(traits.deadline_s * 12):
        async with trio.open_nursery() as n:
            n.start_soon(writer)
            while not done.is_set():  # until the writer stops making progress
                before = sent[0]
                await trio.sleep(traits.quiet_s)
                if sent[0] == before:
                    break
            stalled, ahead = not done.is_set(), sent[0] * FRAME_BYTES
            # A carrier that closes past its bound may also make its writer wait before
            # that (aiortc's SCTP window does, depending on timing): both keep the bound.
            waited = stalled and ahead <= traits.ahead_bound
            if traits.backpressure == "closes" and not waited:
                got = await _drain_until_closed(pair.b, traits.deadline_s)
                n.cancel_scope.cancel()
            elif waited:
                got = await _receive_n(pair, pair.b, count, traits.deadline_s * 6)
                await done.wait()  # the writer went on once its reader read
            else:
                n.cancel_scope.cancel()
    if traits.backpressure == "blocks" or waited:
        _expect(waited,
                f"the writer got {ahead} bytes ahead of a reader that reads nothing")
        _expect([pair.decode(f) for f in got] == payloads,
                "once read again, not everything arrived in order")
    else:
        _expect(len(got) * FRAME_BYTES <= traits.ahead_bound + FRAME_BYTES,
                f"the reader's end held {len(got) * FRAME_BYTES} bytes before closing")
        _expect([pair.decode(f) for f in got] == payloads[:len(got)],
                "what the reader got before its end closed is not a prefix in order")


Check = Callable[[LinkPair, LinkTraits], Awaitable[None]]
CHECKS: dict[str, Check] = {
    f.__name__.removeprefix("check_"): f for f in (
        check_attributes, check_frames_arrive_in_order_both_ways,
        check_a_big_frame_arrives_whole, check_text_and_bytes,
        check_closing_a_is_seen_by_b, check_closing_b_is_seen_by_a,
        check_frames_sent_before_a_close_arrive_first,
        check_aclose_is_idempotent_and_never_raises, check_a_cancelled_receive_loses_nothing,
        check_a_writer_gets_only_so_far_ahead,
    )
}


async def run_check(name: str, make_pair: MakePair, traits: LinkTraits) -> None:
    """One check on a fresh pair (closed afterwards, whatever the check did)."""
    async with make_pair() as pair:
        try:
            await CHECKS[name](pair, traits)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(traits.deadline_s):
                async with trio.open_nursery() as n:  # at once: each close may wait
                    n.start_soon(pair.a.aclose)      # for the other's answer
                    n.start_soon(pair.b.aclose)


async def check_link_pair(make_pair: MakePair, traits: LinkTraits) -> None:
    """Every check, each on a fresh pair from ``make_pair``."""
    for name in CHECKS:
        await run_check(name, make_pair, traits)
