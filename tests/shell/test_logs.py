"""The kit logs under the name of the binary it runs in: ``own_logs`` in a task holds for
every task that task starts, and for no other."""

from __future__ import annotations

import trio

from hd_shell.logs import logger, own_logs


async def _name_in_a_child(owner: str | None) -> str:
    names: list[str] = []
    if owner is not None:
        own_logs(owner)

    async def child() -> None:
        names.append(logger("http").name)

    async with trio.open_nursery() as n:
        n.start_soon(child)
    return names[0]


async def test_a_binarys_tasks_log_the_kits_lines_under_its_name() -> None:
    got: dict[str, str] = {}

    async def one(owner: str | None, key: str) -> None:
        got[key] = await _name_in_a_child(owner)

    async with trio.open_nursery() as n:  # two binaries in one process, side by side
        n.start_soon(one, "hd_relay", "relay")
        n.start_soon(one, "hd_lobby", "lobby")
        n.start_soon(one, None, "kit alone")
    assert got == {"relay": "hd_relay.http", "lobby": "hd_lobby.http",
                   "kit alone": "hd_shell.http"}
    assert logger("ws").name == "hd_shell.ws"  # nothing leaked to the test's own task
