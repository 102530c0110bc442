"""Our own relay on several instances (issue 19), on two real ``hd_relay`` services served
in-process: one attachment serves both URLs, on one at a time; it moves when the first
URL it is given changes (the lobby we follow moved) or when its instance goes away, and
stays where it is when the list is only read again."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry

from hd_node.transports.relay import RelayTransport
from hd_protocol.limits import DEFAULT_LIMITS
from hd_relay import PATH, QueueStore, RelayService, relay_frame_limit
from hd_shell.http.server import ServerLimits, serve
from hd_shell.server.app import ServerApp

from .linkpairs import DEADLINE_S, RELAY, KeepingGate
from .test_webrtc_transport import A


class InProcessRelay:
    """One relay service on a loopback port, stopped (every connection cut) on demand."""

    def __init__(self, data_dir: Path) -> None:
        self.store = QueueStore(data_dir / "queue.db")
        self.registry = CollectorRegistry()
        service = RelayService(RELAY, self.store, DEFAULT_LIMITS, self.registry)
        self.app = ServerApp(RELAY.node_id, self.registry, {PATH: service.serve})
        self.scope = trio.CancelScope()
        self.url = ""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        limits = ServerLimits(ws_max_message_bytes=relay_frame_limit(DEFAULT_LIMITS))
        with self.scope:
            async with trio.open_nursery() as n:
                _, port = await n.start(partial(serve, self.app, "127.0.0.1", 0,
                                                limits=limits))
                self.url = f"ws://127.0.0.1:{port}{PATH}"
                task_status.started()
        self.store.close()

    def connections(self) -> float:
        return self.registry.get_sample_value("hd_relay_connections") or 0.0


@asynccontextmanager
async def two_relays(tmp_path: Path) -> AsyncIterator[tuple[InProcessRelay, InProcessRelay,
                                                            trio.Nursery]]:
    relays = []
    async with trio.open_nursery() as n:
        for name in ("r1", "r2"):
            (tmp_path / name).mkdir()
            relay = InProcessRelay(tmp_path / name)
            await n.start(relay.run)
            relays.append(relay)
        yield relays[0], relays[1], n
        n.cancel_scope.cancel()


async def _attached_at(relay: RelayTransport, url: str) -> None:
    while not (relay.own is not None and relay.own.url == url
               and relay.own.attached.is_set()):
        await trio.sleep(0.02)


async def test_our_relay_follows_the_first_url_and_stays_after_a_failover(
        tmp_path: Path) -> None:
    async with two_relays(tmp_path) as (r1, r2, n):
        urls = [r1.url, r2.url]
        moves: list[str | None] = []
        relay = RelayTransport(A, max_envelope_bytes=DEFAULT_LIMITS.max_envelope_bytes,
                               rng=os.urandom, default_url=lambda: urls,
                               on_move=lambda: moves.append(relay.own_url()))
        await n.start(relay.serve, KeepingGate())
        with trio.fail_after(DEADLINE_S):
            await _attached_at(relay, r1.url)
            own = relay.own
            assert relay.attachments == {r1.url: own, r2.url: own}  # one for both
            assert relay.state() == {"url": r1.url, "urls": urls, "attached": True}
            # The lobby we follow moved: its relay comes first now.
            urls = [r2.url, r1.url]
            relay.default_url_changed()
            await _attached_at(relay, r2.url)
            assert relay.own is own and moves == [r1.url, r2.url]
            while r1.connections():
                await trio.sleep(0.02)  # the connection to r1 was let go
            # The instance dies: the attachment moves on to the other one, at once.
            r2.scope.cancel()
            t0 = trio.current_time()
            await _attached_at(relay, r1.url)
            assert trio.current_time() - t0 < 2.0
            assert moves == [r1.url, r2.url, r1.url]
            # The same list read again does not move it back.
            relay.default_url_changed()
            await trio.sleep(0.5)
            assert relay.own is own and relay.own.url == r1.url and r1.connections() == 1
        n.cancel_scope.cancel()


async def test_a_list_without_our_instance_is_a_new_relay_and_the_old_one_stays(
        tmp_path: Path) -> None:
    async with two_relays(tmp_path) as (r1, r2, n):
        urls = [r1.url]
        relay = RelayTransport(A, max_envelope_bytes=DEFAULT_LIMITS.max_envelope_bytes,
                               rng=os.urandom, default_url=lambda: urls)
        await n.start(relay.serve, KeepingGate())
        with trio.fail_after(DEADLINE_S):
            await _attached_at(relay, r1.url)
            first = relay.own
            urls = [r2.url]  # `lobby connect` to another lobby: another relay
            relay.default_url_changed()
            await _attached_at(relay, r2.url)
            assert relay.own is not first and relay.attachments[r1.url] is first
            assert first is not None and first.attached.is_set()  # links may still use it
        n.cancel_scope.cancel()
