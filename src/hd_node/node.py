"""Running a node: open the store, bind both listeners, run the hub, write node.json.

Start-up refuses rather than guesses: a damaged key or database, or a missing key that
stored peers pinned, stops the node with one line (``files.DataError``) and leaves every
file as it was.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import secrets
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from hd_protocol import Identity, make_candidate
from hd_protocol.limits import Limits
from hd_shell.http.server import ServerLimits, serve
from hd_shell.rlimits import raise_open_file_limit

from . import files
from .config import Settings, limits_for
from .dbfile import stored_peer_count
from .discovery.lan import LanDiscovery
from .hub.peerhub import PeerHub
from .metrics import NodeMetrics
from .store import NodeStore
from .transports.direct import DirectTransport
from .transports.relay import RelayTransport
from .transports.webrtc.transport import webrtc_transport
from .web.app import LocalApp

log = logging.getLogger("hd_node")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ListenError(Exception):
    """A listener could not bind: the one line says which port, which flag sets it, and
    what to do (the CLI prints it and exits 1)."""


async def _listen(nursery: trio.Nursery, serve_fn: Any, what: str, flag: str, host: str,
                  port: int) -> Any:
    """``nursery.start(serve_fn)``, with a bind failure turned into a ``ListenError``."""
    try:
        return await nursery.start(serve_fn)
    except BaseException as exc:
        err = _bind_error(exc)
        if err is None:
            raise
        where = f"{_url_host(host)}:{port}"
        if err.errno == errno.EADDRINUSE:
            raise ListenError(f"cannot start: the {what} port {port} ({where}, {flag}) is in "
                              f"use; stop what uses it, or start with {flag} 0 (any free "
                              f"port)") from None
        host_flag = flag.replace("-port", "-host")
        raise ListenError(f"cannot start: the {what} listener cannot bind {where} "
                          f"({host_flag}, {flag}): {err.strerror or err}") from None


def _bind_error(exc: BaseException) -> OSError | None:
    """The OSError of a failed bind, out of the exception groups trio wraps it in."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _bind_error(exc.exceptions[0])
    return None


@dataclass
class DataDir:
    lock_fd: int
    identity: Identity
    token: str
    store: NodeStore
    identity_is_new: bool


def open_data_dir(data_dir: Path, *, new_identity: bool = False) -> DataDir:
    """Lock the data directory and open what it holds.

    Modes are checked first (a loose file is tightened, a loose directory gets the fix
    in a warning). The key is read before the database, so that a 0-byte ``node.db``
    next to a key counts as a truncation, and a missing key is only replaced when the
    database holds no peer that pinned it (or ``new_identity`` says so)."""
    files.ensure_data_dir(data_dir)
    lock_fd = files.lock_data_dir(data_dir)
    store: NodeStore | None = None
    try:
        files.check_modes(data_dir)
        files.tidy_data_dir(data_dir)
        db = data_dir / files.DB_FILE
        identity = files.load_identity(data_dir)
        created = identity is None
        if identity is not None and new_identity:
            raise files.DataError(
                f"--new-identity is for a data directory without an identity key, and "
                f"{data_dir / files.KEY_FILE} exists; move it aside first to really start a "
                f"new identity ({files.NEW_IDENTITY_COST})")
        store = NodeStore(db, empty_is_damage=not created)
        if identity is None:  # only once the database is known to be sound
            identity = files.start_new_identity(
                data_dir, stored_peers=stored_peer_count(db), allowed=new_identity)
        token = files.load_or_create_token(data_dir)
    except BaseException:
        if store is not None:
            store.close()
        os.close(lock_fd)
        raise
    return DataDir(lock_fd, identity, token, store, created)


def relay_url_for(relay_url: str | None, lobby_url: str | None) -> str | None:
    """``relayUrl``, else the relay bundled with the lobby (``/relay-ws`` beside
    ``/lobby-ws``), else none."""
    if relay_url:
        return relay_url
    if lobby_url and lobby_url.rstrip("/").endswith("/lobby-ws"):
        return lobby_url.rstrip("/")[: -len("/lobby-ws")] + "/relay-ws"
    return None


class Node:
    def __init__(self, settings: Settings, limits: Limits | None = None, *,
                 new_identity: bool = False) -> None:
        self.settings = settings
        self.limits = limits_for(settings) if limits is None else limits
        opened = open_data_dir(settings.data_dir, new_identity=new_identity)
        self._lock_fd, self.identity, self.token = opened.lock_fd, opened.identity, opened.token
        self.store = opened.store
        self._identity_is_new = opened.identity_is_new
        # Fresh per start and not secret: it lets the CLI tell this process from
        # whatever listens on the port of a stale node.json (see /healthz).
        self.nonce = secrets.token_hex(16)
        self.metrics = NodeMetrics()
        self.hub = PeerHub(self.identity, settings, self.store, self.metrics,
                           limits=self.limits)
        self.direct = DirectTransport(
            host=settings.peer_host, port=settings.peer_port,
            max_message_bytes=self.limits.max_envelope_bytes, metrics=self.metrics,
        )
        self.hub.transports.add(self.direct)
        # SPEC 8.5: mDNS discovery, dialling over the `lan` kind of the direct transport.
        self.lan = (LanDiscovery(self.hub, self.metrics, self.direct,
                                 include_loopback=settings.allow_loopback_candidates)
                    if settings.enable_lan_discovery else None)
        # The relay transport is always there: a guest may have to reach a room host
        # through the host's relay. Our own relay (relayUrl, else the one beside the
        # lobby we are connected to) is kept attached and offered as a candidate
        # (SPEC 8.1).
        self.relay = RelayTransport(self.identity,
                                    max_envelope_bytes=self.limits.max_envelope_bytes,
                                    rng=os.urandom, default_url=self.relay_url)
        self.hub.transports.add(self.relay)
        # SPEC 8.4: WebRTC through lobby signalling, when enabled and aiortc is installed.
        self.webrtc = webrtc_transport(self.hub, settings, self.limits)
        self.hub.extra_candidates = self._relay_candidates
        self.info: dict[str, Any] = {}

    async def run(self, *, task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        s = self.settings
        hub = self.hub
        nofile, nofile_hard, nofile_max = raise_open_file_limit()
        local_app = LocalApp(commands=hub.commands, bus=hub.bus, sessions=hub.sessions,
                             metrics=self.metrics, token=self.token,
                             node_id=self.identity.node_id, nonce=self.nonce,
                             max_frame_bytes=self.limits.max_ws_frame_bytes)
        stop = trio.Event()
        try:
            # Signals are ours from the first moment: one that comes during the start is
            # kept and acted on once the start is done (never a KeyboardInterrupt that
            # lands in the middle of a write) — and so is one that comes while we tidy up
            # (`make run` may pass a second one on).
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
                try:
                    async with trio.open_nursery() as n:
                        n.start_soon(self._watch_signals, received, stop)
                        await n.start(hub.run)
                        await n.start(partial(self.relay.serve, hub))
                        if self.webrtc is not None:
                            await n.start(partial(self.webrtc.serve, hub))
                        ui_limits = ServerLimits(
                            ws_max_message_bytes=self.limits.max_ws_frame_bytes)
                        _, ui_port = await _listen(n, partial(
                            serve, local_app, s.ui_host, s.ui_port, limits=ui_limits, name="ui",
                            count=lambda why: self.metrics.listener.labels("ui", why).inc()),
                            "UI", "--ui-port", s.ui_host, s.ui_port)
                        local_app.set_bound(s.ui_host, ui_port)
                        peer_port = None
                        if s.enable_direct:
                            _, peer_port = await _listen(n, partial(self.direct.serve, hub),
                                                         "peer", "--peer-port", s.peer_host,
                                                         s.peer_port)
                            host = s.peer_host
                            url_host = _url_host(
                                "127.0.0.1" if host in ("0.0.0.0", "") else host)  # noqa: S104
                            hub.set_peer_url(f"ws://{url_host}:{peer_port}/peer-ws", host)
                        if self.lan is not None:
                            await n.start(self.lan.run, peer_port)
                        self._announce(ui_port, nofile, nofile_hard, nofile_max)
                        task_status.started(self.info)
                        await stop.wait()
                        if self.lan is not None:  # the goodbye before the byes
                            await self.lan.aclose()
                        await hub.shutdown()
                        n.cancel_scope.cancel()
                finally:
                    self._tidy()
        finally:
            self._tidy()

    def _tidy(self) -> None:
        """Remove node.json, close the store, let the lock go (once)."""
        if self._lock_fd < 0:
            return
        files.remove_node_json(self.settings.data_dir)
        self.store.close()
        os.close(self._lock_fd)
        self._lock_fd = -1

    def _announce(self, ui_port: int, nofile: int, nofile_hard: int,
                  nofile_max: bool) -> None:
        """``node.json`` for the CLI and the tests, and the start in the log."""
        s, hub = self.settings, self.hub
        ui_host = _url_host(s.ui_host)
        self.info = {
            "pid": os.getpid(),
            "node_id": self.identity.node_id,
            "ui_url": f"http://{ui_host}:{ui_port}/",
            "ws_url": f"ws://{ui_host}:{ui_port}/ws",
            "peer_url": hub.peers.peer_url,
            "token": self.token,
            "nonce": self.nonce,
        }
        log.info("node listening node_id=%s ui=%s peer=%s", self.identity.node_id,
                 self.info["ui_url"], hub.peers.peer_url or "-")
        # Logged only now: a start that fails says so in one line on stderr.
        check_ms = self.store.check_ms
        log.info("data directory path=%s identity=%s database=%s", s.data_dir,
                 "new" if self._identity_is_new else "loaded",
                 "new" if check_ms is None else f"integrity-ok ms={check_ms:.0f}")
        hard = "unlimited" if nofile_hard == resource.RLIM_INFINITY else nofile_hard
        if nofile_max:
            log.info("open file limit nofile=%s hard=%s", nofile, hard)
        else:
            log.warning("open file limit could not be raised nofile=%s hard=%s", nofile, hard)
        # Last: node.json is what the CLI and `make run` wait for, so every start-up line
        # above is in the log by the time anyone reads it.
        files.write_node_json(s.data_dir, self.info)

    def relay_url(self) -> str | None:
        return relay_url_for(self.settings.relay_url, self.hub.lobby.url)

    def _relay_candidates(self) -> list[dict[str, Any]]:
        url = self.relay_url()
        return [make_candidate("relay", url, 65535)] if url else []

    async def _watch_signals(self, signals: AsyncIterator[int], stop: trio.Event) -> None:
        async for signum in signals:
            log.info("signal received signal=%s: shutting down", signal.Signals(signum).name)
            stop.set()
            return
