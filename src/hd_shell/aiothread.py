"""An asyncio event loop on its own thread, for libraries that only speak asyncio (aiortc,
nats-py): the one bridge between trio and asyncio in the code base.

Why a thread and not trio-asyncio: trio-asyncio patches asyncio for the whole process
(ENV.md). Here the asyncio world stays on one thread with its own
``SelectorEventLoop`` and the two meet at two narrow points:

- trio → asyncio: ``await thread.run(fn, *args)`` runs the coroutine ``fn(*args)`` on
  the loop and waits for it without blocking trio; cancelling the trio side cancels
  the asyncio task (every trio wait keeps its deadline);
- asyncio → trio: ``to_trio(fn, *args)`` (a function made by ``trio_caller``) queues a
  plain call on the trio run, in order (``run_sync_soon``).

``stop`` cancels what still runs on the loop, stops it and joins the thread, bounded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError, Future
from typing import Any, TypeVar

import trio

from .logs import logger

T = TypeVar("T")


class LoopGone(Exception):
    """The asyncio loop is not running (not started yet, or stopped)."""


class AsyncioThread:
    def __init__(self, name: str = "hd-asyncio") -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self.loop is not None and not self._stopping

    def start(self) -> None:
        if self._thread is not None:
            return
        loop = asyncio.SelectorEventLoop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
                _cancel_all(loop)
            finally:
                loop.close()

        # A daemon: a bug that keeps the loop busy must not keep the process alive.
        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        ready.wait(10)
        self.loop = loop

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on the asyncio loop; cancellable from trio."""
        loop = self.loop
        if loop is None or self._stopping or loop.is_closed():
            raise LoopGone("the asyncio loop is not running")
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        async def call() -> T:
            return await fn(*args)

        fut: Future[T] = asyncio.run_coroutine_threadsafe(call(), loop)

        def wake(_: Future[T]) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        fut.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            fut.cancel()  # cancels the asyncio task (thread-safe)
            raise
        try:
            return fut.result()
        except CancelledError:  # the loop stopped under it
            raise LoopGone("the asyncio loop stopped") from None

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on the loop soon (fire and forget, for synchronous calls)."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # closed meanwhile
                pass

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop (what still runs on it is cancelled) and join the thread."""
        self._stopping = True
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        self.post(loop.stop)
        await trio.to_thread.run_sync(thread.join, timeout_s, abandon_on_cancel=True)
        if thread.is_alive():
            logger("asyncio").warning("asyncio thread did not stop within %.1f s", timeout_s)


def trio_caller() -> Callable[..., None]:
    """A function the asyncio thread may call to run ``fn(*args)`` on this trio run."""
    token = trio.lowlevel.current_trio_token()

    def to_trio(fn: Callable[..., Any], *args: Any) -> None:
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass

    return to_trio


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """After ``stop``: cancel the tasks left on the loop and let them finish (bounded)."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=2.0))
    loop.run_until_complete(loop.shutdown_asyncgens())
