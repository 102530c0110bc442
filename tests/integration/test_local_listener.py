"""The local listener: /ws and /api need the token and our own Origin; each listener
serves only its own paths (SPEC 9). Driven with the third-party ``websockets`` client."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from hd_protocol import decode_invite

from .conftest import NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for the whole module: these tests only look, they change nothing
    another test here depends on."""
    n = NodeProcess(tmp_path_factory.mktemp("local"), "alice")
    n.start()
    try:
        yield n
    finally:
        n.stop()


def _open(url: str, **kw: Any) -> int | dict[str, Any]:
    """101 -> the first frame (system hello) as a dict; refused -> the HTTP status."""
    try:
        with ws_connect(url, open_timeout=5, close_timeout=2, proxy=None, **kw) as ws:
            return dict(json.loads(ws.recv(timeout=5)))
    except InvalidStatus as exc:
        return int(exc.response.status_code)


async def ws_open(url: str, **kw: Any) -> int | dict[str, Any]:
    return await trio.to_thread.run_sync(lambda: _open(url, **kw))


async def test_ws_without_token_is_refused_with_403(node: NodeProcess) -> None:
    assert await ws_open(node.ws_url, origin=node.origin) == 403


async def test_ws_with_a_wrong_token_is_refused_with_403(node: NodeProcess) -> None:
    assert await ws_open(f"{node.ws_url}?token=x{node.token}", origin=node.origin) == 403


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:1",
                                    "null", "https://127.0.0.1"])
async def test_ws_with_a_foreign_origin_is_refused_even_with_the_token(
    node: NodeProcess, origin: str
) -> None:
    assert await ws_open(f"{node.ws_url}?token={node.token}", origin=origin) == 403


def _raw_upgrade_status(port: int, path: str, host_header: str) -> int:
    """Send a WebSocket upgrade by hand (exactly one Host header) and read the status."""
    req = (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(req.encode())
        head = s.recv(4096).decode("latin-1")
    return int(head.split(" ", 2)[1])


async def test_ws_with_a_foreign_host_header_is_refused(node: NodeProcess) -> None:
    # DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own Host.
    path = f"/ws?token={node.token}"
    status = await trio.to_thread.run_sync(
        lambda: _raw_upgrade_status(node.ui_port, path, f"evil.example:{node.ui_port}"))
    assert status == 403
    ok = await trio.to_thread.run_sync(
        lambda: _raw_upgrade_status(node.ui_port, path, f"127.0.0.1:{node.ui_port}"))
    assert ok == 101


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_ws_with_the_token_and_our_own_origin_is_accepted(
    node: NodeProcess, host: str
) -> None:
    url = f"ws://{host}:{node.ui_port}/ws?token={node.token}"
    hello = await ws_open(url, origin=f"http://{host}:{node.ui_port}")
    assert isinstance(hello, dict)
    assert (hello["channel"], hello["event"]) == ("system", "hello")
    assert hello["data"]["node_id"] == node.node_id


async def test_peer_ws_is_not_served_on_the_local_listener(node: NodeProcess) -> None:
    url = f"ws://127.0.0.1:{node.ui_port}/peer-ws?token={node.token}"
    assert await ws_open(url, origin=node.origin) == 403


async def test_ws_is_not_served_on_the_peer_listener(node: NodeProcess) -> None:
    url = f"ws://127.0.0.1:{node.peer_port}/ws?token={node.token}"
    assert await ws_open(url) == 403
    assert await ws_open(url, origin=f"http://127.0.0.1:{node.peer_port}") == 403
    # ... and no HTTP either: not the page, not the API, not the metrics.
    for path in ("/", "/api/peers", "/metrics", "/healthz"):
        r = await node.http("GET", path)
        assert r.status_code == 200, path

        def get(p: str = path) -> int:
            with httpx.Client(timeout=5) as c:
                return c.get(f"http://127.0.0.1:{node.peer_port}{p}",
                             headers={"Authorization": f"Bearer {node.token}"}).status_code

        assert await trio.to_thread.run_sync(get) == 404, path


async def test_api_without_the_token_is_refused_with_403(node: NodeProcess) -> None:
    r = await node.http("GET", "/api/peers", token=False)
    assert r.status_code == 403
    assert r.json()["error"] == "auth"
    r = await node.http("POST", "/api/invites", token=False, json={})
    assert r.status_code == 403
    r = await node.http("GET", "/api/peers", token=False,
                        headers={"Authorization": "Bearer not-the-token"})
    assert r.status_code == 403


async def test_api_with_the_token_but_a_foreign_origin_is_refused(node: NodeProcess) -> None:
    r = await node.http("POST", "/api/invites", json={},
                        headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


async def test_api_with_the_token_answers(node: NodeProcess) -> None:
    r = await node.http("GET", "/api/self")
    assert r.status_code == 200
    assert r.json()["node_id"] == node.node_id
    assert (await node.http("GET", "/healthz", token=False)).json()["ok"] is True


def _websockets_session(url: str, origin: str) -> list[dict[str, Any]]:
    """A tab written with the ``websockets`` sync client (not our NodeClient)."""
    got: list[dict[str, Any]] = []
    with ws_connect(url, origin=origin, open_timeout=5, close_timeout=2, proxy=None) as ws:
        def answer(req: str) -> dict[str, Any]:
            while True:
                ev = json.loads(ws.recv(timeout=5))
                got.append(ev)
                if ev["data"].get("req") == req:
                    return dict(ev)

        got.append(json.loads(ws.recv(timeout=5)))  # system hello, unasked
        for i, (channel, event) in enumerate([("system", "hello"),
                                              ("network", "list_peers"),
                                              ("network", "invite_create")]):
            ws.send(json.dumps({"channel": channel, "event": event, "data": {"req": f"q{i}"}}))
            answer(f"q{i}")
    return got


async def test_websockets_library_client_gets_hello_lists_peers_and_creates_an_invite(
    node: NodeProcess,
) -> None:
    url = f"ws://127.0.0.1:{node.ui_port}/ws?token={node.token}"
    events = await trio.to_thread.run_sync(lambda: _websockets_session(url, node.origin))
    by = {(e["channel"], e["event"], e["data"].get("req")): e["data"] for e in events}
    assert by[("system", "hello", None)]["node_id"] == node.node_id
    assert by[("system", "hello", "q0")]["node_id"] == node.node_id
    peers = by[("network", "peers", "q1")]
    assert peers["self"]["node_id"] == node.node_id
    assert isinstance(peers["peers"], list)
    inv = by[("network", "invite", "q2")]
    decoded = decode_invite(inv["invite"])
    assert decoded["node_id"] == node.node_id
    assert decoded["exp"] == inv["expires"]
    assert [a["url"] for a in decoded["addrs"]] == [node.peer_url]
