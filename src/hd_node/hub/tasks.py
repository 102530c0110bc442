"""The node's task nursery as a part: made by the composition root, handed to the parts
that start long-lived tasks (links, reconnect loops, catch-ups, remote agent turns) when
they are built, and opened by ``run`` before any of them starts one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio


class Tasks:
    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        return self._nursery is not None

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Start ``fn(*args)`` in the nursery; False (nothing started) when it is not
        open (before ``run``, or after it ended)."""
        if self._nursery is None:
            return False
        self._nursery.start_soon(fn, *args)
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Hold the nursery open until cancelled; every task started in it ends with it."""
        try:
            async with trio.open_nursery() as n:
                self._nursery = n
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
