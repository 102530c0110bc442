"""The relay transport as the shell of ``hd_protocol.brokers.relay_client``, on a real relay.

A virtual link whose reader pauses must not lose what arrives meanwhile: the machine
holds what the link had no room for and offers it again when its timer fires (the
transport wakes on the machine's deadline). Before the machine, the link's queue
dropped everything past 256 envelopes.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio
import trio.testing

from hd_node.transports.relay import LINK_QUEUE, RelayTransport
from hd_protocol import Envelope
from hd_protocol.brokers.relay_client import MAX_HELD
from hd_protocol.limits import DEFAULT_LIMITS

from .linkpairs import DEADLINE_S, KeepingGate, relay_pair
from .test_webrtc_transport import A

COUNT = LINK_QUEUE + MAX_HELD // 2  # past the link's queue, within what the machine holds


async def test_a_paused_reader_gets_every_envelope_in_order(tmp_path: Path) -> None:
    async with relay_pair(tmp_path) as pair:
        with trio.fail_after(30):
            for i in range(0, COUNT, 50):
                await pair.a.send_many([pair.encode(0, str(j))
                                        for j in range(i, min(i + 50, COUNT))])
            await trio.sleep(1.0)  # the reader pauses: the link's queue fills, the rest waits
            got: list[str] = []
            while len(got) < COUNT:
                for frame in await pair.b.receive_some():
                    assert isinstance(frame, Envelope)
                    got.append(str(pair.decode(frame)))
    assert got == [str(i) for i in range(COUNT)]


async def test_a_new_default_relay_is_attached_without_waiting_for_time() -> None:
    """When the lobby we use moves, our own relay follows at once: the transport wakes on
    ``default_url_changed``. Each check comes as soon as every task waits, well before a
    timed poll (once a second, before) would look again."""
    cell: dict[str, str | None] = {"url": None}
    relay = RelayTransport(A, max_envelope_bytes=DEFAULT_LIMITS.max_envelope_bytes,
                           rng=os.urandom, default_url=lambda: cell["url"])
    with trio.fail_after(DEADLINE_S):  # a task that spins never lets the checks come
        await _follow_the_default(relay, cell)


async def _follow_the_default(relay: RelayTransport, cell: dict[str, str | None]) -> None:
    async with trio.open_nursery() as n:
        await n.start(relay.serve, KeepingGate())
        await trio.testing.wait_all_tasks_blocked()
        assert relay.attachments == {}
        cell["url"] = "ws://127.0.0.1:9/relay-ws"  # nobody listens: the attachment retries
        relay.default_url_changed()
        await trio.testing.wait_all_tasks_blocked()
        assert list(relay.attachments) == [cell["url"]]
        cell["url"] = None
        relay.default_url_changed()
        await trio.testing.wait_all_tasks_blocked()
        assert len(relay.attachments) == 1  # an attachment is not dropped by a move
        n.cancel_scope.cancel()


async def test_an_attached_idle_node_sleeps(tmp_path: Path) -> None:
    """Attached with nothing to do, the attachment waits for its deadline or a frame; it
    once woke itself after every step, so its task never blocked (a core at 100 %)."""
    async with relay_pair(tmp_path) as pair:
        await pair.a.send_many([pair.encode(0, "x")])
        assert [pair.decode(f) for f in await pair.b.receive_some()] == ["x"]
        with trio.fail_after(DEADLINE_S):
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
