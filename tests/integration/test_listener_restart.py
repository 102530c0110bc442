"""A crash inside the HTTP server (hypercorn) restarts the listener on the same port
instead of ending the node (SPEC: bad input never crashes a process)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from hd_node import node as node_mod
from hd_node.metrics import NodeMetrics


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"alive"})


async def _get(url: str) -> str:
    def go() -> str:
        with httpx.Client(timeout=5) as c:
            return c.get(url).text

    return await trio.to_thread.run_sync(go)


async def test_listener_restarts_on_the_same_port_after_a_server_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = node_mod.worker_serve
    calls = 0
    crash = trio.Event()

    async def flaky(*args: Any, **kw: Any) -> None:
        # The first run dies the way hypercorn did under a close race (an exception
        # escaping its connection tasks); later runs are the real server.
        nonlocal calls
        calls += 1
        if calls == 1:
            async with trio.open_nursery() as n:
                n.start_soon(lambda: real(*args, **kw))
                await crash.wait()
                raise trio.BusyResourceError("simulated crash in a connection task")
        await real(*args, **kw)

    monkeypatch.setattr(node_mod, "worker_serve", flaky)
    metrics = NodeMetrics()
    stop = trio.Event()
    cfg = node_mod._hypercorn_config("127.0.0.1", 0, 1024)
    async with trio.open_nursery() as n:
        binds = await n.start(node_mod._serve, _hello, cfg, stop, metrics)
        url = binds[0] + "/"
        with trio.fail_after(10):
            while True:
                try:
                    assert await _get(url) == "alive"
                    break
                except httpx.HTTPError:
                    await trio.sleep(0.05)
        crash.set()
        with trio.fail_after(10):
            while calls < 2:
                await trio.sleep(0.01)
            while True:
                try:
                    assert await _get(url) == "alive"  # same port, new server
                    break
                except httpx.HTTPError:
                    await trio.sleep(0.05)
        assert metrics.listener_restarts._value.get() == 1
        stop.set()
