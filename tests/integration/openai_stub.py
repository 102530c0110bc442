"""A real OpenAI-compatible chat-completions server for tests, answering from a script.

It speaks the streaming wire format of ``POST /v1/chat/completions`` with
``stream: true`` over real HTTP/1.1 (h11 on trio, chunked transfer encoding): server-sent
events, one ``data: {chunk}`` per event, ``delta.content`` in pieces, ``delta.tool_calls``
split over several chunks by ``index``, a ``finish_reason``, a usage-only chunk with no
choices, then ``data: [DONE]``. Every request is recorded (path, headers, JSON body), so
a test can check what a client sent.

Each request takes the next step of the script (a list of JSON objects, by ``kind``):

- ``{"kind": "text", "chunks": ["Hel", "lo"]}``: a streamed answer, finish ``stop``.
- ``{"kind": "tool_calls", "calls": [{"id", "name", "arguments": {...}}], "pieces": 3}``:
  tool calls, each one's arguments (JSON text) split over ``pieces`` chunks.
- ``{"kind": "echo_tool", "prefix": "the peer said: ", "suffix": "."}``: an answer
  made of the content of the last ``tool`` message of the request, between the two.
- ``{"kind": "status", "status": 500}``: an HTTP error with an OpenAI-style error body.
- ``{"kind": "cut", "chunks": [...]}``: those deltas, then the connection closes in the
  middle of the chunked body.
- ``{"kind": "garbage", "chunks": [...]}``: those deltas, then a ``data:`` line that is
  not JSON.
- ``{"kind": "hang"}``: never answers; with ``"chunks"``, sends those deltas first and
  then nothing more.

Shorthands: ``{"text": "..."}`` (streamed word by word), ``{"tool_call": {"name",
"arguments"[, "id"]}}`` and ``{"echo_tool_result": PREFIX}``. A call without an ``id``
gets a unique one. When the script runs out the stub answers HTTP 500, or starts over if
``loop`` is set; a request without ``stream: true`` or whose body is not JSON gets 400.

``python -m integration.openai_stub --port-file FILE --script FILE [--loop] [--log FILE]``
(run from ``tests/``) serves on 127.0.0.1 on a free port, writes the port to
``--port-file`` once listening, appends each request as a JSON line to ``--log``, and
exits 0 on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import trio

MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # the parsed JSON body (None if it was not JSON)


class OpenAIStub:
    def __init__(self, script: list[dict[str, Any]], *, loop: bool = False,
                 log_path: Path | None = None) -> None:
        self.script = [_normalise(step) for step in script]  # a bad script fails here
        self.loop = loop
        self.log_path = log_path
        self.requests: list[Recorded] = []
        self.open_connections = 0  # a client that cancelled must have closed its own
        self.port = 0

    @property
    def url(self) -> str:
        """The ``base_url`` a client is given (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def serve(self, *, task_status: trio.TaskStatus[OpenAIStub] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._serve_connection, listeners)

    def _next_step(self) -> dict[str, Any]:
        n = len(self.requests) - 1
        if self.loop and self.script:
            return self.script[n % len(self.script)]
        return self.script[n] if n < len(self.script) else {"kind": "status", "status": 500}

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        self.open_connections += 1
        try:
            while True:
                request = await _read_request(stream, conn)
                if request is None:
                    return
                self._record(request)
                keep = await self._answer(stream, conn, self._next_step(), request.body)
                if not keep or conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            self.open_connections -= 1
            await stream.aclose()

    def _record(self, request: Recorded) -> None:
        self.requests.append(request)
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                f.write(json.dumps({"path": request.path, "headers": request.headers,
                                    "body": request.body}) + "\n")

    async def _answer(self, stream: trio.SocketStream, conn: h11.Connection,
                      step: dict[str, Any], body: Any) -> bool:
        """Play one step; False when the connection must not be reused."""
        kind = step["kind"]
        if kind == "status" or not isinstance(body, dict) or body.get("stream") is not True:
            status = step.get("status", 500) if kind == "status" else 400
            payload = json.dumps({"error": {"message": "stub error", "type": "server_error",
                                            "code": status}}).encode()
            await _send(stream, conn, h11.Response(status_code=status, headers=[
                ("content-type", "application/json"), ("content-length", str(len(payload)))]))
            await _send(stream, conn, h11.Data(data=payload))
            await _send(stream, conn, h11.EndOfMessage())
            return True
        if kind == "hang" and "chunks" not in step:
            return await _until_closed(stream)
        model = body.get("model", "stub-model")
        await _send(stream, conn, h11.Response(status_code=200, headers=[
            ("content-type", "text/event-stream"), ("cache-control", "no-cache")]))

        async def event(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0,
                     "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await _send_event(stream, conn, json.dumps(chunk))

        await event({"role": "assistant", "content": ""})
        if kind == "echo_tool":
            tools = [m for m in body.get("messages", []) if m.get("role") == "tool"]
            text = (step.get("prefix", "") + (tools[-1]["content"] if tools else "")
                    + step.get("suffix", ""))
            chunks = [text[i:i + 7] for i in range(0, len(text), 7)]
        else:
            chunks = step.get("chunks", [])
        for piece in chunks:
            await event({"content": piece})
        if kind == "cut":
            return False  # the body ends without its last chunk: a stream cut short
        if kind == "garbage":
            await _send_event(stream, conn, '{"choices": [{"delta": {"content": "x"')
        if kind == "hang":
            return await _until_closed(stream)
        if kind == "tool_calls":
            for index, call in enumerate(step["calls"]):
                arguments = call["arguments"]
                text = arguments if isinstance(arguments, str) else json.dumps(arguments)
                n = max(1, step.get("pieces", 3))
                size = -(-len(text) // n) or 1
                pieces = [text[i:i + size] for i in range(0, len(text), size)] or [""]
                for k, piece in enumerate(pieces):
                    fragment: dict[str, Any] = {"index": index, "function": {"arguments": piece}}
                    if k == 0:
                        call_id = call.get("id") or f"call_{len(self.requests)}_{index}"
                        fragment.update(id=call_id, type="function")
                        fragment["function"]["name"] = call["name"]
                    await event({"tool_calls": [fragment]})
        await event({}, "tool_calls" if kind == "tool_calls" else step.get("finish", "stop"))
        await _send_event(stream, conn, json.dumps({
            "id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
        await _send_event(stream, conn, "[DONE]")
        await _send(stream, conn, h11.EndOfMessage())
        return True


def _normalise(step: dict[str, Any]) -> dict[str, Any]:
    kinds = {"text", "tool_calls", "echo_tool", "status", "cut", "garbage", "hang"}
    if step.get("kind") in kinds:
        return step
    if isinstance(step.get("text"), str):
        return {"kind": "text", "chunks": re.findall(r"\S+\s*|\s+", step["text"])}
    if isinstance(step.get("tool_call"), dict):
        return {"kind": "tool_calls", "calls": [step["tool_call"]]}
    if isinstance(step.get("echo_tool_result"), str):
        return {"kind": "echo_tool", "prefix": step["echo_tool_result"]}
    raise ValueError(f"unknown script step: {json.dumps(step)[:200]}")


async def _until_closed(stream: trio.SocketStream) -> bool:
    """Say nothing more; return once the client has closed the connection."""
    while await stream.receive_some(65536):
        pass
    return False


async def _send(stream: trio.SocketStream, conn: h11.Connection, event: Any) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _send_event(stream: trio.SocketStream, conn: h11.Connection, data: str) -> None:
    await _send(stream, conn, h11.Data(data=f"data: {data}\n\n".encode()))


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> Recorded | None:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.LocalProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in request.headers}
            return Recorded(request.method.decode(), request.target.decode(), headers, parsed)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


@asynccontextmanager
async def running_stub(script: list[dict[str, Any]], *, loop: bool = False
                       ) -> AsyncIterator[OpenAIStub]:
    """A stub serving ``script`` for the duration of the block."""
    async with trio.open_nursery() as nursery:
        stub = await nursery.start(OpenAIStub(script, loop=loop).serve)
        yield stub
        nursery.cancel_scope.cancel()


async def _main(args: argparse.Namespace) -> None:
    raw = json.loads(Path(args.script).read_text())
    steps, loop = (raw, args.loop) if isinstance(raw, list) else (
        raw["steps"], args.loop or bool(raw.get("loop")))
    stub = OpenAIStub(steps, loop=loop, log_path=Path(args.log) if args.log else None)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(stub.serve)
            tmp = Path(f"{args.port_file}.tmp")
            tmp.write_text(f"{stub.port}\n")
            os.replace(tmp, args.port_file)  # atomic: a reader never sees half a port
            async for _ in signals:  # SIGINT or SIGTERM: stop, exit 0
                nursery.cancel_scope.cancel()
                break


def main() -> None:
    parser = argparse.ArgumentParser(description="a scripted OpenAI-compatible stub server")
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--script", required=True, help="JSON: a list of steps, or "
                        '{"steps": [...], "loop": true}')
    parser.add_argument("--loop", action="store_true", help="start the script over when done")
    parser.add_argument("--log", help="append each request as a JSON line to this file")
    trio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
