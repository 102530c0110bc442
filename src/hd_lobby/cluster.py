"""The lobby's cluster adapter: ``ClusteredLobby``'s effects to NATS and back
(docs/cluster.md).

- ``ClaimNode``: the node's record in KV ``hd_lobby_nodes`` — create, else a
  compare-and-set on the revision just read (newest wins); the revision written goes
  back to the machine (``claimed``);
- ``ReleaseNode``: delete it, only if it is still the revision we wrote (or was given);
- ``PutRoom``/``DropRoom``: KV ``hd_lobby_rooms`` (a room's record has one writer: its
  host's instance);
- ``ToInstance``: batched per instance, one message on ``hd.lobby.to.<instance>``;
- both buckets are watched: every instance reads every change once (the directory's
  fan-out is per instance; each instance then batches presence to its own nodes);
- ``hd.lobby.alive`` every few seconds says this instance is alive.

The bus can go: effects then fail fast (``ClusterUnavailable``) and are dropped; the
instance keeps serving its own nodes, and when the bus is back it writes everything it
holds again (``resync``) and reads everything the others hold (a new watch). A write
the bus does not answer though it stays connected (a loaded server) is tried again, and
then ends the session the same way: no write to the shared state is lost quietly.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import trio

from hd_protocol.brokers.cluster_view import (
    ALIVE_EVERY_MS,
    ClaimNode,
    DropRoom,
    PutRoom,
    ReleaseNode,
    ToInstance,
    pack,
)
from hd_protocol.brokers.lobby_cluster import Change, ClusteredLobby
from hd_shell.clock import mono_ms
from hd_shell.cluster import (
    Bucket,
    Burst,
    Bus,
    ClusterUnavailable,
    Entry,
    KeyExists,
    Write,
    WrongRevision,
    retried,
    sessions,
)

NODES = "hd_lobby_nodes"
ROOMS = "hd_lobby_rooms"
ALIVE = "hd.lobby.alive"
OUTBOX = 65_536  # effects waiting for the bus
CLAIM_TRIES = 8
WRITES_PER_CALL = 256  # writes to the bus in one call, at most
# In a burst (``Burst``) an effect waits WRITE_LINGER_S for more: a bus call is a wakeup
# of the asyncio thread. Effects now and then go at once.
WRITE_LINGER_S = 0.01
MESSAGE_ITEMS = 256  # messages for one instance per bus message, at most

Effect = ClaimNode | ReleaseNode | PutRoom | DropRoom | ToInstance


def inbox_subject(instance: str) -> str:
    return f"hd.lobby.to.{instance}"


class LobbyCluster:
    def __init__(self, bus: Bus, machine: ClusteredLobby,
                 apply: Callable[[Sequence[Any]], None], log: logging.Logger) -> None:
        """``apply``: carry out the machine's outputs (the lobby's frame server)."""
        self.bus = bus
        self.machine = machine
        self._apply = apply
        self.log = log
        self.replicas = min(3, len(bus.urls))
        self.dropped = 0  # effects that found the bus gone (a resync writes them again)
        self._send, self._recv = trio.open_memory_channel[Effect](OUTBOX)
        self._own: dict[str, int] = {}  # node -> the revision of the record we wrote

    # --- the machine's side -------------------------------------------------------------

    def effect(self, out: Any) -> Sequence[Any]:
        """The frame server's hook for the machine's cluster effects."""
        if isinstance(out, ClaimNode | ReleaseNode | PutRoom | DropRoom | ToInstance):
            try:
                self._send.send_nowait(out)
            except trio.WouldBlock:
                self.dropped += 1
        return []

    # --- life ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Sessions with the bus, one after another, for as long as the lobby runs."""
        def ended(exc: ClusterUnavailable) -> None:
            self.log.info("cluster session ended instance=%s reason=%s",
                          self.machine.instance, exc)

        await sessions(self.bus, self._session, on_end=ended)

    async def _session(self) -> None:
        nodes = await self.bus.bucket(NODES, replicas=self.replicas)
        rooms = await self.bus.bucket(ROOMS, replicas=self.replicas)
        async with self.bus.subscribe(inbox_subject(self.machine.instance)) as inbox, \
                self.bus.subscribe(ALIVE) as alive, trio.open_nursery() as n:
            while True:  # what waited for the bus is stale: the resync says it all again
                try:
                    self._recv.receive_nowait()
                except trio.WouldBlock:
                    break
            self._own.clear()
            self._apply(self.machine.resync(mono_ms()))
            n.start_soon(self._writer, nodes, rooms)
            n.start_soon(self._watch, nodes, True)
            n.start_soon(self._watch, rooms, False)
            n.start_soon(self._inbox, inbox)
            n.start_soon(self._alive_in, alive)
            n.start_soon(self._alive_out)
            while self.bus.connected:
                await self.bus.changed.wait()
            n.cancel_scope.cancel()
        raise ClusterUnavailable("the bus went away")

    # --- out -------------------------------------------------------------------------------

    async def _writer(self, nodes: Bucket, rooms: Bucket) -> None:
        burst = Burst()
        while True:
            batch = [await self._recv.receive()]
            if burst.busy(trio.current_time()):  # in a burst: fewer, larger bus calls
                await trio.sleep(WRITE_LINGER_S)
            while len(batch) < 1024:
                try:
                    batch.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
            # Writes to one key keep their order; different keys go to the bus at once,
            # in one call (a call per write was most of the lobby's cluster cost).
            writes: dict[tuple[bool, str], list[Any]] = defaultdict(list)
            for e in batch:
                if isinstance(e, ToInstance):
                    messages[e.instance].append(e.message)
                elif isinstance(e, ClaimNode | ReleaseNode):
                    writes[True, e.node].append(e)
                else:
                    writes[False, e.room["id"] if isinstance(e, PutRoom) else e.room_id
                           ].append(e)
            if writes:
                await self._write_rounds(nodes, rooms, writes)
            out: list[tuple[str, bytes]] = []
            for instance, msgs in messages.items():  # after the writes they may refer to
                lists, too_big = pack([json.dumps(m).encode() for m in msgs],
                                      max_bytes=self.bus.max_payload, max_items=MESSAGE_ITEMS)
                out += [(inbox_subject(instance), data) for data in lists]
                self.dropped += len(too_big)  # a frame is far below any bus's payload
            try:
                await self.bus.publish_many(out)
            except ClusterUnavailable:
                self.dropped += sum(len(msgs) for msgs in messages.values())

    async def _write_rounds(self, nodes: Bucket, rooms: Bucket,
                            writes: dict[tuple[bool, str], list[Any]]) -> None:
        """The writes in rounds: each round makes the first pending write of every key,
        all at once in one bus call per bucket; a key's next write waits for the next
        round, so writes to one key keep their order. A claim that finds the record
        written by someone else reads its revision and tries again in the next round.
        A round the bus does not take is tried again (``retried``): all of its writes
        can be made twice. One the bus keeps failing ends the session."""
        queues = {key: collections.deque(ws) for key, ws in writes.items()}
        base: dict[str, int | None] = {}  # node -> revision a retried claim writes against
        tries: dict[str, int] = defaultdict(int)
        while queues:
            heads = [(key, q[0]) for key, q in queues.items()]
            node_heads = [(k[1], e) for k, e in heads if k[0]]
            room_heads = [(k[1], e) for k, e in heads if not k[0]]
            node_writes = [self._node_write(e, base) for _, e in node_heads]
            room_writes = [Write(e.room["id"], json.dumps(e.room).encode())
                           if isinstance(e, PutRoom) else Write(e.room_id, None)
                           for _, e in room_heads]
            node_got: list[Any] = []
            room_got: list[Any] = []
            async with trio.open_nursery() as n:
                n.start_soon(self._write_all, nodes, node_writes, node_got)
                n.start_soon(self._write_all, rooms, room_writes, room_got)
            stale: list[str] = []
            for (node, e), r in zip(node_heads, node_got, strict=True):
                if isinstance(e, ClaimNode) and isinstance(r, KeyExists | WrongRevision):
                    tries[node] += 1
                    if tries[node] < CLAIM_TRIES:
                        stale.append(node)
                        continue  # stays at the head of its queue
                    self.log.info("cluster claim gave up node=%s", node)
                elif isinstance(e, ClaimNode) and isinstance(r, int):
                    self._own[node] = r
                    self._apply(self.machine.claimed(node, r, mono_ms()))
                base.pop(node, None)
                tries.pop(node, None)
                self._done(queues, (True, node))
            for room, _ in room_heads:
                self._done(queues, (False, room))
            if stale:
                entries = await retried(self.bus, functools.partial(nodes.get_many, stale))
                for node, entry in zip(stale, entries, strict=True):
                    base[node] = entry.revision if entry is not None else None

    async def _write_all(self, bucket: Bucket, writes: Sequence[Write | None],
                         got: list[Any]) -> None:
        """``writes`` (None: no write) in calls of at most WRITES_PER_CALL; what each
        gave (None for no write) into ``got``, in order."""
        todo = [(i, w) for i, w in enumerate(writes) if w is not None]
        got.extend([None] * len(writes))
        for at in range(0, len(todo), WRITES_PER_CALL):
            part = todo[at:at + WRITES_PER_CALL]
            answers = await retried(self.bus, functools.partial(
                bucket.write_many, [w for _, w in part]))
            for (i, _), r in zip(part, answers, strict=True):
                got[i] = r

    def _node_write(self, e: ClaimNode | ReleaseNode, base: dict[str, int | None]
                    ) -> Write | None:
        """The write for a node's record: a claim creates it, or writes against the
        revision we (or, after a conflict, someone else) wrote last; a release deletes
        it only if it is still the revision we wrote (None: nothing to release)."""
        if isinstance(e, ClaimNode):
            last = base[e.node] if e.node in base else self._own.get(e.node)
            return Write(e.node, json.dumps(e.record).encode(), last or 0)
        rev = e.revision or self._own.pop(e.node, 0)
        return Write(e.node, None, rev) if rev else None

    @staticmethod
    def _done(queues: dict[tuple[bool, str], collections.deque[Any]],
              key: tuple[bool, str]) -> None:
        queues[key].popleft()
        if not queues[key]:
            del queues[key]

    # --- in --------------------------------------------------------------------------------

    async def _watch(self, bucket: Bucket, is_nodes: bool) -> None:
        async with bucket.watch() as next_batch:
            while True:
                batch = await next_batch()
                now = mono_ms()
                if batch is None:
                    if is_nodes:
                        self._apply(self.machine.synced(now))
                    continue
                changes = [_change(e) for e in batch]
                self._apply(self.machine.on_nodes(changes, now) if is_nodes
                            else self.machine.on_rooms(changes, now))

    async def _inbox(self, inbox: trio.MemoryReceiveChannel[Any]) -> None:
        async for msg in inbox:
            try:
                items = json.loads(msg.data)
            except ValueError:
                continue
            if not isinstance(items, list):
                continue
            now = mono_ms()
            for item in items:
                self._apply(self.machine.on_message(item, now))

    async def _alive_in(self, alive: trio.MemoryReceiveChannel[Any]) -> None:
        async for msg in alive:
            name = msg.data.decode("utf-8", "replace")
            self.machine.instance_alive(name, mono_ms())

    async def _alive_out(self) -> None:
        while True:
            try:
                await self.bus.publish(ALIVE, self.machine.instance.encode())
            except ClusterUnavailable:
                self.dropped += 1  # one late answer is no reason to end the session
            await trio.sleep(ALIVE_EVERY_MS / 1000)


def _change(e: Entry) -> Change:
    if e.deleted:
        return (e.key, None, e.revision)
    try:
        return (e.key, json.loads(e.value), e.revision)
    except ValueError:
        return (e.key, {}, e.revision)  # not a record: the machine skips it
