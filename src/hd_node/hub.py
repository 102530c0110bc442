"""The process-global PeerHub (SPEC 9): sessions by peer id, tabs as subscribers.

One hub per node. Every tab subscribes to it; a second tab adds a subscriber, never a
second peer connection. The hub dials and accepts links, runs the handshake machines,
asks hd_protocol.admission for every decision, keeps exactly one session per peer
(SPEC 4 tie-break) and reconnects to trusted peers with backoff (SPEC 5).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from hd_protocol import (
    Acceptor,
    Decision,
    Dialer,
    Identity,
    Policy,
    Presented,
    ProtocolError,
    Session,
    admit,
    dialer_view,
    hash_token,
    keep_new_session,
)
from hd_protocol import handshake as hs
from hd_protocol import session as ss
from hd_protocol.admission import reject
from hd_protocol.candidates import Ladder, LadderOutput, StartDial
from hd_protocol.limits import Limits
from hd_protocol.presence import merge_addrs, parse_presence, presence_data

from . import bench
from .addresses import own_candidates
from .config import Settings
from .errors import HubError
from .features import Features
from .links import LinkClosed, open_client_link
from .metrics import NodeMetrics
from .pairing import Pairing
from .peerconn import HandshakeFailed, Link, PeerConn, now_ms, run_handshake, trio_deadline
from .reconnect import Reconnector
from .store import NodeStore

log = logging.getLogger("hd_node.hub")

TAB_QUEUE = 512


@dataclass(eq=False)
class Tab:
    """One subscriber (a browser tab or a script) with a bounded outbound queue."""

    send: trio.MemorySendChannel[tuple[str, str, dict[str, Any]]]
    name: str = ""
    overflowed: bool = False

    def push(self, channel: str, event: str, data: dict[str, Any]) -> None:
        if self.overflowed:
            return
        try:
            self.send.send_nowait((channel, event, data))
        except trio.WouldBlock:
            # A tab that cannot keep up is cut loose (it reconnects and re-reads state)
            # rather than letting one slow browser stall the hub for everyone.
            self.overflowed = True
            self.send.close()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.overflowed = True


def _rng(n: int) -> bytes:
    return os.urandom(n)


class PeerHub:
    def __init__(
        self,
        identity: Identity,
        settings: Settings,
        store: NodeStore,
        metrics: NodeMetrics,
        *,
        limits: Limits,
        rng: Callable[[int], bytes] = _rng,
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.limits = limits
        self.rng = rng
        self.node_name = settings.node_name or f"node-{identity.node_id[:6]}"
        self.capabilities = ["collab", "peerchat"]
        self.policy = Policy(trust_mode=settings.trust_mode,
                             directory_key=settings.directory_key or None)
        self.sessions: dict[str, PeerConn] = {}
        self.tabs: set[Tab] = set()
        self.handshakes_in_flight = 0
        # SPEC 7.4: guests of rooms we host (id and key), and hosts of rooms we joined.
        self.guest_admissions: set[tuple[str, str]] = set()
        self.room_hosts: set[tuple[str, str]] = set()
        self.peer_url = ""
        self.candidates: list[dict[str, Any]] = []
        self.nursery: trio.Nursery | None = None
        self.manual_disconnect: set[str] = set()
        self.shutting_down = False
        self._tab_ids = itertools.count(1)
        self.features = Features(self)
        self.pairing = Pairing(self)
        self.reconnector = Reconnector(self)

    # --- lifecycle --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            self.nursery = n
            for peer in self.store.list_peers():
                if peer.trusted and not peer.blocked and peer.addrs:
                    self.reconnector.start(peer.node_id, immediate=True)
            task_status.started()
            await trio.sleep_forever()

    def set_peer_url(self, url: str, bound_host: str) -> None:
        self.peer_url = url
        self.candidates = own_candidates(self.settings, url, bound_host)

    async def shutdown(self) -> None:
        """Graceful: ``bye`` to every peer, then stop (SIGINT/SIGTERM)."""
        self.shutting_down = True
        with trio.move_on_after(3):
            async with trio.open_nursery() as n:
                for conn in list(self.sessions.values()):
                    n.start_soon(conn.close, "shutdown")
            # Let every link finish its close handshake while its reader task still
            # runs: cancelling first leaves a dialled link waiting out its 2 s close
            # timeout (measured: SIGTERM took 2.3 s instead of 0.1 s).
            while self.sessions:
                await trio.sleep(0.01)
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    # --- tabs -------------------------------------------------------------------------

    def subscribe(self) -> tuple[Tab, trio.MemoryReceiveChannel[tuple[str, str, dict[str, Any]]]]:
        send, recv = trio.open_memory_channel[tuple[str, str, dict[str, Any]]](TAB_QUEUE)
        tab = Tab(send, name=f"tab-{next(self._tab_ids)}")
        self.tabs.add(tab)
        self.metrics.tabs.set(len(self.tabs))
        return tab, recv

    def unsubscribe(self, tab: Tab) -> None:
        if tab not in self.tabs:
            return
        self.tabs.discard(tab)
        self.features.tab_gone(tab)
        tab.send.close()
        self.metrics.tabs.set(len(self.tabs))

    def publish(self, channel: str, event: str, data: dict[str, Any]) -> None:
        for tab in list(self.tabs):
            tab.push(channel, event, data)
            if tab.overflowed:
                # Cut loose at once: no more events are queued for it, and the
                # gauge shows it gone even while its socket is still draining.
                log.info("tab dropped: too slow tab=%s", tab.name)
                self.unsubscribe(tab)

    # --- views ------------------------------------------------------------------------

    def self_info(self) -> dict[str, Any]:
        return {
            "node_id": self.identity.node_id, "public_key": self.identity.public_key,
            "node_name": self.node_name, "peer_url": self.peer_url,
            "addrs": [c["url"] for c in self.candidates], "trust_mode": self.policy.trust_mode,
        }

    def peer_info(self, node_id: str) -> dict[str, Any]:
        stored = self.store.get_peer(node_id)
        conn = self.sessions.get(node_id)
        if conn is not None:
            s = conn.session
            return {
                "node_id": node_id, "node_name": s.peer_name, "public_key": s.peer_key,
                "level": s.level, "transport": s.link, "address": conn.url or conn.link.remote_addr,
                "status": "connected", "last_seen": s.last_seen,
                "capabilities": list(s.peer_capabilities), "rtt_ms": conn.rtt_ms,
            }
        if stored is None:
            return {"node_id": node_id, "node_name": "", "public_key": "", "level": None,
                    "transport": None, "address": None, "status": "unknown", "last_seen": 0,
                    "capabilities": [], "rtt_ms": None}
        return {
            "node_id": node_id, "node_name": stored.node_name, "public_key": stored.public_key,
            "level": "trusted" if stored.trusted else None, "transport": None,
            "address": stored.addrs[0] if stored.addrs else None,
            "status": "blocked" if stored.blocked else "offline",
            "last_seen": stored.last_seen, "capabilities": stored.capabilities, "rtt_ms": None,
        }

    def list_peers(self) -> list[dict[str, Any]]:
        ids = {p.node_id for p in self.store.list_peers()} | set(self.sessions)
        return [self.peer_info(i) for i in sorted(ids)]

    def _peer_update(self, node_id: str) -> None:
        self.publish("network", "peer_update", {"peer": self.peer_info(node_id)})

    # --- dialling ---------------------------------------------------------------------

    async def dial_any(
        self,
        urls: list[str],
        *,
        expected_node_id: str | None = None,
        expected_key: str | None = None,
        token: str | None = None,
        invite_pinned: bool = False,
    ) -> PeerConn:
        """The join ladder over direct candidates (SPEC 8.2, ``candidates.Ladder``):
        staggered parallel dials, the first authenticated session wins, the rest are
        cancelled; an explicit refusal stops at once."""
        ladder = Ladder(urls[: self.limits.addresses], now_ms(),
                        deadline_ms=self.limits.handshake_timeout_ms + 5_000)
        results_send, results_recv = trio.open_memory_channel[
            tuple[str, PeerConn | HubError]](self.limits.addresses)
        won: dict[str, PeerConn] = {}
        errors: dict[str, HubError] = {}

        async def attempt(url: str) -> None:
            try:
                res: PeerConn | HubError = await self.dial(
                    url, expected_node_id=expected_node_id, expected_key=expected_key,
                    token=token, invite_pinned=invite_pinned)
            except HubError as exc:
                res = exc
            results_send.send_nowait((url, res))  # one result per url: never blocks

        async with trio.open_nursery() as n:
            outs: list[LadderOutput] = list(ladder.start(now_ms()))
            while True:
                for out in outs:
                    if isinstance(out, StartDial):
                        log.info("ladder step url=%s", out.url)
                        n.start_soon(attempt, out.url)
                if ladder.done is not None:
                    n.cancel_scope.cancel()  # the losers
                    break
                got = None
                with trio.move_on_at(trio_deadline(ladder.next_deadline())):
                    got = await results_recv.receive()
                if got is None:
                    outs = ladder.on_timer(now_ms())
                elif isinstance(got[1], HubError):
                    errors[got[0]] = got[1]
                    outs = ladder.failed(got[0], got[1].code, now_ms(), refused=got[1].refused)
                else:
                    won[got[0]] = got[1]
                    outs = ladder.succeeded(got[0])
        done = ladder.done
        assert done is not None
        if done.url is not None:
            log.info("ladder won url=%s peer=%s", done.url, won[done.url].peer_id)
            return won[done.url]
        reason = done.reason or "unreachable"
        last = next((e for e in reversed(errors.values()) if e.code == reason), None)
        raise HubError(reason, last.message if last else "no candidate answered",
                       refused=bool(last and last.refused))

    async def dial(
        self,
        url: str,
        *,
        expected_node_id: str | None = None,
        expected_key: str | None = None,
        token: str | None = None,
        invite_pinned: bool = False,
    ) -> PeerConn:
        if self.nursery is None:
            raise HubError("not_running", "the hub is not running")
        if expected_node_id == self.identity.node_id:
            raise HubError("wrong_node", "a node cannot dial itself")
        if expected_node_id is not None and expected_node_id in self.sessions:
            return self.sessions[expected_node_id]
        if len(self.sessions) >= self.limits.sessions_per_node:
            raise HubError("busy", "too many sessions")
        try:
            conn: PeerConn = await self.nursery.start(
                self._dial_task, url, expected_node_id, expected_key, token, invite_pinned
            )
        except HandshakeFailed as exc:
            existing = self.sessions.get(exc.peer_id) if exc.peer_id else None
            if exc.reason == "duplicate" and existing is not None:
                return existing  # already connected to whoever answers there
            raise HubError(exc.reason, exc.message or exc.reason, refused=exc.remote) from None
        return conn

    async def _dial_task(
        self,
        url: str,
        expected_node_id: str | None,
        expected_key: str | None,
        token: str | None,
        invite_pinned: bool,
        task_status: trio.TaskStatus[PeerConn] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        log.info("dial started url=%s expect=%s", url, expected_node_id or "-")
        failure: HandshakeFailed | None = None
        # trio wraps anything raised inside a nursery in an ExceptionGroup, so failures
        # are carried out of it as a value and raised plainly afterwards.
        async with trio.open_nursery() as link_nursery:
            try:
                conn = await self._dial_handshake(
                    link_nursery, url, expected_node_id, expected_key, token, invite_pinned
                )
            except HandshakeFailed as exc:
                failure = exc
                link_nursery.cancel_scope.cancel()
            else:
                if conn.closed.is_set():  # lost the duplicate tie-break
                    existing = self.sessions.get(conn.peer_id)
                    if existing is None:
                        failure = HandshakeFailed("duplicate", "a parallel session won")
                    else:
                        task_status.started(existing)
                    with trio.CancelScope(shield=True):
                        await conn.link.close()
                    link_nursery.cancel_scope.cancel()
                else:
                    self._remember_address(conn.peer_id, url)
                    task_status.started(conn)
                    await self._run_conn(conn)
                    link_nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _dial_handshake(
        self,
        link_nursery: trio.Nursery,
        url: str,
        expected_node_id: str | None,
        expected_key: str | None,
        token: str | None,
        invite_pinned: bool,
    ) -> PeerConn:
        try:
            link = await open_client_link(
                link_nursery, url, max_message_size=self.limits.max_envelope_bytes,
                timeout_s=self.settings.handshake_timeout_s,
            )
        except (OSError, trio.TooSlowError, ValueError) as exc:
            log.info("dial failed url=%s reason=unreachable", url)
            raise HandshakeFailed("unreachable", str(exc) or "cannot connect") from None
        except Exception as exc:  # trio_websocket.HandshakeError and friends
            log.info("dial failed url=%s reason=unreachable", url)
            raise HandshakeFailed("unreachable", type(exc).__name__) from None
        try:
            machine = Dialer(
                self.identity, rng=self.rng, now=now_ms(), expected_node_id=expected_node_id,
                token=token, node_name=self.node_name, capabilities=self.capabilities,
                timeout_ms=self.limits.handshake_timeout_ms,
            )

            def decide(need: hs.NeedAdmission) -> Decision:
                return self._decide_dialer(need, link, expected_key, invite_pinned)

            result = await run_handshake(link, machine, decide)
            # Pinned only now: the acceptor may still refuse us after our own decision
            # (e.g. an invite another node redeemed first), and a refused peer must not
            # end up stored as trusted.
            peer = result.peer
            self.store.pin_peer(peer.node_id, peer.public_key, now=now_ms(),
                                node_name=peer.node_name,
                                trusted=True if invite_pinned else None,
                                capabilities=list(peer.capabilities))
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await link.close()
            if isinstance(exc, HandshakeFailed):
                exc.peer_id = machine.peer.node_id if machine.peer is not None else None
                if exc.reason == "closed" and machine.state is hs.State.WAIT_HELLO_ACK:
                    # An acceptor drops a hello addressed to someone else unanswered.
                    exc.message = (f"nothing at {url} answered as "
                                   f"{expected_node_id or 'an hd node'} (another node there?)")
                self.metrics.handshakes.labels("dialer", exc.reason).inc()
                log.info("handshake failed role=dialer url=%s reason=%s remote=%s",
                         url, exc.reason, exc.remote)
            raise
        self.metrics.handshakes.labels("dialer", "ok").inc()
        conn, registered = self._open_session(link, result, url)
        if not registered:
            await conn.close("duplicate")  # the caller sees it closed and reports the winner
        return conn

    def _decide_dialer(
        self, need: hs.NeedAdmission, link: Link, expected_key: str | None, invite_pinned: bool
    ) -> Decision:
        peer = need.peer
        if expected_key is not None and peer.public_key != expected_key:
            return reject("key_mismatch")
        existing = self.sessions.get(peer.node_id)
        if existing is not None and not existing.closed.is_set():
            # Already connected (another ladder step, or the peer dialled us first):
            # a second session would only be closed again by the tie-break.
            return reject("duplicate")
        stored = self.store.get_peer(peer.node_id)
        d = dialer_view(
            self.policy, peer.node_id, peer.public_key,
            record=stored.record() if stored else None, link="direct",
            remote_addr=link.remote_addr, invite_pinned=invite_pinned,
            room_host=(peer.node_id, peer.public_key) in self.room_hosts,
        )
        log.info("admission role=dialer peer=%s level=%s reason=%s",
                 peer.node_id, d.level, d.reason)
        return d

    # --- accepting --------------------------------------------------------------------

    def can_accept(self) -> bool:
        return (
            not self.shutting_down
            and self.handshakes_in_flight < self.limits.handshakes_in_flight
            and len(self.sessions) < self.limits.sessions_per_node
        )

    async def accept(self, link: Link) -> None:
        """Serve one inbound /peer-ws link for its whole life (called by the listener)."""
        self.handshakes_in_flight += 1
        try:
            machine = Acceptor(
                self.identity, rng=self.rng, now=now_ms(), node_name=self.node_name,
                capabilities=self.capabilities,
                timeout_ms=self.limits.handshake_timeout_ms,
            )

            def decide(need: hs.NeedAdmission) -> Decision:
                return self._decide_acceptor(need, link)

            try:
                result = await run_handshake(link, machine, decide)
            except HandshakeFailed as exc:
                self.metrics.handshakes.labels("acceptor", exc.reason).inc()
                log.info("handshake failed role=acceptor from=%s reason=%s",
                         link.remote_addr, exc.reason)
                return
        finally:
            self.handshakes_in_flight -= 1
        self.metrics.handshakes.labels("acceptor", "ok").inc()
        conn, registered = self._open_session(link, result, None)
        if registered:
            await self._run_conn(conn)
        else:
            await conn.close("duplicate")

    def _decide_acceptor(self, need: hs.NeedAdmission, link: Link) -> Decision:
        peer = need.peer
        stored = self.store.get_peer(peer.node_id)
        invite = None
        if need.token is not None:
            found = self.store.get_invite(hash_token(need.token))
            invite = found.record() if found else None
        d = admit(
            self.policy,
            Presented(peer.node_id, peer.public_key, need.token, need.attest, "direct",
                      link.remote_addr),
            record=stored.record() if stored else None, invite=invite, now=now_ms(),
            guest_pending=(peer.node_id, peer.public_key) in self.guest_admissions,
        )
        # Effects are persisted before the dialer hears "ok". The conditional update
        # closes the race of two nodes redeeming one invite at the same moment.
        if d.redeem_invite is not None and not self.store.redeem_invite(
            d.redeem_invite, peer.node_id
        ):
            d = reject("pairing_required")
        if d.ok:
            self.store.pin_peer(peer.node_id, peer.public_key, now=now_ms(),
                                node_name=peer.node_name,
                                trusted=True if d.store_trusted else None,
                                capabilities=list(peer.capabilities))
        log.info("admission role=acceptor peer=%s from=%s level=%s reason=%s",
                 peer.node_id, link.remote_addr, d.level, d.reason)
        return d

    # --- sessions ---------------------------------------------------------------------

    def _open_session(
        self, link: Link, result: hs.HandshakeResult, url: str | None
    ) -> tuple[PeerConn, bool]:
        """The session for a finished handshake, and whether it is now *the* session
        with that peer (False: it lost the SPEC 4 tie-break; the caller closes it)."""
        session = Session(self.identity, result, rng=self.rng, now=now_ms(), link="direct",
                          limits=self.limits)
        conn = PeerConn(self, link, session, url=url, inbound_queue=self.limits.inbound_queue,
                        ping_interval_ms=self.limits.ping_interval_ms)
        peer_id = session.peer_id
        existing = self.sessions.get(peer_id)
        if existing is not None and not existing.closed.is_set():
            new_wins = keep_new_session(
                self.identity.node_id,
                existing_dialer=existing.session.dialer_id,
                existing_opened_at=existing.session.opened_at,
                new_dialer=session.dialer_id, new_opened_at=session.opened_at,
                handshake_timeout_ms=self.limits.handshake_timeout_ms,
            )
            log.info("duplicate session peer=%s keep=%s", peer_id, "new" if new_wins else "old")
            if not new_wins:
                return conn, False
            assert self.nursery is not None
            self.nursery.start_soon(existing.close, "duplicate")
        self.sessions[peer_id] = conn
        self.manual_disconnect.discard(peer_id)
        self.metrics.sessions.set(len(self.sessions))
        log.info("session open peer=%s level=%s role=%s", peer_id, session.level, session.role)
        return conn, True

    async def _run_conn(self, conn: PeerConn) -> None:
        peer_id = conn.peer_id
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._on_session_open, conn)
                await conn.run()
        finally:
            if self.sessions.get(peer_id) is conn:
                del self.sessions[peer_id]
                self.features.session_closed(peer_id)
            self.metrics.sessions.set(len(self.sessions))
            log.info("session closed peer=%s reason=%s", peer_id, conn.close_reason)
            if not self.shutting_down:
                self._peer_update(peer_id)
                self.reconnector.after_close(peer_id, conn.close_reason)

    async def _on_session_open(self, conn: PeerConn) -> None:
        self._peer_update(conn.peer_id)
        try:
            await conn.send("presence", self._presence_data())
        except ProtocolError:
            return
        # SPEC 6.1/6.2: catch-up of shared panes and flush of queued chat.
        await self.features.session_opened(conn)

    def _presence_data(self) -> dict[str, Any]:
        return presence_data(self.node_name, self.capabilities,
                             [c["url"] for c in self.candidates][: self.limits.addresses])

    def _remember_address(self, node_id: str, url: str) -> None:
        stored = self.store.get_peer(node_id)
        if stored is not None:
            self.store.set_addrs(node_id, merge_addrs(stored.addrs, url, (),
                                                      self.limits.addresses))

    async def disconnect(self, node_id: str) -> None:
        conn = self.sessions.get(node_id)
        if conn is None:
            raise HubError("not_found", "no session with that peer")
        self.manual_disconnect.add(node_id)
        await conn.close("disconnect")

    def set_trust(self, node_id: str, trusted: bool, blocked: bool | None) -> dict[str, Any]:
        if not self.store.set_trust(node_id, trusted=trusted, blocked=blocked):
            raise HubError("not_found", "unknown peer")
        log.info("trust changed peer=%s trusted=%s blocked=%s", node_id, trusted, blocked)
        conn = self.sessions.get(node_id)
        if conn is not None and (blocked or (not trusted and conn.session.level == "trusted")):
            # Trust was withdrawn: the session's level no longer holds.
            assert self.nursery is not None
            self.manual_disconnect.add(node_id)
            self.nursery.start_soon(conn.close, "untrusted")
        info = self.peer_info(node_id)
        self._peer_update(node_id)
        return info

    # --- inbound messages (ConnOwner) ---------------------------------------------------

    async def on_message(self, conn: PeerConn, msg: ss.Message) -> None:
        self.metrics.envelopes_in.inc()
        if msg.type == "presence":
            self._on_presence(conn, msg)
            return
        if msg.type == "bench_echo":
            await bench.answer(conn, msg)
            return
        await self.on_feature_message(conn, msg)

    async def on_feature_message(self, conn: PeerConn, msg: ss.Message) -> None:
        if await self.features.on_message(conn, msg):
            return
        async with conn.send_lock:
            outs = conn.session.reply_error("unsupported", f"{msg.type} is not served here",
                                            msg.msg_id, now_ms())
            await conn._write(outs)

    def _on_presence(self, conn: PeerConn, msg: ss.Message) -> None:
        try:
            p = parse_presence(msg.data, self.limits)
        except ProtocolError as exc:
            self.metrics.dropped.labels(exc.code).inc()
            log.info("bad presence peer=%s code=%s", conn.peer_id, exc.code)
            return
        conn.session.peer_name = p.node_name
        conn.session.peer_capabilities = p.capabilities
        stored = self.store.get_peer(conn.peer_id)
        if stored is not None:
            self.store.pin_peer(conn.peer_id, conn.session.peer_key, now=now_ms(),
                                node_name=p.node_name, capabilities=list(p.capabilities))
            self.store.set_addrs(conn.peer_id, merge_addrs(stored.addrs, conn.url, p.addrs,
                                                           self.limits.addresses))
        self._peer_update(conn.peer_id)

    def on_sent(self, conn: PeerConn, size: int) -> None:
        self.metrics.envelopes_out.inc()
        self.metrics.bytes_out.inc(size)

    async def on_output(self, conn: PeerConn, out: ss.Output) -> None:
        if isinstance(out, ss.Dropped):
            self.metrics.dropped.labels(out.code).inc()
            log.info("envelope dropped peer=%s code=%s", conn.peer_id, out.code)
        elif isinstance(out, ss.Pong):
            self.metrics.rtt.labels(conn.peer_id).set(out.rtt_ms)
            if conn.srtt_ms is not None:
                self.metrics.srtt.labels(conn.peer_id).set(conn.srtt_ms)
        elif isinstance(out, ss.PeerError):
            log.info("peer error peer=%s code=%s", conn.peer_id, out.code)
            await self.features.on_peer_error(conn, out)
        elif isinstance(out, ss.Closed):
            log.info("session closing peer=%s reason=%s remote=%s",
                     conn.peer_id, out.reason, out.remote)

    async def bench(self, node_id: str, count: int | None, size: int | None) -> dict[str, Any]:
        """RTT percentiles and throughput to one peer (SPEC 6.4, ``bench_echo``)."""
        try:
            count, size = bench.check_args(count, size)
        except bench.BenchError as exc:
            raise HubError("bad_request", str(exc)) from None
        conn = self.sessions.get(node_id)
        if conn is None:
            raise HubError("not_found", "no session with that peer")
        log.info("bench started peer=%s count=%d size=%d", node_id, count, size)
        return await bench.run(conn, count, size)

    def metrics_view(self) -> list[dict[str, Any]]:
        out = []
        for peer_id, conn in self.sessions.items():
            st = conn.session.stats
            out.append({
                "node_id": peer_id, "rtt_ms": conn.rtt_ms, "srtt_ms": conn.srtt_ms,
                "rttvar_ms": conn.rttvar_ms, "msgs_in": st.msgs_in, "msgs_out": st.msgs_out,
                "bytes_in": st.bytes_in, "bytes_out": st.bytes_out, "dropped": st.dropped,
                "timeouts": st.timeouts,
            })
        return out


__all__ = ["HubError", "LinkClosed", "PeerHub", "Tab"]
