"""WsLink and dial_ws against real sockets on 127.0.0.1.

The server side is hd_shell.http.server.serve; the clients are the third-party
``websockets`` library (sync client, run in a worker thread) where a user would use one,
and our own dial_ws. Every test runs with ``filterwarnings = error``, so a leaked socket
(ResourceWarning) fails it; the autouse fixture forces a collection to make sure.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
import websockets.exceptions as wse
from websockets.sync.client import connect as ws_connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection
from wsproto.events import Request as WsRequest

from hd_shell.http.server import Request, Response, ServerLimits, serve
from hd_shell.ws.link import MAX_EVENTS_PER_PASS, DialError, LinkClosed, WsLink, dial_ws

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    yield
    gc.collect()


@dataclass
class EchoApp:
    """/echo echoes every batch back in one send_many; /close-4000 closes at once;
    /stream sends ``stream_batches`` batches of 64 while reading concurrently;
    /forbidden is refused with 403, anything else with 404."""

    stream_batches: int = 200
    closes: list[LinkClosed] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    server_links: list[WsLink] = field(default_factory=list)
    ended: trio.Event = field(default_factory=trio.Event)

    async def http(self, request: Request) -> Response:
        return Response(404, b'{"error":"not_found"}')

    def websocket_check(self, request: Request) -> Response | None:
        if request.path == "/forbidden":
            return Response(403, b'{"error":"forbidden","message":"go away"}')
        if request.path not in ("/echo", "/close-4000", "/stream"):
            return Response(404, b'{"error":"not_found"}')
        return None

    async def websocket(self, request: Request, link: WsLink) -> None:
        self.server_links.append(link)
        try:
            if request.path == "/close-4000":
                await link.aclose(4000, "bye")
                return
            if request.path == "/stream":
                await self._stream(link)
                return
            while True:
                msgs = await link.receive_some()
                self.batches.append(len(msgs))
                await link.send_many(msgs)
        except LinkClosed as exc:
            self.closes.append(exc)
        finally:
            self.ended.set()

    async def _stream(self, link: WsLink) -> None:
        async def reader() -> None:
            with pytest.raises(LinkClosed):
                while True:
                    await link.receive_some()

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            for b in range(self.stream_batches):
                await link.send_many([f"{b}:{i}:" + "x" * 500 for i in range(64)])
            await link.send_many(["end"])


@asynccontextmanager
async def running(app: Any, limits: ServerLimits | None = None,
                  counts: list[str] | None = None) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1:<free port> for the body of the with block."""
    sink: list[str] = [] if counts is None else counts
    async with trio.open_nursery() as n:
        _, port = await n.start(partial(serve, app, "127.0.0.1", 0,
                                        limits=limits or ServerLimits(), count=sink.append))
        yield port
        n.cancel_scope.cancel()


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


async def receive_n(link: WsLink, n: int) -> tuple[list[str | bytes], list[int]]:
    got: list[str | bytes] = []
    sizes: list[int] = []
    with trio.fail_after(10):
        while len(got) < n:
            batch = await link.receive_some()
            sizes.append(len(batch))
            got.extend(batch)
    return got, sizes


def closed_code(exc: wse.ConnectionClosed) -> int | None:
    return exc.rcvd.code if exc.rcvd is not None else None


# --- messages -------------------------------------------------------------------------


async def test_text_and_binary_both_ways_with_a_websockets_client() -> None:
    app = EchoApp()
    async with running(app) as port:
        def client() -> tuple[Any, Any]:
            with ws_connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5,
                            close_timeout=5) as ws:
                ws.send("h\u00e9llo \u2603")
                text = ws.recv(timeout=5)
                ws.send(b"\x00\x01\xff")
                data = ws.recv(timeout=5)
            return text, data

        text, data = await in_thread(client)
        assert text == "h\u00e9llo \u2603"
        assert data == b"\x00\x01\xff"
        with trio.fail_after(5):
            await app.ended.wait()
    assert [c.code for c in app.closes] == [1000]


async def test_dial_ws_text_and_binary_both_ways() -> None:
    app = EchoApp()
    async with running(app) as port:
        link = await dial_ws(f"ws://127.0.0.1:{port}/echo", timeout_s=5)
        assert link.kind == "direct"
        assert link.remote_addr == "127.0.0.1"
        assert not link.closed
        await link.send_many(["text \u2603", b"\x00bin"])
        got, _ = await receive_n(link, 2)
        assert got == ["text \u2603", b"\x00bin"]
        assert type(got[0]) is str and type(got[1]) is bytes
        await link.aclose(4001, "done")
        assert link.closed
        with trio.fail_after(5):
            await app.ended.wait()
        with pytest.raises(LinkClosed):
            await link.send_many(["late"])
        with pytest.raises(LinkClosed):
            await link.receive_some()
        await link.aclose()  # idempotent
    assert [(c.code, c.reason) for c in app.closes] == [(4001, "done")]


async def test_many_small_messages_in_one_send_arrive_in_order_and_batched() -> None:
    app = EchoApp()
    async with running(app) as port:
        link = await dial_ws(f"ws://127.0.0.1:{port}/echo", timeout_s=5)
        sent = [f"m{i}:" + "y" * 100 for i in range(2000)]
        await link.send_many(sent[:1000])
        await link.send_many(sent[1000:])
        got, sizes = await receive_n(link, len(sent))
        await link.aclose()
    assert got == sent
    assert max(sizes) > 1  # the client got several messages per receive_some
    assert max(app.batches) > 1  # and so did the server
    assert sum(app.batches) == len(sent)


async def test_a_burst_of_tiny_frames_is_parsed_in_bounded_passes() -> None:
    """40k tiny frames in one write: all arrive in order, but no single receive_some
    parses more than MAX_EVENTS_PER_PASS of them without giving other tasks a turn."""
    app = EchoApp()
    async with running(app) as port:
        link = await dial_ws(f"ws://127.0.0.1:{port}/echo", timeout_s=5)
        sent = [str(i % 10) for i in range(40_000)]
        await link.send_many(sent)
        got, sizes = await receive_n(link, len(sent))
        await link.aclose()
    assert got == sent
    assert max(app.batches) <= MAX_EVENTS_PER_PASS
    assert max(sizes) <= MAX_EVENTS_PER_PASS


async def test_one_mib_passes_and_over_the_limit_closes_with_1009() -> None:
    app = EchoApp()
    async with running(app) as port:
        def client() -> tuple[int, int | None]:
            with ws_connect(f"ws://127.0.0.1:{port}/echo", max_size=4 * MiB,
                            open_timeout=5, close_timeout=5) as ws:
                ws.send(b"a" * MiB)
                echoed = ws.recv(timeout=10)
                ws.send("b" * (MiB + 1))
                with pytest.raises(wse.ConnectionClosed) as info:
                    ws.recv(timeout=10)
            return len(echoed), closed_code(info.value)

        size, code = await in_thread(client)
    assert size == MiB
    assert code == 1009
    assert [c.code for c in app.closes] == [1009]


async def test_the_size_limit_counts_utf8_bytes_not_characters() -> None:
    app = EchoApp()
    limits = ServerLimits(ws_max_message_bytes=1000)
    async with running(app, limits) as port:
        link = await dial_ws(f"ws://127.0.0.1:{port}/echo", timeout_s=5)
        await link.send_many(["\u2603" * 333])  # 999 bytes: passes
        got, _ = await receive_n(link, 1)
        assert got == ["\u2603" * 333]
        await link.send_many(["\u2603" * 334])  # 1002 bytes in 334 characters
        with pytest.raises(LinkClosed) as info, trio.fail_after(5):
            await link.receive_some()
        assert info.value.code == 1009
        await link.aclose()


async def test_dial_ws_enforces_its_own_message_limit() -> None:
    app = EchoApp()
    async with running(app) as port:
        link = await dial_ws(f"ws://127.0.0.1:{port}/echo", timeout_s=5, max_message_size=1000)
        await link.send_many([b"z" * 2000])  # the server echoes it: too big for us
        with pytest.raises(LinkClosed) as info, trio.fail_after(5):
            await link.receive_some()
        assert info.value.code == 1009
        with pytest.raises(LinkClosed):
            await link.receive_some()  # and again on every later call
        await link.aclose()
        with trio.fail_after(5):
            await app.ended.wait()
    assert [c.code for c in app.closes] == [1009]


async def test_fragmented_messages_are_reassembled() -> None:
    app = EchoApp()
    async with running(app) as port:
        def client() -> tuple[Any, Any]:
            with ws_connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5,
                            close_timeout=5) as ws:
                ws.send(["fr\u00e9g", "ment", "ed \u2603"])
                text = ws.recv(timeout=5)
                ws.send([b"\x01" * 3000, b"", b"\x02" * 5])
                data = ws.recv(timeout=5)
            return text, data

        text, data = await in_thread(client)
    assert text == "fr\u00e9gmented \u2603"
    assert data == b"\x01" * 3000 + b"\x02" * 5


async def test_too_many_fragments_close_with_1009() -> None:
    app = EchoApp()
    async with running(app, ServerLimits(ws_max_fragments=8)) as port:
        def client() -> tuple[str, int | None]:
            with ws_connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5,
                            close_timeout=5) as ws:
                # websockets ends a fragmented message with an empty final frame: 7 parts
                # are 8 frames, exactly the limit.
                ws.send(["a"] * 7)
                first = ws.recv(timeout=5)
                try:
                    ws.send(["b"] * 50)
                except wse.ConnectionClosed:
                    pass
                with pytest.raises(wse.ConnectionClosed) as info:
                    ws.recv(timeout=5)
            return str(first), closed_code(info.value)

        first, code = await in_thread(client)
    assert first == "a" * 7
    assert code == 1009


# --- pings --------------------------------------------------------------------------------


async def test_pings_are_answered_so_keepalive_holds_the_connection() -> None:
    app = EchoApp()
    async with running(app) as port:
        def client() -> str:
            with ws_connect(f"ws://127.0.0.1:{port}/echo", ping_interval=0.2,
                            ping_timeout=0.5, open_timeout=5, close_timeout=5) as ws:
                time.sleep(1.3)
                ws.send("still here")
                return str(ws.recv(timeout=5))

        assert await in_thread(client) == "still here"
    assert [c.code for c in app.closes] == [1000]


async def test_a_ping_flood_is_closed_with_1008() -> None:
    app = EchoApp()
    async with running(app, ServerLimits(ws_max_pings=5)) as port:
        def client() -> int | None:
            with ws_connect(f"ws://127.0.0.1:{port}/echo", ping_interval=None,
                            open_timeout=5, close_timeout=5) as ws:
                for i in range(30):
                    try:
                        ws.ping(str(i))
                    except wse.ConnectionClosed:
                        break
                with pytest.raises(wse.ConnectionClosed) as info:
                    ws.recv(timeout=5)
            return closed_code(info.value)

        assert await in_thread(client) == 1008
    assert [c.code for c in app.closes] == [1008]


async def test_pongs_get_out_while_the_server_writer_is_busy() -> None:
    """/stream writes batches from one task while another reads and answers pings: the
    pongs go through the pending buffer (no BusyResourceError, no lost pong)."""
    app = EchoApp(stream_batches=300)
    async with running(app, ServerLimits(ws_max_pings=1000)) as port:
        def client() -> list[str]:
            got: list[str] = []
            with ws_connect(f"ws://127.0.0.1:{port}/stream", ping_interval=0.01,
                            ping_timeout=2, open_timeout=5, close_timeout=5) as ws:
                while True:
                    msg = str(ws.recv(timeout=10))
                    if msg == "end":
                        break
                    got.append(msg)
                    if len(got) % 2000 == 0:
                        time.sleep(0.05)  # let the server's send_all block for a while
            return got

        got = await in_thread(client)
    assert len(got) == 300 * 64
    assert [g.split(":", 2)[:2] for g in got[:3]] == [["0", "0"], ["0", "1"], ["0", "2"]]
    assert got[-1].startswith("299:63:")


# --- closing ------------------------------------------------------------------------------


async def test_server_initiated_close_is_seen_with_its_code() -> None:
    app = EchoApp()
    async with running(app) as port:
        def client() -> tuple[int | None, str | None]:
            with ws_connect(f"ws://127.0.0.1:{port}/close-4000", open_timeout=5,
                            close_timeout=5) as ws, pytest.raises(wse.ConnectionClosed) as info:
                ws.recv(timeout=5)
            rcvd = info.value.rcvd
            return (rcvd.code, rcvd.reason) if rcvd else (None, None)

        assert await in_thread(client) == (4000, "bye")

        link = await dial_ws(f"ws://127.0.0.1:{port}/close-4000", timeout_s=5)
        with pytest.raises(LinkClosed) as info, trio.fail_after(5):
            await link.receive_some()
        assert (info.value.code, info.value.reason) == (4000, "bye")
        assert link.closed
        await link.aclose()


async def test_client_initiated_close_ends_cleanly() -> None:
    app = EchoApp()
    async with running(app) as port:
        def client() -> int | None:
            with ws_connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5,
                            close_timeout=5) as ws:
                ws.send("x")
                ws.recv(timeout=5)
                ws.close(1001, "going")
                return ws.close_code

        assert await in_thread(client) == 1001
        with trio.fail_after(5):
            await app.ended.wait()
    assert [(c.code, c.reason) for c in app.closes] == [(1001, "going")]


async def test_aclose_while_another_task_is_reading() -> None:
    app = EchoApp()
    async with running(app) as port:
        link = await dial_ws(f"ws://127.0.0.1:{port}/echo", timeout_s=5)
        seen: list[LinkClosed] = []

        async def reader() -> None:
            try:
                while True:
                    await link.receive_some()
            except LinkClosed as exc:
                seen.append(exc)

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await trio.sleep(0.05)
            with trio.fail_after(5):
                await link.aclose(4002, "bye")
        assert len(seen) == 1
        with trio.fail_after(5):
            await app.ended.wait()
    assert [c.code for c in app.closes] == [4002]


async def test_cancelled_send_marks_the_link_broken() -> None:
    app = EchoApp()
    async with running(app) as port:
        link = await dial_ws(f"ws://127.0.0.1:{port}/echo", timeout_s=5)
        big = [b"q" * 65536] * 64  # 4 MiB: more than the socket buffers take at once
        with trio.move_on_after(0):
            await link.send_many(big)  # cancelled inside send_all
        # either it was cancelled before writing (still usable) or mid-write (broken)
        if link.closed:
            with pytest.raises(LinkClosed):
                await link.send_many(["x"])
        with trio.fail_after(5):
            await link.aclose()


async def test_protocol_errors_are_closed_with_1002() -> None:
    app = EchoApp()
    async with running(app) as port:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                ws = WSConnection(ConnectionType.CLIENT)
                await stream.send_all(ws.send(WsRequest(host=f"127.0.0.1:{port}",
                                                        target="/echo")))
                accepted = False
                while not accepted:
                    ws.receive_data(await stream.receive_some(65536))
                    accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
                # opcode 0x3 is reserved; masked, empty payload
                await stream.send_all(b"\x83\x80\x00\x00\x00\x00")
                code = None
                while code is None:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    ws.receive_data(data)
                    for e in ws.events():
                        if isinstance(e, CloseConnection):
                            code = e.code
        with trio.fail_after(5):
            await app.ended.wait()
    assert code == 1002
    assert [c.code for c in app.closes] == [1002]


async def test_frames_sent_right_after_the_handshake_are_not_lost() -> None:
    """Bytes that arrive in the same read as the request head belong to the link."""
    app = EchoApp()
    async with running(app) as port:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                ws = WSConnection(ConnectionType.CLIENT)
                hello = ws.send(WsRequest(host=f"127.0.0.1:{port}", target="/echo"))
                # Frame a message with a second wsproto client, then glue it to the head.
                from wsproto.connection import Connection
                from wsproto.events import TextMessage
                frame = Connection(ConnectionType.CLIENT).send(TextMessage(data="early"))
                await stream.send_all(hello + frame)
                got: list[str] = []
                while not got:
                    data = await stream.receive_some(65536)
                    assert data
                    ws.receive_data(data)
                    got += [e.data for e in ws.events() if isinstance(e, TextMessage)]
    assert got == ["early"]


# --- dial_ws failures ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def raw_server(handler: Callable[[trio.SocketStream], Any]) -> AsyncIterator[int]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def wrapped(stream: trio.SocketStream) -> None:
        async with stream:
            await handler(stream)

    async with trio.open_nursery() as n:
        n.start_soon(trio.serve_listeners, wrapped, listeners)
        yield port
        n.cancel_scope.cancel()


async def test_dial_a_refused_port_is_unreachable() -> None:
    port = _free_port()
    with pytest.raises(DialError) as info:
        await dial_ws(f"ws://127.0.0.1:{port}/peer-ws", timeout_s=5)
    assert info.value.code == "unreachable"
    assert info.value.status is None
    assert f"127.0.0.1:{port}" in info.value.message


@pytest.mark.parametrize("path, status", [("/forbidden", 403), ("/nope", 404)])
async def test_dial_an_http_status_answer(path: str, status: int) -> None:
    async with running(EchoApp()) as port:
        with pytest.raises(DialError) as info:
            await dial_ws(f"ws://127.0.0.1:{port}{path}?token=secret", timeout_s=5)
    assert info.value.code == "http_status"
    assert info.value.status == status
    assert info.value.message == f"ws://127.0.0.1:{port}{path} answered HTTP {status}"
    assert "secret" not in info.value.message
    if status == 403:
        assert json.loads(info.value.body)["error"] == "forbidden"


@pytest.mark.parametrize("close_after", [False, True])
async def test_dial_a_server_that_sends_garbage_is_a_bad_handshake(close_after: bool) -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.send_all(b"SSH-2.0-OpenSSH_9.2 garbage\r\n\r\n")
        if not close_after:
            await trio.sleep_forever()

    async with raw_server(garbage) as port:
        with pytest.raises(DialError) as info:
            await dial_ws(f"ws://127.0.0.1:{port}/peer-ws", timeout_s=5)
    assert info.value.code == "bad_handshake"


async def test_dial_a_bad_accept_token_is_a_bad_handshake() -> None:
    async def wrong_101(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n")
        await trio.sleep_forever()

    async with raw_server(wrong_101) as port:
        with pytest.raises(DialError) as info:
            await dial_ws(f"ws://127.0.0.1:{port}/peer-ws", timeout_s=5)
    assert info.value.code == "bad_handshake"


async def test_dial_a_server_that_closes_without_answering_is_unreachable() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)

    async with raw_server(hang_up) as port:
        with pytest.raises(DialError) as info:
            await dial_ws(f"ws://127.0.0.1:{port}/peer-ws", timeout_s=5)
    assert info.value.code == "unreachable"


async def test_dial_a_silent_server_times_out_within_the_deadline() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with raw_server(silent) as port:
        start = trio.current_time()
        with pytest.raises(DialError) as info:
            await dial_ws(f"ws://127.0.0.1:{port}/peer-ws", timeout_s=0.3)
        elapsed = trio.current_time() - start
    assert info.value.code == "timeout"
    assert 0.25 <= elapsed < 3


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:1/x", "ws://", "ws://:80/x", "ws://127.0.0.1:99999/x",
    "ws://127.0.0.1:0/x", "ws://user:pw@127.0.0.1:1/x", "ws://127.0.0.1:1/x#frag",
    "ws://127.0.0.1:1/a b", "ws://h\u00e9.example:1/x", "ws://[::1:1/x", "not a url",
])
async def test_dial_bad_urls(url: str) -> None:
    with pytest.raises(DialError) as info:
        await dial_ws(url, timeout_s=1)
    assert info.value.code == "bad_url"


async def test_dial_wss_is_not_supported_yet() -> None:
    with pytest.raises(DialError) as info:
        await dial_ws("wss://127.0.0.1:1/x")
    assert (info.value.code, info.value.message) == ("bad_url", "wss is not supported yet")


async def test_dial_sends_host_with_port_and_extra_headers() -> None:
    seen: list[Request] = []

    class App(EchoApp):
        def websocket_check(self, request: Request) -> Response | None:
            seen.append(request)
            return super().websocket_check(request)

    async with running(App()) as port:
        link = await dial_ws(f"ws://127.0.0.1:{port}/echo?a=1&b=x%20y",
                             extra_headers=[("X-Node", "abc")], kind="relay")
        assert link.kind == "relay"
        await link.aclose()
    (req,) = seen
    assert req.websocket
    assert req.header("host") == f"127.0.0.1:{port}"
    assert req.header("x-node") == "abc"
    assert req.path == "/echo"
    assert req.query == {"a": ["1"], "b": ["x y"]}


@pytest.mark.skipif(not socket.has_ipv6 or os.environ.get("HD_NO_IPV6") == "1",
                    reason="no IPv6")
async def test_dial_an_ipv6_literal() -> None:
    app = EchoApp()
    try:
        async with trio.open_nursery() as n:
            _, port = await n.start(partial(serve, app, "::1", 0))
            link = await dial_ws(f"ws://[::1]:{port}/echo", timeout_s=5)
            assert link.remote_addr == "::1"
            await link.send_many(["v6"])
            got, _ = await receive_n(link, 1)
            assert got == ["v6"]
            await link.aclose()
            n.cancel_scope.cancel()
    except OSError as exc:  # no ::1 on this machine
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
