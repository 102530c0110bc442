"""Agent to agent (SPEC 6.3) between real nodes: the demo backend, an OpenAI-compatible
endpoint speaking the real streaming protocol, every refusal of the callee's admission,
cancel and timeouts, and backends that hang or crash while the node keeps serving."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import trio

from hd_node.client import NodeClient

from .conftest import Cluster, NodeProcess, eventually

DEMO_REMOTE = "[network]\nagentBackend = \"demo\"\nallowRemoteAgent = true\n"
AUTONOMOUS = DEMO_REMOTE + "remoteAgentMode = \"autonomous\"\n"


def _events(tab: NodeClient, turn_id: str, event: str | None = None) -> list[dict[str, Any]]:
    return [e["data"] for e in tab.events if e.get("channel") == "agent"
            and (e.get("data") or {}).get("turnId") == turn_id
            and (event is None or e.get("event") == event)]


async def _ask_peer(tab: NodeClient, turn_id: str, peer: NodeProcess, prompt: str,
                    timeout: float = 30) -> dict[str, Any]:
    """Ask ``peer``'s agent from ``tab``; the tab's events of that turn, summed up."""
    done = await tab.request("agent", "ask_peer", {"turnId": turn_id,
                                                   "node_id": peer.node_id,
                                                   "prompt": prompt}, timeout=timeout)
    tokens = "".join(e["delta"] for e in _events(tab, turn_id, "token"))
    answers = [e["text"] for e in _events(tab, turn_id, "answer")]
    errors = _events(tab, turn_id, "error")
    return {"ok": done["ok"], "tokens": tokens, "answers": answers, "errors": errors}


def _command_backend(tmp: Path, name: str, body: str) -> str:
    """A ``command:`` backend: a Python script speaking the JSON-lines protocol."""
    script = tmp / f"{name}.py"
    script.write_text(textwrap.dedent(body))
    return f"command:{sys.executable} {script}"


# --- the demo backend, streamed back ------------------------------------------------------


async def test_ask_peer_streams_tokens_then_the_demo_answer_of_the_peer(
    cluster: Cluster,
) -> None:
    alice = cluster.new("alice")
    bob = cluster.new("bob", extra_args=["--agent-backend", "demo", "--allow-remote-agent"])
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    bob_info = await alice.peer(bob.node_id)
    assert bob_info is not None and "agent" in bob_info["capabilities"]
    me = (await bob.http("GET", "/api/self")).json()
    assert me["agent_backend"] == "demo" and "agent" in me["capabilities"]
    assert (await alice.http("GET", "/api/self")).json()["agent_backend"] is None
    async with alice.client() as tab:
        got = await _ask_peer(tab, "t1", bob, "what is the weather like")
    assert got["ok"] is True and got["errors"] == []
    (answer,) = got["answers"]
    assert f"demo-agent@{bob.node_id}: what is the weather like" in answer
    assert got["tokens"] == answer  # word by word, in order, each once
    assert len([1 for _ in got["tokens"].split()]) > 3


async def test_an_openai_backend_asks_a_peer_as_a_tool_and_answers_with_its_result(
    cluster: Cluster, tmp_path: Path,
) -> None:
    bob = cluster.new("bob", config=DEMO_REMOTE)
    await cluster.start(bob)
    stub = await _openai_stub(tmp_path, [
        {"tool_call": {"name": "agent__ask_peer",
                       "arguments": {"peerId": bob.node_id, "prompt": "capital of France?"}}},
        {"echo_tool_result": "Bob's agent says: "},
    ])
    try:
        alice = cluster.new("alice", config=(
            f"[network]\nagentBackend = \"openai:{stub['url']}#test-model\"\n"))
        await cluster.start(alice)
        await cluster.pair(alice, bob)
        async with alice.client() as tab:
            done = await tab.request("agent", "ask", {"turnId": "q",
                                                      "prompt": "ask bob something"},
                                     timeout=30)
            assert done == {"turnId": "q", "ok": True, "req": done["req"]}
            calls = _events(tab, "q", "tool_call")
            results = _events(tab, "q", "tool_result")
            (answer,) = [e["text"] for e in _events(tab, "q", "answer")]
        assert [c["name"] for c in calls] == ["agent.ask_peer"]
        assert results[0]["ok"] is True
        assert f"demo-agent@{bob.node_id}: capital of France?" in results[0]["content"]
        assert answer.startswith("Bob's agent says: ")
        assert f"demo-agent@{bob.node_id}: capital of France?" in answer
    finally:
        await stub["stop"]()


async def _openai_stub(tmp: Path, script: list[dict[str, Any]]) -> dict[str, Any]:
    """tests/integration/openai_stub.py as a process of its own, scripted."""
    script_path = tmp / "openai-script.json"
    script_path.write_text(json.dumps(script))
    port_file = tmp / "openai.port"
    here = Path(__file__).resolve().parent.parent
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "integration.openai_stub", "--port-file", str(port_file),
         "--script", str(script_path)], cwd=str(here),
        env={**os.environ, "PYTHONPATH": str(here)})

    async def up() -> bool:
        return port_file.exists() and port_file.read_text().strip().isdigit()

    await eventually(up, timeout=15, what="the OpenAI stub to listen")

    async def stop() -> None:
        proc.terminate()  # the stub exits 0 on SIGTERM
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    return {"url": f"http://127.0.0.1:{port_file.read_text().strip()}/v1", "stop": stop}


# --- the callee's admission, in order -------------------------------------------------------


async def test_without_allow_remote_agent_the_caller_gets_a_clear_refusal(
    cluster: Cluster,
) -> None:
    alice = cluster.new("alice")
    bob = cluster.new("bob", config="[network]\nagentBackend = \"demo\"\n")
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    async with alice.client() as tab:
        got = await _ask_peer(tab, "t", bob, "hello")
    assert got["ok"] is False and got["answers"] == []
    (err,) = got["errors"]
    assert err["code"] == "not_allowed" and "does not take agent requests" in err["message"]


async def test_a_loop_a_fourth_hop_and_plan_mode_are_refused(cluster: Cluster) -> None:
    # a - b - c - d - e in a line, every one answering peers in autonomous mode but c,
    # which stays in plan mode (read-only tools only).
    a, b, c, d, e = (cluster.new(n, config=AUTONOMOUS) for n in ("a", "b", "c", "d", "e"))
    c_plan = cluster.new("cplan", config=DEMO_REMOTE)
    await cluster.start(a, b, c, d, e, c_plan)
    async with trio.open_nursery() as n:
        for x, y in ((a, b), (b, c), (c, d), (d, e), (b, c_plan)):
            n.start_soon(cluster.pair, x, y)
    async with a.client() as tab:
        # a -> b -> a: b's turn asks a, whose admission sees itself in the chain.
        got = await _ask_peer(tab, "loop", b, f"ask {a.node_id}: hi")
        assert got["ok"] is True
        assert "loop" in got["answers"][0], got
        # a -> b -> c -> d -> e: e gets a chain of four nodes.
        hops = f"ask {c.node_id}: ask {d.node_id}: ask {e.node_id}: hi"
        got = await _ask_peer(tab, "hops", b, hops, timeout=60)
        assert "too_many_hops" in got["answers"][0], got
        # a -> b -> c -> d works (three nodes in the chain at d).
        got = await _ask_peer(tab, "three", b, f"ask {c.node_id}: ask {d.node_id}: hi")
        assert f"demo-agent@{d.node_id}: hi" in got["answers"][0], got
        # plan mode: cplan's turn may not use agent.ask_peer (a side effect).
        got = await _ask_peer(tab, "plan", b, f"ask {c_plan.node_id}: ask {a.node_id}: x")
        assert "denied" in got["answers"][0] and "plan" in got["answers"][0], got


async def test_a_guest_is_refused(cluster: Cluster) -> None:
    from .servers import Servers

    (cluster.root / "servers").mkdir()
    servers = Servers(cluster.root / "servers")
    try:
        lobby = await servers.lobby().astart()
        alice = cluster.new("alice")
        bob = cluster.new("bob", config=DEMO_REMOTE)
        await cluster.start(alice, bob)
        for node in (alice, bob):
            async with node.client() as t:
                await t.request("lobby", "connect", {"url": lobby.url})

                async def up(t: NodeClient = t) -> bool:
                    return bool((await t.request("lobby", "state"))["connected"])

                await eventually(up, timeout=10, what="the lobby")
        async with bob.client() as tb:
            room = (await tb.request("lobby", "create_room", {
                "name": "r", "visibility": "public", "joinPolicy": "open"}))["room"]
        async with alice.client() as ta:
            joined = await ta.request("lobby", "join_room", {"roomId": room["id"]},
                                      timeout=20)
            assert joined["peer"]["level"] == "guest"
            got = await _ask_peer(ta, "g", bob, "hello")
        assert got["ok"] is False and got["errors"][0]["code"] == "forbidden", got
        assert "remote agent turn peer=" not in bob.log_text()  # no turn ever started
    finally:
        servers.stop_all()


async def test_a_third_concurrent_request_from_one_peer_is_busy(cluster: Cluster) -> None:
    alice = cluster.new("alice")
    bob = cluster.new("bob", config=DEMO_REMOTE)
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    long_prompt = " ".join(f"w{i}" for i in range(300))  # ~3 s of words at 10 ms each
    async with alice.client() as tab:
        results: dict[str, dict[str, Any]] = {}

        async def one(turn: str) -> None:
            results[turn] = await _ask_peer(tab, turn, bob, long_prompt, timeout=60)

        async with trio.open_nursery() as n:
            for turn in ("t1", "t2"):
                n.start_soon(one, turn)
            await trio.sleep(0.5)  # both running at bob
            n.start_soon(one, "t3")
    assert results["t1"]["ok"] and results["t2"]["ok"], results
    assert results["t3"]["ok"] is False and results["t3"]["errors"][0]["code"] == "busy"
    async with alice.client() as tab:  # and the slots are free again
        assert (await _ask_peer(tab, "t4", bob, "again"))["ok"] is True


# --- cancel and timeouts ----------------------------------------------------------------------

SLOW = """
    import json, os, sys, time
    turn = json.loads(sys.stdin.readline())
    open(os.environ.get("PIDFILE", "{pidfile}"), "w").write(str(os.getpid()))
    for i in range(600):
        print(json.dumps({{"type": "token", "delta": f"t{{i}} "}}), flush=True)
        time.sleep(0.1)
    print(json.dumps({{"type": "answer", "text": "finished"}}), flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_cancel_from_the_tab_stops_the_peers_turn(cluster: Cluster,
                                                         tmp_path: Path) -> None:
    pidfile = tmp_path / "slow.pid"
    backend = _command_backend(tmp_path, "slow", SLOW.format(pidfile=pidfile))
    alice = cluster.new("alice")
    bob = cluster.new("bob", config=f"[network]\nagentBackend = '{backend}'\n"
                                    "allowRemoteAgent = true\n")
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    async with alice.client() as tab, trio.open_nursery() as n:
        out: dict[str, Any] = {}

        async def ask() -> None:
            out.update(await _ask_peer(tab, "c", bob, "take your time", timeout=30))

        n.start_soon(ask)
        await eventually(lambda: _has_tokens(tab, "c"), timeout=15,
                         what="tokens from bob's slow backend")
        pid = int(pidfile.read_text())
        assert _alive(pid)
        await tab.request("agent", "cancel", {"turnId": "c"})
    assert out["ok"] is False and out["errors"][0]["code"] == "cancelled"
    # bob got agent_cancel: its turn stopped and the backend process was killed.
    await eventually(lambda: _not_alive(pid), timeout=10, what="bob's backend to be stopped")
    assert "remote agent turn stopped" in bob.log_text()
    assert "reason=cancelled" in bob.log_text()


async def _has_tokens(tab: NodeClient, turn: str) -> bool:
    return bool(_events(tab, turn, "token"))


async def _not_alive(pid: int) -> bool:
    return not _alive(pid)


async def test_a_hanging_backend_times_out_and_the_nodes_keep_serving(
    cluster: Cluster, tmp_path: Path,
) -> None:
    hang = _command_backend(tmp_path, "hang", """
        import sys, time
        sys.stdin.readline()
        time.sleep(3600)
    """)
    alice = cluster.new("alice", config="[network]\nagentTimeout = 3\n")
    bob = cluster.new("bob", config=f"[network]\nagentBackend = '{hang}'\n"
                                    "allowRemoteAgent = true\n")
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    async with alice.client() as ta, bob.client() as tb:
        t0 = trio.current_time()
        async with trio.open_nursery() as n:
            out: dict[str, Any] = {}

            async def ask() -> None:
                out.update(await _ask_peer(ta, "h", bob, "are you there?", timeout=20))

            n.start_soon(ask)
            # Meanwhile chat flows both ways.
            for i in range(5):
                await ta.request("peerchat", "send", {"node_id": bob.node_id,
                                                      "text": f"ping {i}"})
                await tb.request("peerchat", "send", {"node_id": alice.node_id,
                                                      "text": f"pong {i}"})
            await ta.wait_for("peerchat", "status",
                              lambda d: d["status"] == "delivered", timeout=10)
            assert trio.current_time() - t0 < 3, "chat waited for the agent"
        elapsed = trio.current_time() - t0
    assert out["ok"] is False and out["errors"][0]["code"] == "timeout", out
    assert 2.5 < elapsed < 8, elapsed
    await eventually(lambda: _logged(bob, "reason=cancelled"), timeout=10,
                     what="bob to get agent_cancel")


async def _logged(node: NodeProcess, text: str) -> bool:
    return text in node.log_text()


async def test_a_crashing_backend_is_an_error_not_a_dead_node(cluster: Cluster,
                                                               tmp_path: Path) -> None:
    crash = _command_backend(tmp_path, "crash", """
        import sys
        sys.stdin.readline()
        sys.exit(3)
    """)
    alice = cluster.new("alice")
    bob = cluster.new("bob", config=f"[network]\nagentBackend = '{crash}'\n"
                                    "allowRemoteAgent = true\n")
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    async with alice.client() as tab:
        for turn in ("x1", "x2", "x3"):
            got = await _ask_peer(tab, turn, bob, "crash please")
            assert got["ok"] is False and got["errors"][0]["code"] == "backend", got
    assert bob.running and alice.running
    assert (await bob.http("GET", "/healthz", token=False)).json()["ok"] is True


async def test_a_bad_agent_backend_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from .conftest import arun_cli

    for args in (["--agent-backend", "gpt"], ["--allow-remote-agent"],
                 ["--agent-backend", "openai:"]):
        res = await arun_cli("run", "--data-dir", str(tmp_path / "n"), "--ui-port", "0",
                             "--peer-port", "0", *args)
        assert res.returncode == 2, (args, res)
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert "agent" in res.stderr.lower(), res.stderr
