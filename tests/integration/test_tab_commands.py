"""Every /ws command a tab may send (SPEC 9) gets a direct answer carrying its ``req``
— the result, or an ``error`` — so a client never waits for nothing."""

from __future__ import annotations

import json
from typing import Any

import trio

from hd_protocol.apps.ws import CLIENT_EVENTS

from .conftest import Cluster

# Arguments that make each command valid where that is cheap; the rest get {} and
# must then answer with an error (bad_request, not_found, unsupported, ...).
ARGS: dict[tuple[str, str], dict[str, Any]] = {
    ("network", "invite_create"): {},
    ("collab", "join"): {"paneKey": "p"},
    ("collab", "leave"): {"paneKey": "p"},
    ("collab", "op"): {"paneKey": "p", "baseRev": 0, "text": "x"},
    ("peerchat", "unread"): {},
}


async def test_every_command_answers_its_req_with_a_result_or_an_error(
    cluster: Cluster,
) -> None:
    (alice,) = await cluster.spawn("alice")
    async with alice.client() as tab:
        for channel, events in sorted(CLIENT_EVENTS.items()):
            for event in sorted(events):
                req = f"{channel}.{event}"
                data = dict(ARGS.get((channel, event), {}), req=req)
                await tab.send_raw(json.dumps({"channel": channel, "event": event,
                                               "data": data}))
                with trio.fail_after(10):
                    ev = await tab.wait_for(channel, None, lambda d, r=req: d.get("req") == r)
                assert ev["channel"] == channel, ev
                if (channel, event) in ARGS:
                    assert ev["event"] != "error", ev
