"""The relay transport as the shell of ``hd_protocol.relay_client``, on a real relay.

A virtual link whose reader pauses must not lose what arrives meanwhile: the machine
holds what the link had no room for and offers it again when its timer fires (the
transport wakes on the machine's deadline). Before the machine, the link's queue
dropped everything past 256 envelopes.
"""

from __future__ import annotations

from pathlib import Path

import trio

from hd_node.transports.relay import LINK_QUEUE
from hd_protocol import Envelope
from hd_protocol.relay_client import MAX_HELD

from .linkpairs import relay_pair

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
