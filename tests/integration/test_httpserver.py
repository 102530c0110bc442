"""hd_shell.http.server against real clients on 127.0.0.1.

httpx (sync, in a worker thread) and the ``websockets`` client are what a user would
point at the listener; a small h11 client over a trio stream is used where a test needs
control over the bytes (stalled heads, oversized heads, connection budgets). Every
limit is shrunk per test so nothing waits for the production deadlines.
"""

from __future__ import annotations

import errno
import gc
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import httpx
import pytest
import trio
import websockets.exceptions as wse
from websockets.sync.client import connect as ws_connect

from hd_shell.http.server import Request, Response, ServerLimits, serve
from hd_shell.ws.link import LinkClosed, WsLink, dial_ws


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    yield
    gc.collect()


@dataclass
class App:
    requests: list[Request] = field(default_factory=list)
    ws_closed: list[LinkClosed] = field(default_factory=list)

    async def http(self, request: Request) -> Response:
        self.requests.append(request)
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        if request.path == "/hello":
            return Response(200, b'{"hello":"world"}', headers=(("x-extra", "1"),))
        if request.path == "/page":
            return Response(200, b"<p>hi</p>", content_type="text/html; charset=utf-8")
        if request.path == "/json" and request.method == "POST":
            return Response(200, json.dumps({"got": json.loads(request.body)}).encode())
        if request.path == "/bad-header":
            return Response(200, b"{}", headers=(("x-bad", "a\r\nb"),))
        return Response(404, b'{"error":"not_found"}')

    def websocket_check(self, request: Request) -> Response | None:
        self.requests.append(request)
        if request.path == "/check-boom":
            raise RuntimeError("check bug")
        if request.path not in ("/ws", "/ws-boom"):
            return Response(403, b'{"error":"forbidden"}')
        return None

    async def websocket(self, request: Request, link: WsLink) -> None:
        if request.path == "/ws-boom":
            raise RuntimeError("websocket handler bug")
        try:
            while True:
                await link.send_many(await link.receive_some())
        except LinkClosed as exc:
            self.ws_closed.append(exc)


@asynccontextmanager
async def running(app: Any, limits: ServerLimits | None = None,
                  counts: list[str] | None = None) -> AsyncIterator[int]:
    sink: list[str] = [] if counts is None else counts
    async with trio.open_nursery() as n:
        _, port = await n.start(partial(serve, app, "127.0.0.1", 0,
                                        limits=limits or ServerLimits(), count=sink.append,
                                        name="test"))
        yield port
        n.cancel_scope.cancel()


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


def http_client(port: int) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=5)


class RawClient:
    """An h11 client over one trio stream: full control over what is sent when."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int, local: str | None = None) -> RawClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port, local_address=local))

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: list[tuple[str, str]] | None = None
                      ) -> tuple[int, dict[str, str], bytes]:
        hdrs = [("host", "test")] + (headers or [])
        if body:
            hdrs.append(("content-length", str(len(body))))
        data = self.h11.send(h11.Request(method=method, target=path, headers=hdrs))
        if body:
            data += self.h11.send(h11.Data(data=body))
        data += self.h11.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        return await self.response()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        status = 0
        headers: dict[str, str] = {}
        body = b""
        with trio.fail_after(5):
            while True:
                ev = self.h11.next_event()
                if ev is h11.NEED_DATA:
                    self.h11.receive_data(await self.stream.receive_some(65536))
                    continue
                if isinstance(ev, h11.Response):
                    status = ev.status_code
                    headers = {k.decode(): v.decode() for k, v in ev.headers}
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    break
                elif isinstance(ev, h11.ConnectionClosed):
                    raise EOFError
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        return status, headers, body

    async def aclose(self) -> None:
        await self.stream.aclose()


async def read_all(stream: trio.SocketStream, timeout: float = 5) -> bytes:
    """Everything until EOF (a reset counts as EOF)."""
    out = b""
    with trio.fail_after(timeout):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return out
            if not data:
                return out
            out += data


async def is_refused(port: int, local: str | None = None) -> bool:
    """Connect; True if the server closes it at once without a word."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
    async with stream:
        with trio.move_on_after(1):
            return await read_all(stream) == b""
        return False


# --- plain HTTP ---------------------------------------------------------------------------


async def test_get_with_keepalive_over_one_connection() -> None:
    app = App()
    async with running(app) as port:
        def client() -> list[tuple[int, Any, Any, bytes]]:
            out = []
            with http_client(port) as c:
                for _ in range(5):
                    r = c.get("/hello?x=1&x=2&y=")
                    peer = r.extensions["network_stream"].get_extra_info("client_addr")
                    out.append((r.status_code, r.headers, peer, r.content))
            return out

        results = await in_thread(client)
    assert [r[0] for r in results] == [200] * 5
    assert len({r[2] for r in results}) == 1  # one TCP connection for all five
    headers = results[0][1]
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(b'{"hello":"world"}'))
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-extra"] == "1"
    assert json.loads(results[0][3]) == {"hello": "world"}
    req = app.requests[0]
    assert (req.method, req.path, req.query) == ("GET", "/hello", {"x": ["1", "2"]})
    assert req.remote_addr == "127.0.0.1"
    assert req.body == b"" and not req.websocket
    assert req.header("Host") == f"127.0.0.1:{port}"


async def test_post_with_a_json_body() -> None:
    app = App()
    async with running(app) as port:
        def client() -> tuple[int, Any]:
            with http_client(port) as c:
                r = c.post("/json", json={"a": [1, 2, "\u2603"]})
                return r.status_code, r.json()

        assert await in_thread(client) == (200, {"got": {"a": [1, 2, "\u2603"]}})
    assert app.requests[0].header("content-type") == "application/json"


async def test_other_content_types_and_head() -> None:
    async with running(App()) as port:
        client = await RawClient.connect(port)
        async with client.stream:
            status, headers, body = await client.request("GET", "/page")
            assert (status, headers["content-type"], body) == (
                200, "text/html; charset=utf-8", b"<p>hi</p>")
            status, headers, body = await client.request("HEAD", "/page")
            assert (status, headers["content-length"], body) == (200, "9", b"")
            status, _, _ = await client.request("GET", "/missing")
            assert status == 404


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with running(App()) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /hello HTTP/1.1\r\nhost: a\r\n\r\n"
                                  b"GET /missing HTTP/1.1\r\nhost: a\r\n\r\n"
                                  b"GET /page HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            raw = await read_all(stream)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)
    assert statuses == [b"200", b"404", b"200"]


async def test_expect_100_continue_gets_a_100_first() -> None:
    app = App()
    async with running(app) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            body = b'{"k": "v"}'
            await stream.send_all(b"POST /json HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\n"
                                  b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
            with trio.fail_after(5):
                first = await stream.receive_some(65536)
            assert first.startswith(b"HTTP/1.1 100 ")
            await stream.send_all(body)
            rest = await read_all(stream)
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert rest.endswith(b'{"got": {"k": "v"}}')


async def test_a_body_over_the_limit_is_refused_with_413() -> None:
    counts: list[str] = []
    limits = ServerLimits(max_body_bytes=1000)
    async with running(App(), limits, counts) as port:
        def client() -> list[int]:
            out = []
            with http_client(port) as c:
                out.append(c.post("/json", content=b"x" * 5000).status_code)
                out.append(c.post("/json", content=iter([b"x" * 600] * 4)).status_code)
                out.append(c.post("/json", content=b'"fits"').status_code)
            return out

        assert await in_thread(client) == [413, 413, 200]
    assert counts == ["body_too_large", "body_too_large"]


async def test_a_head_over_the_limit_gets_431_or_is_closed() -> None:
    counts: list[str] = []
    async with running(App(), ServerLimits(max_head_bytes=4096), counts) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            head = b"GET /hello HTTP/1.1\r\nhost: a\r\n" + b"x-pad: " + b"p" * 8000 + b"\r\n\r\n"
            try:
                await stream.send_all(head)
            except trio.BrokenResourceError:
                pass
            raw = await read_all(stream)
        assert raw == b"" or raw.startswith(b"HTTP/1.1 431 ")
        # a head just under the limit is fine
        client = await RawClient.connect(port)
        async with client.stream:
            status, _, _ = await client.request("GET", "/hello", headers=[("x-pad", "p" * 3000)])
    assert status == 200
    assert counts == ["head_too_large"]


async def test_a_stalled_head_is_closed_at_the_head_timeout() -> None:
    counts: list[str] = []
    async with running(App(), ServerLimits(head_timeout_s=0.3), counts) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            start = trio.current_time()
            await stream.send_all(b"GET /hello HTTP/1.1\r\nhost: a\r\n")  # and then nothing
            raw = await read_all(stream)
            elapsed = trio.current_time() - start
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert 0.25 <= elapsed < 3
    assert counts == ["head_timeout"]


async def test_a_stalled_body_is_closed_at_the_body_timeout() -> None:
    counts: list[str] = []
    async with running(App(), ServerLimits(body_timeout_s=0.3), counts) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"POST /json HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\n{")
            raw = await read_all(stream)
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert counts == ["body_timeout"]


async def test_an_idle_keepalive_connection_is_closed() -> None:
    counts: list[str] = []
    async with running(App(), ServerLimits(keepalive_timeout_s=0.3), counts) as port:
        client = await RawClient.connect(port)
        async with client.stream:
            status, _, _ = await client.request("GET", "/hello")
            start = trio.current_time()
            rest = await read_all(client.stream)
            elapsed = trio.current_time() - start
    assert status == 200
    assert rest == b""
    assert 0.25 <= elapsed < 3
    assert counts == []  # an idle client did nothing wrong


async def test_malformed_requests_get_400_and_the_server_goes_on() -> None:
    counts: list[str] = []
    garbage = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\nbad header line\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: " + b"9" * 5000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"POST /json HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /\x00 HTTP/1.1\r\nhost: a\r\n\r\n",
    ]
    async with running(App(), counts=counts) as port:
        for payload in garbage:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(payload)
                raw = await read_all(stream)
            assert raw.startswith(b"HTTP/1.1 400 ") or raw.startswith(b"HTTP/1.1 413 "), payload
        client = await RawClient.connect(port)
        async with client.stream:
            status, _, _ = await client.request("GET", "/hello")
    assert status == 200
    assert set(counts) <= {"bad_request", "body_too_large"}
    assert counts.count("bad_request") >= len(garbage) - 1


async def test_a_client_that_connects_and_leaves_is_fine() -> None:
    counts: list[str] = []
    async with running(App(), counts=counts) as port:
        for payload in (b"", b"GET /hel"):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                if payload:
                    await stream.send_all(payload)
        client = await RawClient.connect(port)
        async with client.stream:
            status, _, _ = await client.request("GET", "/hello")
    assert status == 200
    assert counts == []


async def test_a_handler_that_raises_gets_500_and_the_next_request_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts: list[str] = []
    async with running(App(), counts=counts) as port:
        def client() -> list[tuple[int, bytes]]:
            with http_client(port) as c:
                return [(r.status_code, r.content)
                        for r in (c.get("/boom"), c.get("/hello"), c.get("/bad-header"),
                                  c.get("/hello"))]

        results = await in_thread(client)
    assert results[0] == (500, b'{"error":"internal","message":"internal error"}')
    assert results[1][0] == 200
    assert results[2] == (500, b'{"error":"internal","message":"internal error"}')
    assert results[3][0] == 200
    assert counts == ["handler_error", "handler_error"]
    assert any("handler bug" in (r.exc_text or "") for r in caplog.records)


# --- WebSocket upgrades --------------------------------------------------------------------


async def test_websocket_upgrade_and_echo() -> None:
    app = App()
    async with running(app) as port:
        def client() -> Any:
            with ws_connect(f"ws://127.0.0.1:{port}/ws?token=t", open_timeout=5,
                            close_timeout=5) as ws:
                ws.send("hi")
                return ws.recv(timeout=5)

        assert await in_thread(client) == "hi"
        with trio.fail_after(5):
            while not app.ws_closed:
                await trio.sleep(0.01)
    req = app.requests[0]
    assert req.websocket and req.path == "/ws" and req.query == {"token": ["t"]}
    assert req.body == b""


async def test_websocket_check_refusal_is_an_http_403() -> None:
    counts: list[str] = []
    async with running(App(), counts=counts) as port:
        def client() -> int:
            with pytest.raises(wse.InvalidStatus) as info:
                ws_connect(f"ws://127.0.0.1:{port}/elsewhere", open_timeout=5)
            return info.value.response.status_code

        assert await in_thread(client) == 403
    assert counts == []  # the app's refusal is the app's business


async def test_websocket_check_or_handler_that_raises_does_not_end_the_server() -> None:
    counts: list[str] = []
    async with running(App(), counts=counts) as port:
        def client() -> tuple[int, int | None]:
            with pytest.raises(wse.InvalidStatus) as info:
                ws_connect(f"ws://127.0.0.1:{port}/check-boom", open_timeout=5)
            status = info.value.response.status_code
            with ws_connect(f"ws://127.0.0.1:{port}/ws-boom", open_timeout=5,
                            close_timeout=5) as ws, pytest.raises(wse.ConnectionClosed) as closed:
                ws.recv(timeout=5)
            rcvd = closed.value.rcvd
            return status, rcvd.code if rcvd else None

        assert await in_thread(client) == (500, 1000)
        link = await dial_ws(f"ws://127.0.0.1:{port}/ws", timeout_s=5)
        await link.send_many(["still serving"])
        assert await link.receive_some() == ["still serving"]
        await link.aclose()
    assert counts == ["handler_error", "handler_error"]


@pytest.mark.parametrize("key, version", [
    ("not base64!", "13"), ("c2hvcnQ=", "13"), ("dGhlIHNhbXBsZSBub25jZQ==", "8"),
    ("dGhlIHNhbXBsZSBub25jZQ==", None), (None, "13"),
])
async def test_a_malformed_upgrade_gets_400(key: str | None, version: str | None) -> None:
    counts: list[str] = []
    async with running(App(), counts=counts) as port:
        client = await RawClient.connect(port)
        async with client.stream:
            headers = [("upgrade", "websocket"), ("connection", "Upgrade")]
            if key is not None:
                headers.append(("sec-websocket-key", key))
            if version is not None:
                headers.append(("sec-websocket-version", version))
            status, _, _ = await client.request("GET", "/ws", headers=headers)
    assert status == 400
    assert counts == ["bad_request"]


async def test_an_http_1_0_upgrade_gets_400_and_the_server_goes_on() -> None:
    counts: list[str] = []
    async with running(App(), counts=counts) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(  # RFC 6455 4.1: the upgrade is an HTTP/1.1 request
                b"GET /ws HTTP/1.0\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
                b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            answer = await read_all(stream)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:40]
        link = await dial_ws(f"ws://127.0.0.1:{port}/ws", timeout_s=5)
        await link.send_many(["still serving"])
        assert await link.receive_some() == ["still serving"]
        await link.aclose()
    assert counts == ["bad_request"]


# --- budgets --------------------------------------------------------------------------------


async def test_connection_caps_refuse_extra_connections_and_keep_the_others() -> None:
    counts: list[str] = []
    limits = ServerLimits(max_connections=3, max_connections_per_address=2)
    async with running(App(), limits, counts) as port:
        a1 = await RawClient.connect(port)
        a2 = await RawClient.connect(port)
        for c in (a1, a2):
            assert (await c.request("GET", "/hello"))[0] == 200
        assert await is_refused(port)  # a third from 127.0.0.1
        b1 = await RawClient.connect(port, local="127.0.0.2")
        assert (await b1.request("GET", "/hello"))[0] == 200
        assert await is_refused(port, local="127.0.0.3")  # 3 open in total
        for c in (a1, a2, b1):  # the admitted ones keep working
            assert (await c.request("GET", "/hello"))[0] == 200
        assert counts == ["over_capacity", "over_capacity"]

        await a1.aclose()  # frees a slot, for 127.0.0.1 and in total
        with trio.fail_after(5):
            while True:
                c = await RawClient.connect(port)
                try:
                    assert (await c.request("GET", "/hello"))[0] == 200
                    break
                except (EOFError, trio.BrokenResourceError):
                    await trio.sleep(0.05)  # the server has not seen a1 go yet
                finally:
                    await c.aclose()
        for c in (a2, b1):
            await c.aclose()


async def test_the_accept_loop_survives_fd_exhaustion(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: list[str] = []
    real_accept = trio.SocketListener.accept
    failures = [3]

    async def flaky_accept(self: trio.SocketListener) -> trio.SocketStream:
        if failures[0] > 0:
            failures[0] -= 1
            await trio.lowlevel.checkpoint()
            raise OSError(errno.EMFILE, "Too many open files")
        return await real_accept(self)

    monkeypatch.setattr(trio.SocketListener, "accept", flaky_accept)
    async with running(App(), counts=counts) as port:
        client = await RawClient.connect(port)
        async with client.stream:
            assert (await client.request("GET", "/hello"))[0] == 200
    assert counts == ["accept_error"] * 3


async def test_binding_a_busy_port_raises_oserror() -> None:
    async with running(App()) as port:
        with pytest.raises(OSError):
            await serve(App(), "127.0.0.1", port)


async def test_the_listener_survives_a_burst_of_abusive_clients() -> None:
    """Many clients at once doing every wrong thing; afterwards a normal request works."""
    counts: list[str] = []
    limits = ServerLimits(head_timeout_s=0.5, body_timeout_s=0.5, max_connections=40,
                          max_connections_per_address=40, max_body_bytes=100)
    payloads = [b"", b"GET", b"POST /json HTTP/1.1\r\nhost: a\r\ncontent-length: 50\r\n\r\n",
                b"\r\n\r\n\r\n", b"GET /ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\n"
                b"connection: upgrade\r\nsec-websocket-version: 13\r\n"
                b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\x81\xff" + b"\xff" * 20,
                b"POST /json HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
                + b"1\r\nx\r\n" * 200]

    async def abuse(i: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            try:
                await stream.send_all(payloads[i % len(payloads)])
                if i % 3 == 0:
                    await read_all(stream)
            except (trio.BrokenResourceError, trio.TooSlowError):
                pass

    async with running(App(), limits, counts) as port:
        start = time.monotonic()
        async with trio.open_nursery() as n:
            for i in range(60):
                n.start_soon(abuse, i)
        client = await RawClient.connect(port)
        async with client.stream:
            assert (await client.request("GET", "/hello"))[0] == 200
    assert time.monotonic() - start < 10
    assert "handler_error" not in counts
