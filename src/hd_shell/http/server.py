"""A small HTTP/1.1 + WebSocket listener on h11, wsproto and trio.

Why not hypercorn: an exception in one connection's task ended the whole server
(node.py had to restart it in a loop), it had no per-address connection budget, and the
ASGI message queues cost a task switch per frame. This server does only what the node
needs: small JSON/HTML responses with keep-alive, and WebSocket upgrades handed to the
app as a :class:`~hd_shell.ws.link.WsLink` it owns until it returns.

Robustness rules, all enforced here rather than left to the app:

* nothing a client sends or does ends :func:`serve` (every connection task catches
  everything; the accept loop survives EMFILE/ENFILE);
* every wait has a deadline: the request head, the body, writing a response, the idle
  time between keep-alive requests;
* the unauthenticated work a listener does is budgeted: open connections in total and
  per remote address (refused before any parsing), head and body sizes.

This module is the listener (accept loop, budgets); one connection's request loop and
upgrade are :mod:`hd_shell.http.connection`. The app-facing types live in :mod:`hd_shell.http.api`
(shared by both without a cycle) and are importable from here.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio

from hd_shell.http.api import DEFAULT_LIMITS, App, Request, Response, ServerLimits
from hd_shell.http.connection import HttpConnection
from hd_shell.ws.dial import peer_ip

from ..logs import logger

ACCEPT_RETRY_S = 0.1
BACKLOG = 1024
_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def _no_count(why: str) -> None:
    return None


# --- the listener -----------------------------------------------------------------------


class _Budget:
    """Open connections, in total and per remote address, counted accept to close, and
    the rate at which one address may open new ones (a token bucket per address)."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.total = 0
        self.per_address: dict[str | None, int] = {}
        self._buckets: dict[str | None, tuple[float, float]] = {}  # addr -> (tokens, at)

    def admit(self, addr: str | None, *, over_total: bool = False) -> str | None:
        """Take a slot for ``addr``, or return why not (``over_total``: one over the
        total is allowed, for a slot an evicted connection is about to give back)."""
        if self.total >= self.limits.max_connections + (1 if over_total else 0):
            return "max_connections"
        if self.per_address.get(addr, 0) >= self.limits.max_connections_per_address:
            return "max_connections_per_address"
        if not self._rate_ok(addr):
            return "connection_rate"
        self.total += 1
        self.per_address[addr] = self.per_address.get(addr, 0) + 1
        return None

    def _rate_ok(self, addr: str | None) -> bool:
        rate = self.limits.new_connections_per_address_per_s
        if rate <= 0:
            return True
        burst = float(max(1, self.limits.new_connections_per_address_burst))
        now = trio.current_time()
        tokens, at = self._buckets.get(addr, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        ok = tokens >= 1.0
        self._buckets[addr] = (tokens - 1.0 if ok else tokens, now)
        if len(self._buckets) > 4096:  # forget addresses whose bucket is full again
            self._buckets = {a: (t, w) for a, (t, w) in self._buckets.items()
                             if t + (now - w) * rate < burst}
        return ok

    def release(self, addr: str | None) -> None:
        self.total -= 1
        left = self.per_address.get(addr, 1) - 1
        if left > 0:
            self.per_address[addr] = left
        else:
            self.per_address.pop(addr, None)


class _QuietLog:
    """At most one line per second for events an attacker can repeat at will (refused
    connections, accept errors): a flood must not turn into a disk-filling log."""

    def __init__(self) -> None:
        self.last = -1e9
        self.suppressed = 0

    def info(self, msg: str, *args: object) -> None:
        now = trio.current_time()
        if now - self.last < 1.0:
            self.suppressed += 1
            return
        self.last = now
        if self.suppressed:
            msg += " suppressed_since_last=%s"
            args = (*args, self.suppressed)
            self.suppressed = 0
        logger("http").info(msg, *args)


async def _bind(host: str, port: int) -> trio.socket.SocketType:
    """One listening socket on (host, port); OSError if that is impossible."""
    infos = await trio.socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                          flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, type_, proto, _, sockaddr = infos[0]
    sock = trio.socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(
    app: App,
    host: str,
    port: int,
    *,
    limits: ServerLimits = DEFAULT_LIMITS,
    count: Callable[[str], None] = _no_count,
    name: str = "http",
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on (host, port) until cancelled.

    Binds one TCP socket (port 0 picks a free one), reports ``(host, actual_port)``
    through ``task_status``, then accepts; each connection is its own task. A failed
    bind raises OSError. ``count(why)`` is called once per refused or failed connection
    or request (for metrics); it must not block.
    """
    sock = await _bind(host, port)
    listener = trio.SocketListener(sock)
    budget = _Budget(limits)
    waiting: dict[HttpConnection, float] = {}  # accepted, no request head yet, by age
    refusals = _QuietLog()
    accept_errors = _QuietLog()

    def counted(why: str) -> None:
        try:
            count(why)
        except Exception:
            logger("http").exception("http count callback failed name=%s why=%s", name, why)

    try:
        actual_port = int(sock.getsockname()[1])
        logger("http").debug("http listener bound name=%s host=%s port=%s", name, host, actual_port)
        task_status.started((host, actual_port))
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    # EMFILE/ENFILE/ENOBUFS/ENOMEM: trio raises them, the listener is
                    # fine. Back off so we do not spin, then try again.
                    counted("accept_error")
                    accept_errors.info("http accept failed name=%s errno=%s error=%s",
                                       name, exc.errno, exc.strerror or exc)
                    await trio.sleep(ACCEPT_RETRY_S)
                    continue
                remote = peer_ip(stream)
                why = budget.admit(remote)
                if why == "max_connections" and _evict_oldest_silent(waiting):
                    # Full of connections that never sent a request: the oldest one
                    # makes room, so a flood of half-open connections cannot lock
                    # every newcomer out until its head timeout.
                    counted("evicted")
                    why = budget.admit(remote, over_total=True)
                if why is not None:
                    counted("over_capacity")
                    refusals.info("http connection refused name=%s remote=%s why=%s",
                                  name, remote, why)
                    with trio.CancelScope(shield=True):
                        await stream.aclose()
                    continue
                conn = HttpConnection(app, limits, counted, name, stream, remote)
                waiting[conn] = trio.current_time()
                nursery.start_soon(_run_connection, conn, budget, waiting)
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()


EVICTABLE_AFTER_S = 0.5  # a connection silent this long may give its slot to a newcomer


def _evict_oldest_silent(waiting: dict[HttpConnection, float]) -> bool:
    """Cancel the oldest connection that has sent no request head for a while."""
    now = trio.current_time()
    for conn, since in list(waiting.items()):
        if not conn.waiting_first:
            waiting.pop(conn, None)
            continue
        if now - since < EVICTABLE_AFTER_S:
            return False  # the oldest is young: this is not a flood of silent sockets
        waiting.pop(conn, None)
        conn.scope.cancel()
        return True
    return False


async def _run_connection(conn: HttpConnection, budget: _Budget,
                          waiting: dict[HttpConnection, float]) -> None:
    """One connection's task: nothing escapes it but cancellation."""
    try:
        with conn.scope:
            await conn.run()
    except _TRANSPORT_ERRORS as exc:
        logger("http").debug("http connection lost name=%s remote=%s error=%s",
                  conn.name, conn.remote, type(exc).__name__)
    except Exception:
        conn.count("handler_error")
        logger("http").exception("http connection failed name=%s remote=%s", conn.name, conn.remote)
    finally:
        waiting.pop(conn, None)
        budget.release(conn.remote)
        with trio.CancelScope(shield=True):
            try:
                await conn.stream.aclose()
            except Exception as exc:
                logger("http").debug("http close failed name=%s remote=%s error=%s",
                          conn.name, conn.remote, type(exc).__name__)


__all__ = ["DEFAULT_LIMITS", "App", "Request", "Response", "ServerLimits", "serve"]
