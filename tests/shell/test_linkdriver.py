"""The link driver over in-memory links: no sockets, trio's mock clock for time.

A ``HandPeer`` is the far end driven by hand (a bare ``Connection`` on a memory link),
so a test can make it do what a real node never does: finish the handshake and then
stop reading.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import pytest
import trio
import trio.testing

from hd_node.hub.linkdriver import LinkBusy, LinkDriver, LinkLimits
from hd_protocol import Connection, Decision, Identity
from hd_protocol.limits import DEFAULT_LIMITS, Limits
from hd_protocol.peer.connection import (
    Closed,
    Event,
    HandshakeFailed,
    Message,
    NeedAdmission,
    Reply,
    Timeout,
)
from hd_shell.clock import mono_ms, wall_ms
from hd_shell.testing import MemoryLink, memory_link_pair

ALICE = Identity.from_seed(b"\x0a" * 32)
BOB = Identity.from_seed(b"\x0b" * 32)
FAST_PINGS = replace(DEFAULT_LIMITS, ping_interval_ms=500, ping_timeout_ms=500)
NO_PINGS = replace(DEFAULT_LIMITS, ping_interval_ms=3_600_000, ping_timeout_ms=3_600_000)


class Owner:
    """A LinkOwner that admits everyone and writes down what it was told."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.messages: list[Message] = []
        self.opened = 0
        self.done = trio.Event()
        self.sent_frames = 0

    def decide(self, driver: LinkDriver, need: NeedAdmission) -> Decision:
        return Decision("trusted")

    def established(self, driver: LinkDriver) -> None:
        self.opened += 1

    def message(self, driver: LinkDriver, msg: Message) -> None:
        self.messages.append(msg)

    def event(self, driver: LinkDriver, ev: Event) -> None:
        self.events.append(ev)

    def ended(self, driver: LinkDriver) -> None:
        self.done.set()

    def sent(self, driver: LinkDriver, frames: int, nbytes: int) -> None:
        self.sent_frames += frames

    def batch(self) -> Any:
        return nullcontext()

    def closed(self) -> list[Closed]:
        return [e for e in self.events if isinstance(e, Closed)]


class HandPeer:
    """The far end, driven by hand."""

    def __init__(self, link: MemoryLink, limits: Limits) -> None:
        self.link = link
        self.conn = Connection.accept(BOB, rng=os.urandom, now=mono_ms(), wall=wall_ms(),
                                      limits=limits)

    async def handshake(self) -> None:
        while not self.conn.is_open:
            for ev in self.conn.events():
                if isinstance(ev, NeedAdmission):
                    self.conn.admit(Decision("trusted"), mono_ms(), wall_ms())
            frames = self.conn.frames_to_send()
            if frames:
                await self.link.send_many(frames)
            if self.conn.is_open:
                break
            for f in await self.link.receive_some():
                self.conn.receive(f, mono_ms(), wall_ms())
        self.conn.events()

    async def serve(self) -> None:
        """Answer everything (pings included) like an honest node would."""
        while True:
            try:
                frames = await self.link.receive_some()
            except Exception:
                return
            for f in frames:
                self.conn.receive(f, mono_ms(), wall_ms())
            self.conn.events()
            out = self.conn.frames_to_send()
            if out:
                await self.link.send_many(out)


async def open_pair(nursery: trio.Nursery, limits: Limits = DEFAULT_LIMITS,
                    link_limits: LinkLimits | None = None, capacity: int = 16,
                    ) -> tuple[LinkDriver, Owner, HandPeer]:
    ours, theirs = memory_link_pair(capacity=capacity)
    owner = Owner()
    conn = Connection.dial(ALICE, rng=os.urandom, now=mono_ms(), wall=wall_ms(),
                           limits=limits, expected_node_id=BOB.node_id)
    driver = LinkDriver(ours, conn, owner, limits=link_limits or LinkLimits())
    peer = HandPeer(theirs, limits)
    nursery.start_soon(driver.run)
    await peer.handshake()
    await driver.established.wait()
    assert driver.is_open and owner.opened == 1
    return driver, owner, peer


async def test_a_session_opens_and_messages_flow_both_ways(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        driver, owner, peer = await open_pair(n)
        n.start_soon(peer.serve)
        peer.conn.send("peer_chat", {"text": "hi", "from_name": "b"}, mono_ms(), wall_ms())
        await peer.link.send_many(peer.conn.frames_to_send())
        with trio.fail_after(5):
            while not owner.messages:
                await trio.sleep(0.01)
        assert owner.messages[0].data["text"] == "hi"
        driver.close("done")
        await driver.finished.wait()
        assert owner.closed() == [Closed("done", remote=False)]


async def test_a_peer_that_stops_reading_is_dropped_by_the_ping_rule_while_we_keep_working(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        driver, owner, peer = await open_pair(n, FAST_PINGS)
        t0 = trio.current_time()
        # The peer has stopped reading: every send is queued, none blocks us.
        big = {"text": "x" * 10_000, "from_name": "a"}
        for _ in range(100):
            driver.send("peer_chat", big)
        # ... and what the peer still sends is processed at once (no lock, no writer
        # in the way of the reader).
        peer.conn.send("peer_chat", {"text": "still here", "from_name": "b"}, mono_ms(),
                       wall_ms())
        await peer.link.send_many(peer.conn.frames_to_send())
        with trio.fail_after(60):
            await driver.finished.wait()
        assert [m.data["text"] for m in owner.messages] == ["still here"]
        assert owner.closed() == [Closed("timeout", remote=False)]
        assert trio.current_time() - t0 < 10  # 3 missed pings of 0.5 s, then the flush


async def test_a_stuck_write_closes_the_link_at_the_write_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        driver, owner, peer = await open_pair(n, NO_PINGS,
                                              LinkLimits(write_timeout_s=3.0), capacity=2)
        t0 = trio.current_time()
        for _ in range(10):
            driver.send("peer_chat", {"text": "x", "from_name": "a"})
        with trio.fail_after(60):
            await driver.finished.wait()
        assert driver.close_reason == "write_timeout"
        assert owner.closed() == [Closed("write_timeout", remote=True)]
        assert 3.0 <= trio.current_time() - t0 < 4.0


async def test_queueing_past_the_hard_limit_closes_the_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        driver, owner, _ = await open_pair(
            n, NO_PINGS, LinkLimits(soft_limit=10_000, hard_limit=50_000), capacity=1)
        with pytest.raises(LinkBusy):
            for _ in range(100):
                driver.send("peer_chat", {"text": "x" * 5_000, "from_name": "a"})
        assert driver.close_reason == "send_queue_full"
        with trio.fail_after(60):
            await driver.finished.wait()


async def test_a_paced_producer_waits_for_room_instead_of_queueing_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        driver, _, peer = await open_pair(
            n, NO_PINGS, LinkLimits(soft_limit=20_000, hard_limit=200_000), capacity=2)
        sent = 0

        async def producer() -> None:
            nonlocal sent
            for _ in range(50):
                await driver.wait_room()
                driver.send("peer_chat", {"text": "x" * 5_000, "from_name": "a"})
                sent += 1

        n.start_soon(producer)
        await trio.sleep(1)
        assert 0 < sent < 50  # held back: the peer reads nothing
        assert driver.queued_bytes < 200_000
        n.start_soon(peer.serve)  # the peer reads again: everything goes
        with trio.fail_after(30):
            while sent < 50:
                await trio.sleep(0.1)
        driver.close("done")


async def test_a_request_waits_for_its_own_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        driver, _, peer = await open_pair(n)
        # The peer answers pings but never the request itself.
        n.start_soon(peer.serve)
        t0 = trio.current_time()
        result = await driver.call("bench_echo", {}, timeout_ms=20_000)
        assert isinstance(result, Timeout)
        assert trio.current_time() - t0 == pytest.approx(20.0, abs=0.01)
        driver.close("done")


async def test_a_reply_comes_back_to_its_caller(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as n:
        driver, _, peer = await open_pair(n)

        async def echo() -> None:
            while True:
                for f in await peer.link.receive_some():
                    peer.conn.receive(f, mono_ms(), wall_ms())
                for ev in peer.conn.events():
                    if isinstance(ev, Message) and ev.type == "bench_echo":
                        peer.conn.send("bench_echo", {}, mono_ms(), wall_ms(), re=ev.msg_id)
                await peer.link.send_many(peer.conn.frames_to_send())

        n.start_soon(echo)
        result = await driver.call("bench_echo", {"pad": "x"})
        assert isinstance(result, Reply)
        driver.close("done")
        n.cancel_scope.cancel()


async def test_a_handshake_nobody_answers_fails_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, _theirs = memory_link_pair()
    owner = Owner()
    conn = Connection.dial(ALICE, rng=os.urandom, now=mono_ms(), wall=wall_ms())
    driver = LinkDriver(ours, conn, owner)
    t0 = trio.current_time()
    await driver.run()
    (failed,) = [e for e in owner.events if isinstance(e, HandshakeFailed)]
    assert failed.reason == "timeout"
    assert trio.current_time() - t0 == pytest.approx(DEFAULT_LIMITS.handshake_timeout_ms / 1000,
                                                     abs=0.01)
    assert owner.done.is_set()


# --- one drain loop: a handler's call only queues ----------------------------------------


class Recorder(Owner):
    """An owner that logs when each handler starts and ends, and how deeply they nest."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []
        self.depth = 0
        self.max_depth = 0
        self.on_message: Any = None  # what a message handler does, set by the test
        self.on_event: Any = None

    def _enter(self, what: str) -> None:
        self.depth += 1
        self.max_depth = max(self.max_depth, self.depth)
        self.log.append(f"{what}>")

    def _leave(self, what: str) -> None:
        self.log.append(f"<{what}")
        self.depth -= 1

    def message(self, driver: LinkDriver, msg: Message) -> None:
        self._enter(msg.data["text"])
        super().message(driver, msg)
        if self.on_message is not None:
            self.on_message(driver, msg)
        self._leave(msg.data["text"])

    def event(self, driver: LinkDriver, ev: Event) -> None:
        name = type(ev).__name__
        self._enter(name)
        super().event(driver, ev)
        if self.on_event is not None:
            self.on_event(driver, ev)
        self._leave(name)


async def open_recorded(nursery: trio.Nursery) -> tuple[LinkDriver, Recorder, HandPeer]:
    ours, theirs = memory_link_pair(capacity=1024)
    owner = Recorder()
    conn = Connection.dial(ALICE, rng=os.urandom, now=mono_ms(), wall=wall_ms(),
                           limits=NO_PINGS, expected_node_id=BOB.node_id)
    driver = LinkDriver(ours, conn, owner)
    peer = HandPeer(theirs, NO_PINGS)
    nursery.start_soon(driver.run)
    await peer.handshake()
    await driver.established.wait()
    return driver, owner, peer


async def test_a_handler_that_closes_finishes_before_closed_is_handed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        driver, owner, peer = await open_recorded(n)
        owner.on_message = lambda d, m: d.close("enough")
        peer.conn.send("peer_chat", {"text": "m", "from_name": "b"}, mono_ms(), wall_ms())
        await peer.link.send_many(peer.conn.frames_to_send())
        with trio.fail_after(5):
            await driver.finished.wait()
        assert owner.log == ["m>", "<m", "Closed>", "<Closed"]
        assert owner.max_depth == 1
        assert owner.closed() == [Closed("enough", remote=False)]
        # ... and the bye the close queued still went out.
        with trio.fail_after(5):
            for f in await peer.link.receive_some():
                peer.conn.receive(f, mono_ms(), wall_ms())
        assert peer.conn.closed == Closed("enough", remote=True)


async def test_handlers_that_send_from_many_events_never_nest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 600 requests time out at the same instant: one handle_timer queues 600 Timeouts,
    # and each one's handler sends a frame. A drain re-entered from send would hand out
    # the next Timeout inside the previous handler, 600 deep.
    count = 600
    async with trio.open_nursery() as n:
        driver, owner, peer = await open_recorded(n)
        n.start_soon(peer.serve)
        answered: list[str] = []

        def on_result(res: Any) -> None:
            assert isinstance(res, Timeout)
            answered.append(res.request_id)
            driver.send("peer_chat", {"text": f"after {res.request_id}", "from_name": "a"})

        ids = [driver.request("bench_echo", {}, on_result, timeout_ms=1000)
               for _ in range(count)]
        with trio.fail_after(10):
            while len(answered) < count:
                await trio.sleep(0.1)
        assert answered == ids  # in the order they were asked
        assert owner.max_depth == 1
        timeouts = [e for e in owner.events if isinstance(e, Timeout)]
        assert [t.request_id for t in timeouts] == ids
        # the first ping's Pong may come in between; nothing else does, nothing nests
        assert [s for s in owner.log if "Pong" not in s] == ["Timeout>", "<Timeout"] * count
        assert driver.is_open
        driver.close("done")


async def test_a_close_from_a_handler_comes_after_the_events_already_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        driver, owner, _ = await open_recorded(n)

        def close_on_first(d: LinkDriver, ev: Event) -> None:
            if isinstance(ev, Timeout) and not owner.closed():
                d.close("first_timeout")

        owner.on_event = close_on_first
        for _ in range(3):
            driver.request("bench_echo", {}, lambda res: None, timeout_ms=1000)
        with trio.fail_after(10):
            await driver.finished.wait()
        assert owner.log == ["Timeout>", "<Timeout"] * 3 + ["Closed>", "<Closed"]
        assert owner.max_depth == 1


async def test_a_close_from_outside_any_handler_is_handed_out_before_it_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        driver, owner, _ = await open_recorded(n)
        driver.close("bye_now")
        assert owner.log == ["Closed>", "<Closed"]
        with trio.fail_after(5):
            await driver.finished.wait()
