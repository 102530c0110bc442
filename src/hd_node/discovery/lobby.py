"""The node's lobby connection (SPEC 7) and what the ``/ws`` ``lobby`` channel does with it.

``hd_protocol.brokers.lobby_client.LobbyClient`` speaks the protocol; this keeps one connection
to the configured lobby up (reconnecting with backoff), answers tab commands one at a
time (a lobby answers in order, so each command waits for its answer or an ``error``,
with a deadline), and acts on what the lobby says:

- a guest joining a room we host: its node id **and key** become a pending guest
  admission for the room's lifetime (SPEC 7.4), so a ``manual`` node admits it with no
  invite; a token room's token also works as a ticket;
- a room we join: its host's id and key are pinned for the join ladder (SPEC 8.2) over
  the host's candidates — direct first, WebRTC from 1 s when both ends run it (the host
  registered with the capability ``webrtc``), its relay from 1.5 s — and the tabs hear
  which path won (``joined {roomId, peer, via}``);
- ``signal`` frames (SPEC 7.5) go to ``on_signal`` (the WebRTC transport) and
  ``send_signal`` queues ours; one writer task sends them, so a dial that gives up
  never cuts a lobby write in half;
- an attestation (SPEC 7.6): presented in every handshake we start from now on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from hd_protocol import Identity, hash_token, reconnect_delay_ms
from hd_protocol import lobby_client as lc
from hd_protocol import webrtc as rtc
from hd_protocol.effects import Send
from hd_protocol.errors import RemoteProtocolError
from hd_protocol.limits import Limits
from hd_protocol.peer.candidates import dial_candidates
from hd_shell.clock import mono_ms, trio_deadline
from hd_shell.ws.link import DialError, WsLink, dial_ws

from ..errors import HubError
from ..failover import Failover
from ..hub.connector import Connector
from ..hub.peers import Peers
from ..hub.tabbus import TabBus
from ..hub.trust import DialIntent, Trust
from ..transports.seam import LinkClosed

log = logging.getLogger("hd_node.lobby")

ANSWER_TIMEOUT_S = 10.0
# A command while the connection is being made (start, a re-registration, a failover)
# waits this long for it; while the lobby is failing it gets the last error at once.
CONNECT_WAIT_S = 5.0
SIGNAL_QUEUE = 64  # our signals waiting for the lobby connection's writer


class LobbyLink:
    def __init__(self, identity: Identity, *, trust: Trust, connector: Connector,
                 peers: Peers, bus: TabBus, limits: Limits, rng: Callable[[int], bytes],
                 node_name: str, capabilities: list[str], urls: Sequence[str],
                 addresses: Callable[[], list[dict[str, Any]]],
                 pinned_key: str | None = None,
                 on_signal: Callable[[str, str, str, str], None] | None = None,
                 on_url_change: Callable[[], None] = lambda: None,
                 relay_state: Callable[[], dict[str, Any]] | None = None) -> None:
        """``urls``: instances of one lobby (``lobbyUrl``), used one at a time, the next
        when the connection to one is lost (``failover.Failover``);
        ``addresses``: our candidates, for the lobby to give room peers;
        ``on_url_change``: called when ``url`` moves, by a command or a failover (the
        relay beside it follows);
        ``pinned_key``: in trust mode directory, the lobby must be the one our directory
        key names; ``on_signal``: where ``signal`` frames go (the WebRTC transport);
        ``relay_state``: our own relay's instance, for ``state``."""
        self.identity = identity
        self.trust = trust
        self.connector = connector
        self.peers = peers
        self.bus = bus
        self.limits = limits
        self.rng = rng
        self.node_name = node_name
        self.capabilities = capabilities
        self.ring = Failover(urls, rng) if urls else None
        self.addresses = addresses
        self.pinned_key = pinned_key
        self.client: lc.LobbyClient | None = None
        self.ws: WsLink | None = None
        self.rooms: list[dict[str, Any]] = []
        self.hosted: dict[str, str | None] = {}  # room id -> token hash (token rooms)
        self.guests: dict[str, set[tuple[str, str]]] = {}  # hosted room -> (id, key)
        self.joined: dict[str, lc.Card] = {}  # room id -> host
        self._lock = trio.Lock()
        self._up = trio.Event()  # set at a registration; a new one when it is gone
        self._deadline_moved = trio.Event()  # the lobby client's next deadline changed
        self._waiter: tuple[tuple[type, ...], Callable[[Any], bool], trio.Event,
                            list[Any]] | None = None
        self.last_error: dict[str, str] | None = None  # why the last connection failed
        self._url_changed = trio.Event()
        self._session_scope: trio.CancelScope | None = None
        # WebRTC signalling (SPEC 7.5, 8.4): where inbound signals go, and our queue.
        self.on_signal = on_signal
        self.on_url_change = on_url_change
        self.relay_state = relay_state
        self._signals: trio.MemorySendChannel[str] | None = None

    # --- views ----------------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        """The lobby instance in use (or being dialled); None: no lobby."""
        return self.ring.current if self.ring is not None else None

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.registered is not None

    def state(self) -> dict[str, Any]:
        directory = list(self.client.directory.values()) if self.client else []
        status = ("connected" if self.connected else "connecting" if self.url
                  else "disconnected")
        return {"connected": self.connected, "status": status, "url": self.url,
                "urls": list(self.ring.urls) if self.ring is not None else [],
                "last_error": self.last_error,
                "self": {"node_id": self.identity.node_id, "node_name": self.node_name},
                "rooms": self.rooms, "directory": directory,
                "hosted": sorted(self.hosted), "joined": sorted(self.joined),
                **({"relay": self.relay_state()} if self.relay_state is not None else {})}

    def listed(self, node_id: str, public_key: str) -> bool:
        """The lobby we are registered with — pinned to our directory key — lists this
        exact id and key as one it vouches for (SPEC 7.6)."""
        client = self.client
        if client is None or client.registered is None or self.pinned_key is None:
            return False
        entry = client.directory.get(node_id)
        return bool(entry and entry.get("listed") is True
                    and entry.get("public_key") == public_key)

    # --- the connection -------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            ring = self.ring
            if ring is None:
                self._url_changed = trio.Event()
                await self._url_changed.wait()
                continue
            url = ring.current
            with trio.CancelScope() as scope:
                self._session_scope = scope
                try:
                    await self._session(url)
                except (DialError, LinkClosed, RemoteProtocolError, trio.TooSlowError) as exc:
                    log.info("lobby connection lost url=%s reason=%s", url, exc)
                    self.last_error = {"code": getattr(exc, "code", None) or "unreachable",
                                       "message": str(exc) or "the lobby did not answer",
                                       "url": url}
                except Exception:  # a bug of ours: logged; the node and its lobby go on
                    log.exception("lobby session failed url=%s", url)
                    self.last_error = {"code": "internal", "message": "see the node's log",
                                       "url": url}
            lost = not scope.cancelled_caught  # else a command ended it (connect, disconnect)
            delay_ms = reconnect_delay_ms(0, self.rng)
            if lost and self.ring is ring:
                delay_ms = ring.lost()  # the next instance of the lobby, if there are several
                if ring.current != url:
                    log.info("lobby failover from=%s to=%s in_ms=%d", url, ring.current,
                             delay_ms)
                    self.on_url_change()
            self._lost(report=lost)
            if self.ring is ring:
                with trio.move_on_after(delay_ms / 1000):
                    self._url_changed = trio.Event()
                    await self._url_changed.wait()

    def _lost(self, *, report: bool) -> None:
        """The connection ended (or a command ends it); tabs hear of it (and why),
        unless we ended it. A command from now on waits for the next registration."""
        was = self.connected
        self.client, self.ws = None, None
        self._up.set()  # waiting commands look again (a disconnect: they fail)
        self._up = trio.Event()
        self._resolve(lc.LobbyError("not_found", "the lobby connection is gone"))
        if was or report:
            self.bus.publish("lobby", "state", self.state())

    async def _session(self, url: str) -> None:
        ws = await dial_ws(url, timeout_s=10, max_message_size=self.limits.max_envelope_bytes)
        client = lc.LobbyClient(self.identity, node_name=self.node_name,
                                addresses=self.addresses(), capabilities=self.capabilities,
                                pinned_key=self.pinned_key, limits=self.limits)
        self.client, self.ws = client, ws
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._heartbeats, client, ws, n.cancel_scope)
                signals, queued = trio.open_memory_channel[str](SIGNAL_QUEUE)
                self._signals = signals
                n.start_soon(self._signal_writer, ws, queued, n.cancel_scope)
                try:
                    while True:
                        for raw in await ws.receive_some():
                            before = client.next_deadline()
                            await self._handle(client, ws, client.receive(raw, mono_ms()))
                            if client.next_deadline() != before:
                                self._deadline_moved.set()
                except LinkClosed as exc:
                    log.info("lobby connection closed url=%s reason=%s", url, exc)
                n.cancel_scope.cancel()
        finally:
            self._signals = None
            with trio.CancelScope(shield=True):
                await ws.aclose()

    def rename(self, name: str) -> None:
        self.node_name = name  # what our next registration carries (network rename)

    def addresses_changed(self, own: list[dict[str, Any]]) -> None:
        """Our candidates changed (a new srflx address, our relay on another instance):
        a lobby that registered us without them hears them by a new registration —
        unless rooms of ours are open there (re-registering closes them): then at the
        next one."""
        client = self.client
        if client is None or client.addresses == own:
            return
        if self.hosted or self.joined:
            log.info("our addresses changed; the lobby hears them at the next registration "
                     "(rooms open there)")
            return
        log.info("our addresses changed: registering again with the lobby url=%s", self.url)
        self.connect(None)

    def send_signal(self, to: str, sid: str, kind: str, sdp: str) -> bool:
        """Queue ``signal {to, sid, kind, sdp}``; False when not registered (or the
        queue is full): the caller's attempt then fails at once."""
        client, queue = self.client, self._signals
        if client is None or client.registered is None or queue is None:
            return False
        try:
            queue.send_nowait(client.signal(to, sid, kind, sdp).wire)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def _signal_writer(self, ws: WsLink, queued: trio.MemoryReceiveChannel[str],
                             scope: trio.CancelScope) -> None:
        try:
            async for wire in queued:
                await ws.send_many([wire])
        except LinkClosed:
            scope.cancel()

    async def _heartbeats(self, client: lc.LobbyClient, ws: WsLink,
                          scope: trio.CancelScope) -> None:
        """Heartbeats when the machine's deadline comes; a frame that moves it (the
        registration) wakes this task, nothing polls."""
        try:
            while True:
                self._deadline_moved = trio.Event()
                dl = client.next_deadline()
                with trio.move_on_at(trio_deadline(dl) if dl is not None else float("inf")):
                    await self._deadline_moved.wait()
                    continue
                await self._handle(client, ws, client.on_timer(mono_ms()))
        except LinkClosed:
            scope.cancel()

    async def _handle(self, client: lc.LobbyClient, ws: WsLink,
                      outs: list[lc.Output]) -> None:
        for out in outs:
            if isinstance(out, Send):
                await ws.send_many([out.wire])
            else:
                self._event(out)

    def _event(self, ev: lc.Event) -> None:
        if isinstance(ev, lc.Registered):
            if self.ring is not None:
                self.ring.up()  # a failure from now on starts a new round from here
            self.rooms = list(ev.rooms)
            self.last_error = None
            if self.connected:  # not a session a command has just ended
                self._up.set()
            log.info("lobby registered url=%s nodes=%d", self.url, len(ev.directory))
            self.bus.publish("lobby", "state", self.state())
            return
        if isinstance(ev, lc.Attestation):
            self.connector.attested(ev.attest)
            return
        if isinstance(ev, lc.DirectoryUpdate):
            self.bus.publish("lobby", "directory", {"directory": self.state()["directory"]})
            return
        if isinstance(ev, lc.PeerJoining):
            self._admit_guest(ev)
            return
        if isinstance(ev, lc.Signal):
            if self.on_signal is not None:
                self.on_signal(ev.peer, ev.sid, ev.kind, ev.sdp)
            return
        if isinstance(ev, lc.RoomClosed):
            self._room_gone(ev.room_id)
        if isinstance(ev, lc.Rooms):
            self.rooms = list(ev.rooms)
        if isinstance(ev, lc.Dropped):
            log.info("lobby frame dropped code=%s", ev.code)
            return
        if self._waiter is not None and (
                isinstance(ev, lc.LobbyError)
                or (isinstance(ev, self._waiter[0]) and self._waiter[1](ev))):
            self._resolve(ev)
            return
        if isinstance(ev, lc.LobbyError):
            self.bus.publish("lobby", "error", {"code": ev.code, "message": ev.message})
        elif isinstance(ev, lc.RoomClosed):
            self.bus.publish("lobby", "room_closed", {"roomId": ev.room_id})

    def _admit_guest(self, ev: lc.PeerJoining) -> None:
        if ev.room_id not in self.hosted:
            return
        pair = (ev.guest.node_id, ev.guest.public_key)
        self.guests.setdefault(ev.room_id, set()).add(pair)
        self.trust.guest_admissions.add(pair)
        log.info("room guest admitted room=%s peer=%s", ev.room_id, ev.guest.node_id)
        self.bus.publish("lobby", "peer_joining", {
            "roomId": ev.room_id, "guest": {"node_id": ev.guest.node_id,
                                            "node_name": ev.guest.node_name}})

    def _room_gone(self, room_id: str) -> None:
        token = self.hosted.pop(room_id, None)
        if token is not None:
            self.trust.room_tickets.discard(token)
        for pair in self.guests.pop(room_id, set()):
            if not any(pair in g for g in self.guests.values()):
                self.trust.guest_admissions.discard(pair)
        host = self.joined.pop(room_id, None)
        if host is not None and not any(h == host for h in self.joined.values()):
            self.trust.room_hosts.discard((host.node_id, host.public_key))

    # --- commands (the /ws lobby channel) -------------------------------------------------

    def connect(self, url: str | None) -> None:
        """Connect again: to ``url`` (one of our lobby's instances, or another lobby),
        else to the instance in use."""
        if url is not None and not (self.ring is not None and url in self.ring.urls):
            self.ring = Failover([url], self.rng)
        elif url is not None and self.ring is not None:
            self.ring.move_to(url)
        self.last_error = None
        self._end_session()

    def disconnect(self) -> None:
        self.ring, self.last_error = None, None
        self._end_session()

    def _end_session(self) -> None:
        if self._session_scope is not None:
            self._session_scope.cancel()
        if self.client is not None:
            self._lost(report=True)
        self._url_changed.set()
        self.on_url_change()

    async def _registered(self) -> tuple[lc.LobbyClient, WsLink]:
        """The registered connection; while one is being made, wait for it (a bounded
        wait, ``CONNECT_WAIT_S``)."""
        with trio.move_on_after(CONNECT_WAIT_S):
            while (not self.connected and self.url is not None
                   and self.last_error is None):
                await self._up.wait()
        client, ws = self.client, self.ws
        if client is None or ws is None or client.registered is None:
            why = f": {self.last_error['code']}" if self.last_error else ""
            raise HubError("unreachable", f"not connected to a lobby{why}")
        return client, ws

    async def request(self, make: Callable[[lc.LobbyClient], Send],
                      expect: tuple[type, ...],
                      match: Callable[[Any], bool] = lambda ev: True) -> Any:
        """One command and its answer (the lobby answers in order; one at a time).
        ``match``: which event of those types is the answer (a ``room_closed`` for
        another room is news, not the answer to our ``leave_room``)."""
        async with self._lock:
            client, ws = await self._registered()
            done = trio.Event()
            box: list[Any] = []
            self._waiter = (expect, match, done, box)
            try:
                await ws.send_many([make(client).wire])
                with trio.move_on_after(ANSWER_TIMEOUT_S):
                    await done.wait()
            except LinkClosed:
                raise HubError("unreachable", "the lobby connection is gone") from None
            finally:
                self._waiter = None
            if not box:
                raise HubError("timeout", "the lobby did not answer")
            if isinstance(box[0], lc.LobbyError):
                raise HubError(box[0].code, box[0].message)
            return box[0]

    def _resolve(self, ev: Any) -> None:
        if self._waiter is not None:
            _, _, done, box = self._waiter
            if not done.is_set():
                box.append(ev)
                done.set()

    async def create_room(self, name: str, visibility: str, policy: str,
                          token: str | None) -> dict[str, Any]:
        ev = await self.request(lambda c: c.create_room(name, visibility, policy, token),
                                (lc.RoomCreated,))
        room = dict(ev.room)
        self.hosted[room["id"]] = hash_token(token) if token is not None else None
        if token is not None:
            self.trust.room_tickets.add(hash_token(token))
        return room

    async def list_rooms(self) -> list[dict[str, Any]]:
        ev = await self.request(lambda c: c.list_rooms(), (lc.Rooms,))
        return list(ev.rooms)

    async def leave_room(self, room_id: str) -> None:
        await self.request(lambda c: c.leave_room(room_id), (lc.RoomClosed,),
                           lambda ev: ev.room_id == room_id)
        self._room_gone(room_id)

    async def join_room(self, room_id: str, token: str | None) -> dict[str, Any]:
        """Join, then run the join ladder to the host (SPEC 7.4, 8.2)."""
        info: lc.RoomInfo = await self.request(lambda c: c.join_room(room_id, token),
                                               (lc.RoomInfo,),
                                               lambda ev: ev.room_id == room_id)
        host = info.host
        self.joined[room_id] = host
        self.trust.room_hosts.add((host.node_id, host.public_key))
        log.info("room joined room=%s host=%s candidates=%d", room_id, host.node_id,
                 len(host.addresses))
        candidates = dial_candidates(list(host.addresses))
        if self.connector.transports.get(rtc.KIND) is not None and self.client is not None:
            # The host's lobby entry says whether it runs WebRTC (a capability, not a
            # wire candidate: SPEC 8.1 candidates are ws:// URLs, and a lobby refuses
            # any other in a registration).
            candidates += rtc.host_candidates(host.node_id,
                                              self.client.directory.get(host.node_id))
        driver = await self.connector.dial_any(
            candidates,
            DialIntent(expected_node_id=host.node_id, expected_key=host.public_key,
                       token=token))
        assert driver.peer_id is not None
        joined = {"roomId": room_id, "peer": self.peers.peer_info(driver.peer_id),
                  "via": driver.kind}
        self.bus.publish("lobby", "joined", joined)
        return joined
