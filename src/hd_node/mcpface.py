"""``hd-node mcp --data-dir DIR``: the fabric as an MCP server on stdio, for desktop AI
clients (the official ``mcp`` SDK, run on trio through anyio: no asyncio here).

It talks to the node already running on DIR as a tab does — the node named by
node.json, checked to be the process that wrote it before the token is used (as every
``hd-node`` command that needs the running node) — over ``/ws``, one connection per
tool call. Tools:

- ``list_peers``: the peers the node knows (id, name, level, status, whether they take
  agent requests);
- ``ask_peer {node_id, prompt}``: ask a connected peer's agent; each token is an MCP
  progress notification, the answer is the result;
- ``ask_agent {prompt}``: the same with this node's own agent.

A turn is a task of the node (``agent tasks`` in any tab lists it, asked by ``MCP
client <name>``). A call the client cancels cancels the task. Refusals and failures
(a bad node id, a peer that refuses, no backend, a timeout) are tool errors with the
node's code and line; nothing a client sends ends the server.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import anyio
import trio
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError

from .client import NodeClient

log = logging.getLogger("hd_node.mcp")

CALL_MARGIN_S = 30.0  # past the node's own agent timeout, a call gives up waiting
CONNECT_TIMEOUT_S = 10.0
PEER_FIELDS = ("node_id", "node_name", "level", "status", "transport")


class Face:
    def __init__(self, ws_url: str, token: str, *, agent_timeout_s: float) -> None:
        self.ws_url, self.token = ws_url, token
        self.call_timeout_s = agent_timeout_s + CALL_MARGIN_S

    async def list_peers(self) -> list[dict[str, Any]]:
        async with NodeClient.open(self.ws_url, self.token,
                                   timeout=CONNECT_TIMEOUT_S) as tab:
            got = await tab.request("network", "list_peers", {})
        return [{**{k: p.get(k) for k in PEER_FIELDS},
                 "agent": "agent" in (p.get("capabilities") or [])}
                for p in got.get("peers", [])]

    async def ask(self, event: str, args: dict[str, Any], client: str,
                  progress: Any) -> str:
        """``agent ask``/``ask_peer`` through a tab of its own: tokens go to
        ``progress(count, delta)``, the answer is returned, a refusal is a ToolError."""
        turn = "mcp-" + secrets.token_hex(6)
        async with NodeClient.open(self.ws_url, self.token,
                                   timeout=CONNECT_TIMEOUT_S) as tab:
            events = tab.listen()
            await tab.send("agent", event, {"turnId": turn, "req": turn, "client": client,
                                            **args})
            try:
                with trio.fail_after(self.call_timeout_s):
                    answer, error = await self._follow(events, turn, progress)
            except BaseException:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await tab.send("agent", "cancel", {"turnId": turn})  # not left running
                raise
        if answer is not None:  # raised out here, not from inside the client's nursery
            return answer
        code, message = error or ("internal", "the node closed the connection")
        raise ToolError(message if message.startswith(code) else f"{code}: {message}")

    @staticmethod
    async def _follow(events: trio.MemoryReceiveChannel[dict[str, Any]], turn: str,
                      progress: Any) -> tuple[str | None, tuple[str, str] | None]:
        answer: str | None = None
        error: tuple[str, str] | None = None
        count = 0
        async for ev in events:
            d = ev.get("data") or {}
            if ev.get("channel") != "agent" or turn not in (d.get("turnId"), d.get("req")):
                continue
            kind = ev.get("event")
            if kind == "token" and isinstance(d.get("delta"), str):
                count += 1
                await progress(count, d["delta"])
            elif kind == "answer":
                answer = str(d.get("text", ""))
            elif kind == "error":
                error = (str(d.get("code", "error")), str(d.get("message", "")))
                if d.get("req") == turn and "turnId" not in d:
                    break  # refused before a turn began: no `done` follows
            elif kind == "done":
                break
        return answer, error


def build(face: Face) -> FastMCP:
    app: FastMCP = FastMCP(
        "hd-fabric", log_level="WARNING",
        instructions="Peers of this hd fabric node and their agents: list_peers shows "
                     "them, ask_peer asks one peer's agent (by node_id), ask_agent asks "
                     "this node's own.")

    def client_name(ctx: Context[Any, Any, Any]) -> str:
        params = ctx.session.client_params
        name = params.clientInfo.name if params is not None else ""
        name = "".join(c for c in name if c.isprintable())[:64]
        return name or "mcp"

    def reporter(ctx: Context[Any, Any, Any]) -> Any:
        async def progress(count: int, delta: str) -> None:
            await ctx.report_progress(count, None, delta)
        return progress

    @app.tool(name="list_peers", description="The peers this node knows: node_id, "
              "node_name, level (trusted, guest, ...), status, and whether it takes "
              "agent requests.")
    async def list_peers() -> list[dict[str, Any]]:
        return await face.list_peers()

    @app.tool(name="ask_peer", description="Ask the agent of a connected peer (by its "
              "node_id) and get its answer; its tokens come as progress.")
    async def ask_peer(node_id: str, prompt: str, ctx: Context[Any, Any, Any]) -> str:
        return await face.ask("ask_peer", {"node_id": node_id, "prompt": prompt},
                              client_name(ctx), reporter(ctx))

    @app.tool(name="ask_agent", description="Ask this node's own agent; its tokens come "
              "as progress.")
    async def ask_agent(prompt: str, ctx: Context[Any, Any, Any]) -> str:
        return await face.ask("ask", {"prompt": prompt}, client_name(ctx), reporter(ctx))

    return app


def serve(ui_url: str, token: str, *, agent_timeout_s: float) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    ws_url = ui_url.replace("http://", "ws://", 1).rstrip("/") + "/ws"
    app = build(Face(ws_url, token, agent_timeout_s=agent_timeout_s))
    anyio.run(app.run_stdio_async, backend="trio")


__all__ = ["Face", "build", "serve"]
