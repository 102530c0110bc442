"""hd_shell.cluster.Bus against a real nats-server (the venv's, on free loopback ports):
subjects, KV compare-and-set, per-key TTL, and a bus that goes away and comes back."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from natsservers import NatsServer, nats_cluster, nats_server

from hd_shell.cluster import (
    Bus,
    ClusterUnavailable,
    KeyExists,
    Write,
    WrongRevision,
    sessions,
)
from hd_shell.kv import WATCH_BATCH

DEADLINE_S = 20.0
T = TypeVar("T")


async def wait_for(cond: object, what: str, timeout_s: float = DEADLINE_S) -> None:
    assert callable(cond)
    with trio.fail_after(timeout_s):
        while not cond():
            await trio.sleep(0.02)


async def until_available(call: Callable[[], Awaitable[T]]) -> T:
    with trio.fail_after(DEADLINE_S):
        while True:
            try:
                return await call()
            except ClusterUnavailable:
                await trio.sleep(0.2)


@pytest.mark.parametrize("at_once", [False, True], ids=["one_by_one", "publish_many"])
async def test_what_one_instance_publishes_another_receives_in_order_on_each_subject(
    tmp_path: Path, at_once: bool,
) -> None:
    sent = [(f"hd.node.n{i % 3}", b"x%d" % i) for i in range(30)]
    with nats_server(tmp_path) as server, trio.fail_after(DEADLINE_S):
        async with Bus([server.url], name="a").running() as a, \
                Bus([server.url], name="b").running() as b:
            await wait_for(lambda: a.connected and b.connected, "both connected")
            async with b.subscribe("hd.node.*") as inbox:
                await a._call(a._nc.flush)  # noqa: SLF001 - the subscription is in place
                await trio.sleep(0.05)
                if at_once:  # one crossing to the asyncio side for the whole batch
                    await a.publish_many(sent)
                    await a.publish_many([])  # nothing: no call, no error
                else:
                    for subject, data in sent:
                        await a.publish(subject, data)
                got = [await inbox.receive() for _ in range(len(sent))]
    assert [(m.subject, m.data) for m in got] == sent


async def test_a_key_is_created_once_and_updated_only_against_its_last_revision(
    tmp_path: Path,
) -> None:
    with nats_server(tmp_path) as server, trio.fail_after(DEADLINE_S):
        async with Bus([server.url], name="a").running() as a, \
                Bus([server.url], name="b").running() as b:
            await wait_for(lambda: a.connected and b.connected, "both connected")
            ka, kb = await a.bucket("presence"), await b.bucket("presence")
            first = await ka.create("n1", b"on-a")
            with pytest.raises(KeyExists):
                await kb.create("n1", b"on-b")
            second = await kb.update("n1", b"on-b", first)  # newest wins, by CAS
            with pytest.raises(WrongRevision):
                await ka.update("n1", b"on-a-again", first)  # a's view is stale
            entry = await ka.get("n1")
            assert entry is not None and (entry.value, entry.revision) == (b"on-b", second)
            assert await ka.keys() == ["n1"]
            await kb.delete("n1")
            assert await ka.get("n1") is None
            # A deleted key (its last word is a delete marker) is free to create again:
            # a node that left and came back is registered anew, by whichever instance.
            third = await ka.create("n1", b"back-on-a")
            with pytest.raises(KeyExists):
                await kb.create("n1", b"back-on-b")
            entry = await kb.get("n1")
            assert entry is not None and (entry.value, entry.revision) == (b"back-on-a", third)


async def test_many_writes_in_one_call_each_answer_as_a_single_write_would(
    tmp_path: Path,
) -> None:
    """``write_many``: creates, compare-and-set updates, puts and deletes at once, each
    with the answer (a revision, KeyExists, WrongRevision) its single call gives."""
    with nats_server(tmp_path) as server, trio.fail_after(DEADLINE_S):
        async with Bus([server.url], name="a").running() as a:
            await wait_for(lambda: a.connected, "connected")
            kv = await a.bucket("many")
            taken = await kv.create("taken", b"first")
            old = await kv.put("old", b"v1")
            now = await kv.update("old", b"v2", old)
            gone = await kv.put("gone", b"x")
            fresh = [Write(f"n{i}", f"v{i}".encode(), 0) for i in range(300)]
            got = await kv.write_many([
                *fresh,
                Write("taken", b"second", 0),      # create of a key that has a value
                Write("old", b"v3", old),          # against a stale revision
                Write("put", b"anything"),         # whatever the key holds
                Write("gone", None, gone),         # delete against its last revision
                Write("old", None, old),           # delete against a stale one
            ])
            revs, rest = got[:300], got[300:]
            assert all(type(r) is int for r in revs) and len(set(revs)) == 300
            assert isinstance(rest[0], KeyExists) and isinstance(rest[1], WrongRevision)
            assert type(rest[2]) is int and rest[3] == 0 and isinstance(rest[4], WrongRevision)
            entries = await kv.get_many(["n0", "n299", "taken", "old", "gone", "never"])
            assert [(e.value, e.revision) if e else None for e in entries] == [
                (b"v0", revs[0]), (b"v299", revs[299]), (b"first", taken), (b"v2", now),
                None, None]
            assert await kv.write_many([]) == [] and await kv.get_many([]) == []


async def test_a_session_ends_when_any_of_its_tasks_finds_the_bus_failing_and_the_next_starts(
    tmp_path: Path,
) -> None:
    """A call that times out inside one task of a session (its error comes out in an
    exception group) ends that session, never the server: the next one starts."""
    ended: list[ClusterUnavailable] = []
    started: list[int] = []

    async def session() -> None:
        started.append(1)

        async def task() -> None:
            raise ClusterUnavailable("the cluster bus did not answer in time")

        async with trio.open_nursery() as n:
            n.start_soon(task)
            await trio.sleep_forever()

    with nats_server(tmp_path) as server, trio.fail_after(DEADLINE_S):
        async with Bus([server.url], name="a").running() as a:
            await wait_for(lambda: a.connected, "connected")
            async with trio.open_nursery() as n:
                n.start_soon(partial(sessions, a, session, on_end=ended.append))
                await wait_for(lambda: len(ended) >= 2, "two sessions ended")
                n.cancel_scope.cancel()
    assert len(started) >= 2
    assert {str(e) for e in ended} == {"the cluster bus did not answer in time"}


async def test_a_value_with_a_ttl_expires_when_nobody_refreshes_it(tmp_path: Path) -> None:
    with nats_server(tmp_path) as server, trio.fail_after(DEADLINE_S):
        async with Bus([server.url], name="a").running() as a:
            await wait_for(lambda: a.connected, "connected")
            kv = await a.bucket("presence")
            await kv.create("gone", b"1", ttl_s=1.0)
            await kv.create("kept", b"1")
            assert await kv.get("gone") is not None
            await trio.sleep(2.5)
            assert await kv.get("gone") is None
            assert await kv.get("kept") is not None


async def test_a_bus_that_goes_away_refuses_with_unavailable_and_recovers(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path).start()
    try:
        with trio.fail_after(3 * DEADLINE_S):
            async with Bus([server.url], name="a").running() as a:
                await wait_for(lambda: a.connected, "connected")
                kv = await a.bucket("mail")
                await kv.create("k", b"kept")
                server.stop(signal.SIGKILL)
                await wait_for(lambda: not a.connected, "loss seen")
                with pytest.raises(ClusterUnavailable) as info:
                    await kv.create("k2", b"never")
                assert info.value.code == "unavailable" and a.errors >= 1
                server.start()  # same ports, same store
                await wait_for(lambda: a.connected, "reconnected")
                entry = await kv.get("k")
                assert entry is not None and entry.value == b"kept"
                await kv.create("k2", b"now")
    finally:
        server.stop()


async def test_a_three_server_cluster_keeps_a_replicated_key_when_one_server_dies(
    tmp_path: Path,
) -> None:
    with nats_cluster(tmp_path) as servers, trio.fail_after(3 * DEADLINE_S):
        urls = [s.url for s in servers]
        async with Bus(urls, name="a").running() as a:
            await wait_for(lambda: a.connected, "connected")
            kv = await a.bucket("mail", replicas=3)

            async def create() -> None:
                try:
                    await kv.create("k", b"kept")
                except KeyExists:
                    pass  # an earlier try was stored though its answer came too late

            await until_available(create)  # a loaded machine may still elect the leader
            servers[0].stop(signal.SIGKILL)
            async with Bus(urls[1:], name="b").running() as b:
                await wait_for(lambda: b.connected, "b connected")
                # While the servers elect new leaders the bus answers ``unavailable``;
                # a server shell tries again, as here.
                kb = await until_available(lambda: b.bucket("mail", replicas=3))
                entry = await until_available(lambda: kb.get("k"))
                assert entry is not None and entry.value == b"kept"


async def test_a_flood_on_a_subject_is_dropped_past_the_subscribers_queue_not_held(
    tmp_path: Path,
) -> None:
    """Another instance (or anyone on the bus) floods a subject this one listens to and
    this one is not reading: its queue stays at its bound, the rest is counted as dropped,
    and the bus still answers."""
    with nats_server(tmp_path) as server, trio.fail_after(DEADLINE_S):
        async with Bus([server.url], name="a").running() as a, \
                Bus([server.url], name="b").running() as b:
            await wait_for(lambda: a.connected and b.connected, "both connected")
            async with b.subscribe("hd.flood", limit=16) as inbox:
                await trio.sleep(0.05)
                for i in range(2000):
                    await a.publish("hd.flood", b"%d" % i)
                # Each message is queued or counted as dropped (by nats-py's pending limit
                # or by ours), once nats-py's own queue of at most 16 has drained.
                await wait_for(lambda: b.dropped + inbox.statistics().current_buffer_used
                               >= 2000 - 16, "the flood arrived")
                assert inbox.statistics().current_buffer_used == 16
            kv = await b.bucket("after")
            assert await kv.create("k", b"still served") > 0


async def test_a_watch_gives_every_last_value_then_each_change_in_order(tmp_path: Path) -> None:
    keys = WATCH_BATCH + 8  # with "x": the first values fill one batch and spill into more
    # Hundreds of writes one after another: the default call deadline (2 s) is no part of
    # what the watch must do, and one write in 700 once missed it on a loaded machine.
    call_s = 10.0
    with nats_server(tmp_path) as server, trio.fail_after(DEADLINE_S):
        async with Bus([server.url], name="a", call_timeout_s=call_s).running() as a, \
                Bus([server.url], name="b", call_timeout_s=call_s).running() as b:
            await wait_for(lambda: a.connected and b.connected, "both connected")
            ka, kb = await a.bucket("dir"), await b.bucket("dir")
            for i in range(keys):
                await ka.create(f"n{i}", b"v%d" % i)
            n0 = await ka.get("n0")
            assert n0 is not None
            await ka.update("n0", b"v0b", n0.revision)
            await ka.create("x", b"1")
            async with kb.watch() as next_batch:
                first: list[tuple[str, bytes]] = []
                while (batch := await next_batch()) is not None:
                    first += [(e.key, e.value) for e in batch]
                assert len(first) == keys + 1
                assert sorted(k for k, _ in first) == sorted([f"n{i}" for i in range(keys)]
                                                             + ["x"])  # each key once
                assert dict(first)["n0"] == b"v0b"
                await ka.delete("n5")
                rev = await ka.update("x", b"2", (await ka.get("x")).revision)  # type: ignore[union-attr]
                changes = await next_batch()
                while changes is not None and len(changes) < 2:
                    changes += await next_batch() or []
    assert changes is not None
    assert [(e.key, e.deleted) for e in changes] == [("n5", True), ("x", False)]
    assert changes[1].revision == rev
