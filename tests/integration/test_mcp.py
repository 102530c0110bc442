"""``hd-node mcp`` driven by a client of the official ``mcp`` SDK, as a desktop AI client
would: it starts the server on stdio beside a running node, lists the tools, asks a
peer's agent with progress, and gets MCP errors (never a dead server) for bad calls."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import trio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import TextContent

from .conftest import Cluster, NodeProcess

DEMO_REMOTE = "[network]\nagentBackend = \"demo\"\nallowRemoteAgent = true\n"
CALL = timedelta(seconds=60)


def _server(node: NodeProcess) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if k.startswith(("PATH", "HOME", "LANG"))}
    return StdioServerParameters(command=sys.executable,
                                 args=["-m", "hd_node", "mcp", "--data-dir",
                                       str(node.data_dir)], env=env)


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


async def test_an_mcp_client_lists_the_tools_and_asks_a_peer_with_progress(
    cluster: Cluster, tmp_path: Path,
) -> None:
    alice = cluster.new("alice")
    bob = cluster.new("bob", config=DEMO_REMOTE)
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    with (tmp_path / "mcp.err").open("w") as errlog, trio.fail_after(90):
        async with stdio_client(_server(alice), errlog=errlog) as (read, write), \
                ClientSession(read, write) as mcp:
            info = await mcp.initialize()
            assert info.serverInfo.name == "hd-fabric"
            tools = {t.name: t for t in (await mcp.list_tools()).tools}
            assert set(tools) == {"list_peers", "ask_peer", "ask_agent"}
            assert set(tools["ask_peer"].inputSchema["required"]) == {"node_id", "prompt"}

            peers = await mcp.call_tool("list_peers", {}, read_timeout_seconds=CALL)
            assert not peers.isError
            (row,) = [p for p in peers.structuredContent["result"]
                      if p["node_id"] == bob.node_id]
            assert row["node_name"] == "bob" and row["agent"] is True
            assert row["status"] == "connected"

            progress: list[tuple[float, str | None]] = []

            async def on_progress(done: float, total: float | None,
                                  message: str | None) -> None:
                progress.append((done, message))

            got = await mcp.call_tool("ask_peer", {"node_id": bob.node_id,
                                                   "prompt": "hello from mcp"},
                                      read_timeout_seconds=CALL,
                                      progress_callback=on_progress)
            assert not got.isError, _text(got)
            answer = _text(got)
            assert f"demo-agent@{bob.node_id}: hello from mcp" in answer
            assert len(progress) > 3
            assert [p[0] for p in progress] == list(range(1, len(progress) + 1))
            assert "".join(p[1] or "" for p in progress) == answer  # each token once

            # Bad calls are MCP errors; the server goes on.
            bad = await mcp.call_tool("ask_peer", {"node_id": "nope", "prompt": "x"},
                                      read_timeout_seconds=CALL)
            assert bad.isError and "bad_request" in _text(bad)
            missing = await mcp.call_tool("ask_peer", {"node_id": bob.node_id},
                                          read_timeout_seconds=CALL)
            assert missing.isError and "prompt" in _text(missing)
            wrong_type = await mcp.call_tool("ask_peer", {"node_id": 7, "prompt": ["x"]},
                                             read_timeout_seconds=CALL)
            assert wrong_type.isError
            unknown = await mcp.call_tool("rm_rf", {}, read_timeout_seconds=CALL)
            assert unknown.isError
            no_backend = await mcp.call_tool("ask_agent", {"prompt": "hi"},
                                             read_timeout_seconds=CALL)
            assert no_backend.isError and "unsupported" in _text(no_backend)
            again = await mcp.call_tool("list_peers", {}, read_timeout_seconds=CALL)
            assert not again.isError

    # The turn was a task of alice, asked by the MCP client.
    async with alice.client() as tab:
        tasks = (await tab.request("agent", "tasks", {}))["tasks"]
    asked = [t for t in tasks if t["prompt"] == "hello from mcp"]
    assert len(asked) == 1 and asked[0]["state"] == "completed"
    assert asked[0]["asker"]["kind"] == "mcp" and asked[0]["target"] == bob.node_id


async def test_hd_node_mcp_without_a_running_node_says_so_and_exits_1(
    tmp_path: Path,
) -> None:
    proc = await trio.run_process(
        [sys.executable, "-m", "hd_node", "mcp", "--data-dir", str(tmp_path / "none")],
        capture_stdout=True, capture_stderr=True, check=False, stdin=b"")
    assert proc.returncode == 1
    assert proc.stdout == b""  # stdout is the MCP channel: nothing else goes there
    assert b"no running node" in proc.stderr
