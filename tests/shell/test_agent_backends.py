"""The agent backends (SPEC 6.3) against real things on loopback: the demo backend, an
OpenAI-compatible backend talking HTTP to ``integration.openai_stub`` (a real server of
the streaming chat-completions wire format), and a command backend running small Python
programs written by each test."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
from integration.openai_stub import OpenAIStub, running_stub

from hd_node.features.agent_backends import (
    AgentBackend,
    BackendError,
    CommandBackend,
    DemoBackend,
    OpenAIBackend,
    Tool,
    ToolCall,
    ToolResult,
    Turn,
    backend_from_spec,
    tool_names,
)
from hd_protocol import Identity

ME = Identity.from_seed(bytes(range(32))).node_id
PEER = Identity.from_seed(bytes(range(1, 33))).node_id
ASK_PEER = Tool("agent.ask_peer", "Ask a peer's agent.", {
    "type": "object", "properties": {"peerId": {"type": "string"},
                                     "prompt": {"type": "string"}},
    "required": ["peerId", "prompt"]}, read_only=True)
LIST_PEERS = Tool("list_peers", "List the peers.", {"type": "object", "properties": {}},
                  read_only=True)
TOOLS = (ASK_PEER, LIST_PEERS)
KEY = "sk-test-0123456789abcdef"
FORTY_TWO = ToolResult(True, "forty-two")


class Runtime:
    """The runtime's side of a turn: keeps what was emitted and asked, answers every
    tool call with ``result``."""

    def __init__(self, result: ToolResult = FORTY_TWO) -> None:
        self.deltas: list[str] = []
        self.calls: list[ToolCall] = []
        self.result = result

    async def emit(self, delta: str) -> None:
        self.deltas.append(delta)

    async def call_tool(self, call: ToolCall) -> ToolResult:
        self.calls.append(call)
        return self.result


def turn(prompt: str, *, tools: tuple[Tool, ...] = TOOLS, mode: str = "plan") -> Turn:
    return Turn("t1", prompt, tools, mode)


# --- demo ------------------------------------------------------------------------------

async def test_demo_echoes_the_prompt_labelled_as_a_demo_and_streams_it_word_by_word() -> None:
    rt = Runtime()
    answer = await DemoBackend(ME, delay=0).run_turn(turn("hello  there\nworld"), rt.emit,
                                                     rt.call_tool)
    assert f"demo-agent@{ME}: hello  there\nworld" in answer
    assert "demo backend, no model" in answer
    assert "".join(rt.deltas) == answer and len(rt.deltas) > 3
    assert rt.calls == []


async def test_demo_asks_the_named_peer_through_the_ask_peer_tool() -> None:
    rt = Runtime(ToolResult(True, "the peer's answer"))
    answer = await DemoBackend(ME, delay=0).run_turn(turn(f"ask {PEER}: what is 6 x 7?"),
                                                     rt.emit, rt.call_tool)
    assert [(c.name, c.arguments) for c in rt.calls] == [
        ("agent.ask_peer", {"peerId": PEER, "prompt": "what is 6 x 7?"})]
    assert "the peer's answer" in answer and PEER in answer
    assert "".join(rt.deltas) == answer


async def test_demo_says_when_the_peer_could_not_answer() -> None:
    rt = Runtime(ToolResult(False, "denied: not trusted"))
    answer = await DemoBackend(ME, delay=0).run_turn(turn(f"ask {PEER}: hi"), rt.emit,
                                                     rt.call_tool)
    assert "could not answer" in answer and "denied: not trusted" in answer


@pytest.mark.parametrize("prompt", ["ask nobody: hi", f"ask {PEER.upper()}: hi",
                                    f"ask {PEER}:hi", f"please ask {PEER}: hi"])
async def test_demo_echoes_a_prompt_that_does_not_name_a_peer_properly(prompt: str) -> None:
    rt = Runtime()
    answer = await DemoBackend(ME, delay=0).run_turn(turn(prompt), rt.emit, rt.call_tool)
    assert f"demo-agent@{ME}: {prompt}" in answer and rt.calls == []


async def test_demo_turn_cancelled_mid_answer_stops_there() -> None:
    rt = Runtime()
    with trio.move_on_after(0.035) as scope:
        await DemoBackend(ME, delay=0.01).run_turn(turn("one two three four five six seven"),
                                                   rt.emit, rt.call_tool)
    assert scope.cancelled_caught
    assert 1 <= len(rt.deltas) < 8


async def test_a_cancelled_demo_turn_raises_cancelled() -> None:
    finished = False
    with trio.CancelScope() as scope:
        async def emit(delta: str) -> None:
            scope.cancel()

        await DemoBackend(ME, delay=0).run_turn(turn("a b c"), emit, Runtime().call_tool)
        finished = True
    assert scope.cancelled_caught and not finished


# --- OpenAI-compatible ------------------------------------------------------------------

def tool_step(arguments: Any, call_id: str = "call_1", name: str = "agent__ask_peer",
              pieces: int = 3) -> dict[str, Any]:
    return {"kind": "tool_calls", "pieces": pieces,
            "calls": [{"id": call_id, "name": name, "arguments": arguments}]}


async def test_openai_streams_the_tokens_and_offers_the_tools(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HD_OPENAI_API_KEY", raising=False)
    async with running_stub([{"kind": "text", "chunks": ["Hel", "lo, ", "world"]}]) as stub:
        rt = Runtime()
        answer = await OpenAIBackend(stub.url, "tiny-model").run_turn(
            turn("say hello", mode="acceptEdits"), rt.emit, rt.call_tool)
    assert answer == "Hello, world" and rt.deltas == ["Hel", "lo, ", "world"]
    [req] = stub.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.body["model"] == "tiny-model" and req.body["stream"] is True
    assert req.body["messages"][-1] == {"role": "user", "content": "say hello"}
    assert "acceptEdits" in req.body["messages"][0]["content"]
    offered = {t["function"]["name"]: t["function"] for t in req.body["tools"]}
    assert set(offered) == {"agent__ask_peer", "list_peers"}
    assert offered["agent__ask_peer"]["parameters"] == ASK_PEER.parameters
    assert "authorization" not in req.headers


async def test_openai_tool_round_trip_sends_the_result_back_and_answers_with_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HD_OPENAI_API_KEY", KEY)
    args = {"peerId": PEER, "prompt": "what is 6 x 7?"}
    script = [tool_step(args), {"kind": "echo_tool", "prefix": "The peer said: ", "suffix": "."}]
    async with running_stub(script) as stub:
        rt = Runtime(ToolResult(True, "forty-two"))
        answer = await OpenAIBackend(stub.url + "/", "m").run_turn(
            turn(f"ask {PEER} what 6 x 7 is"), rt.emit, rt.call_tool)
    assert rt.calls == [ToolCall("call_1", "agent.ask_peer", args)]
    assert answer == "The peer said: forty-two." and "".join(rt.deltas) == answer
    first, second = stub.requests
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert second.headers["authorization"] == f"Bearer {KEY}"
    assistant, tool = second.body["messages"][-2:]
    assert assistant["role"] == "assistant"
    [wire_call] = assistant["tool_calls"]
    assert wire_call["id"] == "call_1" and wire_call["function"]["name"] == "agent__ask_peer"
    assert json.loads(wire_call["function"]["arguments"]) == args
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "forty-two"}


async def test_openai_refused_tool_and_bad_arguments_go_back_to_the_model_as_errors() -> None:
    script: list[dict[str, Any]] = [{"kind": "tool_calls", "calls": [
        {"id": "a", "name": "list_peers", "arguments": {}},
        {"id": "b", "name": "agent__ask_peer", "arguments": "{not json"}]},
        {"kind": "echo_tool"}]
    async with running_stub(script) as stub:
        rt = Runtime(ToolResult(False, "denied in plan mode"))
        answer = await OpenAIBackend(stub.url, "m").run_turn(turn("go"), rt.emit, rt.call_tool)
    assert rt.calls == [ToolCall("a", "list_peers", {})]  # the bad one never reached it
    tools = [m for m in stub.requests[1].body["messages"] if m["role"] == "tool"]
    assert tools == [
        {"role": "tool", "tool_call_id": "a", "content": "error: denied in plan mode"},
        {"role": "tool", "tool_call_id": "b",
         "content": "error: the arguments are not a JSON object"}]
    assert answer == "error: the arguments are not a JSON object"


async def test_openai_http_error_names_the_status_and_never_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HD_OPENAI_API_KEY", KEY)
    async with running_stub([{"kind": "status", "status": 500}]) as stub:
        rt = Runtime()
        with pytest.raises(BackendError) as err:
            await OpenAIBackend(stub.url, "m").run_turn(turn("hi"), rt.emit, rt.call_tool)
    assert "500" in err.value.message and KEY not in str(err.value)
    assert "\n" not in err.value.message


@pytest.mark.parametrize("step, words", [
    ({"kind": "cut", "chunks": ["partial ", "answer"]}, "RemoteProtocolError"),
    ({"kind": "garbage", "chunks": ["partial"]}, "malformed JSON"),
])
async def test_openai_broken_stream_fails_the_turn(step: dict[str, Any], words: str) -> None:
    async with running_stub([step]) as stub:
        rt = Runtime()
        with pytest.raises(BackendError, match=words):
            await OpenAIBackend(stub.url, "m").run_turn(turn("hi"), rt.emit, rt.call_tool)
    assert rt.deltas == step["chunks"]


@pytest.mark.parametrize("step", [{"kind": "hang"}, {"kind": "hang", "chunks": ["a", "b"]}],
                         ids=["no-headers", "stalls-mid-stream"])
async def test_openai_silent_server_fails_the_turn_within_the_read_timeout(
        step: dict[str, Any]) -> None:
    async with running_stub([step]) as stub:
        rt = Runtime()
        start = trio.current_time()
        with pytest.raises(BackendError, match="ReadTimeout"):
            await OpenAIBackend(stub.url, "m", read_timeout=0.3).run_turn(
                turn("hi"), rt.emit, rt.call_tool)
        assert 0.25 < trio.current_time() - start < 3
        with trio.fail_after(5):  # and the client closed its connection
            while stub.open_connections:
                await trio.sleep(0.01)


async def test_openai_cancelled_turn_closes_its_connection() -> None:
    async with running_stub([{"kind": "hang", "chunks": ["a"]}]) as stub:
        rt = Runtime()
        with trio.CancelScope() as scope:
            async def emit(delta: str) -> None:
                scope.cancel()

            await OpenAIBackend(stub.url, "m").run_turn(turn("hi"), emit, rt.call_tool)
        assert scope.cancelled_caught and len(stub.requests) == 1
        with trio.fail_after(5):
            while stub.open_connections:
                await trio.sleep(0.01)


async def test_openai_unreachable_server_fails_the_turn() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rt = Runtime()
    with pytest.raises(BackendError, match=f"127.0.0.1:{port}: ConnectError"):
        await OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m").run_turn(
            turn("hi"), rt.emit, rt.call_tool)


async def test_openai_gives_up_after_eight_rounds_of_tool_calls() -> None:
    async with running_stub([tool_step({"peerId": PEER, "prompt": "again"})], loop=True) as stub:
        rt = Runtime()
        with pytest.raises(BackendError, match="8 rounds"):
            await OpenAIBackend(stub.url, "m").run_turn(turn("hi"), rt.emit, rt.call_tool)
    assert len(stub.requests) == 8 and len(rt.calls) == 8


async def test_openai_text_beyond_the_bound_fails_the_turn() -> None:
    async with running_stub([{"kind": "text", "chunks": ["x" * 600, "y" * 600]}]) as stub:
        rt = Runtime()
        with pytest.raises(BackendError, match="over 1000 characters"):
            await OpenAIBackend(stub.url, "m", max_text=1000).run_turn(
                turn("hi"), rt.emit, rt.call_tool)
    assert rt.deltas == ["x" * 600]


async def test_openai_without_a_model_leaves_the_field_out() -> None:
    async with running_stub([{"kind": "text", "chunks": ["ok"]}]) as stub:
        rt = Runtime()
        assert await OpenAIBackend(stub.url).run_turn(turn("hi", tools=()), rt.emit,
                                                      rt.call_tool) == "ok"
    assert "model" not in stub.requests[0].body and "tools" not in stub.requests[0].body


async def test_openai_stub_shorthand_steps_play_like_the_long_ones() -> None:
    args = {"peerId": PEER, "prompt": "capital of France?"}
    script = [{"tool_call": {"name": "agent__ask_peer", "arguments": args}},
              {"echo_tool_result": "Bob's agent says: "}, {"text": "plain  words\n"}]
    async with running_stub(script) as stub:
        rt = Runtime()
        backend = OpenAIBackend(stub.url, "m")
        assert await backend.run_turn(turn("go"), rt.emit, rt.call_tool) == (
            "Bob's agent says: forty-two")
        [call] = rt.calls
        assert (call.name, call.arguments) == ("agent.ask_peer", args) and call.id
        rt.deltas.clear()
        assert await backend.run_turn(turn("go"), rt.emit, rt.call_tool) == "plain  words\n"
        assert rt.deltas == ["plain  ", "words\n"]
    with pytest.raises(ValueError, match="unknown script step"):
        OpenAIStub([{"say": "hi"}])


async def test_openai_stub_runs_as_a_process_for_the_node_integration_tests(
        tmp_path: Path) -> None:
    script, port_file, log = tmp_path / "script.json", tmp_path / "port", tmp_path / "log"
    script.write_text(json.dumps({"steps": [{"kind": "text", "chunks": ["from ", "afar"]}],
                                  "loop": True}))
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "integration.openai_stub", "--port-file", str(port_file),
         "--script", str(script), "--log", str(log)],
        cwd=Path(__file__).resolve().parents[1], stdin=subprocess.DEVNULL)
    try:
        with trio.fail_after(10):
            while not port_file.exists():
                assert proc.poll() is None, "the stub exited"
                await trio.sleep(0.02)
        url = f"http://127.0.0.1:{int(port_file.read_text())}/v1"
        rt = Runtime()
        for _ in range(2):
            assert await OpenAIBackend(url, "m").run_turn(turn("hi"), rt.emit,
                                                          rt.call_tool) == "from afar"
    finally:
        proc.send_signal(signal.SIGINT)
        with trio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["body"]["model"] for r in requests] == ["m", "m"]
    assert requests[0]["path"] == "/v1/chat/completions"


def test_openai_tool_names_are_valid_and_map_back_exactly() -> None:
    assert tool_names([ASK_PEER, LIST_PEERS]) == {"agent__ask_peer": "agent.ask_peer",
                                                  "list_peers": "list_peers"}
    tools = [Tool(n, "", {}, True) for n in ("agent.ask_peer", "agent__ask_peer", "a b",
                                             "x" * 100, "x" * 100, "", "é", "a_2", "a", "a")]
    names = tool_names(tools)
    assert sorted(names.values()) == sorted(t.name for t in tools)
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", n) for n in names)


# --- command ---------------------------------------------------------------------------

def program(tmp_path: Path, body: str) -> list[str]:
    """argv running ``body`` (Python, after ``import json, os, sys, time`` and helpers
    ``send(obj)`` and ``recv()``) as an agent command."""
    path = tmp_path / "agent.py"
    path.write_text("import json, os, sys, time\n"
                    "def send(obj):\n"
                    "    sys.stdout.write(json.dumps(obj) + '\\n'); sys.stdout.flush()\n"
                    "def recv():\n"
                    "    return json.loads(sys.stdin.readline())\n"
                    + textwrap.dedent(body))
    return [sys.executable, str(path)]


async def test_command_round_trip_of_tokens_a_tool_call_and_the_answer(tmp_path: Path) -> None:
    argv = program(tmp_path, """
        turn = recv()
        send({"type": "token", "delta": "thinking "})
        send({"type": "tool_call", "id": "c1", "name": "agent.ask_peer",
              "arguments": {"peerId": turn["prompt"], "prompt": "q"}})
        result = recv()
        send({"type": "token", "delta": "done"})
        send({"type": "answer", "text": json.dumps({"turn": turn, "result": result})})
        sys.stdin.read()  # until the backend closes stdin
    """)
    rt = Runtime(ToolResult(True, "peer says 42"))
    answer = await CommandBackend(argv).run_turn(turn(PEER, mode="autonomous"), rt.emit,
                                                 rt.call_tool)
    assert rt.deltas == ["thinking ", "done"]
    assert rt.calls == [ToolCall("c1", "agent.ask_peer", {"peerId": PEER, "prompt": "q"})]
    seen = json.loads(answer)
    assert seen["result"] == {"type": "tool_result", "id": "c1", "ok": True,
                              "content": "peer says 42"}
    assert {k: seen["turn"][k] for k in ("type", "turn_id", "prompt", "mode")} == {
        "type": "turn", "turn_id": "t1", "prompt": PEER, "mode": "autonomous"}
    assert seen["turn"]["tools"][0] == {"name": "agent.ask_peer",
                                        "description": ASK_PEER.description,
                                        "parameters": ASK_PEER.parameters, "read_only": True}


async def test_command_error_line_fails_the_turn_with_its_message(tmp_path: Path) -> None:
    argv = program(tmp_path, """
        recv()
        send({"type": "error", "message": "model not loaded"})
        time.sleep(30)
    """)
    rt = Runtime()
    with trio.fail_after(5), pytest.raises(BackendError, match="model not loaded"):
        await CommandBackend(argv).run_turn(turn("hi"), rt.emit, rt.call_tool)


@pytest.mark.parametrize("body, words", [
    ("recv(); sys.exit(3)", "exited with code 3 before answering"),
    ("recv(); print('not json', flush=True); time.sleep(30)", "bad JSON"),
    ("recv(); send({'type': 'thought', 'x': 1}); time.sleep(30)", "unknown line type"),
    ("recv(); send({'type': 'token'}); time.sleep(30)", "token line without a valid delta"),
    ("recv(); send({'type': 'tool_call', 'id': 'a', 'name': 'n', 'arguments': [1]})",
     "without a valid arguments"),
    ("recv(); send({'type': 'token', 'delta': 'x' * (1 << 20)}); time.sleep(30)",
     "a line over"),
    ("recv(); send({'type': 'answer', 'text': 'fine'}); sys.exit(1)", "exited with code 1"),
], ids=["exit", "bad-json", "unknown-type", "no-delta", "bad-arguments", "long-line",
        "answer-then-exit-1"])
async def test_command_that_breaks_the_protocol_fails_the_turn(tmp_path: Path, body: str,
                                                               words: str) -> None:
    rt = Runtime()
    with trio.fail_after(10), pytest.raises(BackendError, match=words):
        await CommandBackend(program(tmp_path, body)).run_turn(turn("hi"), rt.emit,
                                                               rt.call_tool)


async def test_command_that_lingers_after_its_answer_is_killed(tmp_path: Path) -> None:
    argv = program(tmp_path, """
        recv()
        send({"type": "token", "delta": str(os.getpid())})
        send({"type": "answer", "text": "fine"})
        time.sleep(30)
    """)
    rt = Runtime()
    with trio.fail_after(5):
        answer = await CommandBackend(argv, exit_grace=0.2).run_turn(turn("hi"), rt.emit,
                                                                     rt.call_tool)
    assert answer == "fine"
    assert_reaped(int(rt.deltas[0]))


async def test_command_cancelled_mid_turn_is_killed_and_reaped(tmp_path: Path) -> None:
    argv = program(tmp_path, """
        recv()
        send({"type": "token", "delta": str(os.getpid())})
        time.sleep(30)
    """)
    pids: list[int] = []
    with trio.fail_after(5), trio.CancelScope() as scope:
        async def emit(delta: str) -> None:
            pids.append(int(delta))
            scope.cancel()

        await CommandBackend(argv).run_turn(turn("hi"), emit, Runtime().call_tool)
    assert scope.cancelled_caught
    assert_reaped(pids[0])


async def test_command_that_cannot_start_fails_the_turn(tmp_path: Path) -> None:
    rt = Runtime()
    with pytest.raises(BackendError, match="cannot start"):
        await CommandBackend([str(tmp_path / "no-such-agent")]).run_turn(
            turn("hi"), rt.emit, rt.call_tool)


def assert_reaped(pid: int) -> None:
    """Neither running nor a zombie: the pid is gone."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --- backend_from_spec -----------------------------------------------------------------

def test_backend_from_spec_parses_each_form() -> None:
    demo = backend_from_spec("demo", node_id=ME)
    assert isinstance(demo, DemoBackend) and demo.node_id == ME and demo.name == "demo"
    openai = backend_from_spec("openai:http://127.0.0.1:8080/v1#qwen2.5-7b", node_id=ME)
    assert isinstance(openai, OpenAIBackend) and openai.name == "openai"
    assert (openai.base_url, openai.model) == ("http://127.0.0.1:8080/v1", "qwen2.5-7b")
    bare = backend_from_spec("openai:https://[::1]:8443/v1/chat/completions", node_id=ME)
    assert isinstance(bare, OpenAIBackend)
    assert (bare.base_url, bare.model) == ("https://[::1]:8443/v1", "")
    command = backend_from_spec("command:python3 -u 'my agent.py' --fast", node_id=ME)
    assert isinstance(command, CommandBackend) and command.name == "command"
    assert command.argv == ["python3", "-u", "my agent.py", "--fast"]
    backends: list[AgentBackend] = [demo, openai, command]  # they satisfy the protocol
    assert len(backends) == 3


@pytest.mark.parametrize("spec, words", [
    ("", "unknown agent backend"),
    ("gpt", "unknown agent backend 'gpt'"),
    ("demo:x", "unknown agent backend"),
    ("openai:", "http(s) URL"),
    ("openai:ftp://host/v1", "http(s) URL"),
    ("openai:http://#model", "http(s) URL"),
    ("openai:http://host:port/v1", "http(s) URL"),
    ("command:", "needs a command"),
    ("command:   ", "needs a command"),
    ("command:python3 'unclosed", "agent backend command: No closing quotation"),
])
def test_backend_from_spec_refuses_a_bad_spec_in_one_line(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
        backend_from_spec(spec, node_id=ME)
    assert "\n" not in str(err.value)
