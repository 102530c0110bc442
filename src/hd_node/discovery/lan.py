"""LAN discovery (SPEC 8.5): announce ``_hd-peer._tcp.local.`` with zeroconf, browse
for the others, list them to the tabs (``network lan_peers``) and dial the ones
``hd_protocol.reach.lan`` says to — known trusted peers always, unknown ones only in
``open-lan`` — over the ``lan`` transport (the direct WebSocket transport under
another kind), pinning the announced id and key on every dial.

zeroconf runs its own threads (an asyncio loop, the browser's handler thread). Nothing
of it ever runs on the trio thread and nothing of trio runs on its threads: the
browser's handler only hands ``(state, name)`` to trio (``mdns.Names``, which resolves
them, every stage bounded: anyone on the LAN may announce anything, as fast as it
likes); every blocking call (start, resolve, register, rename, close) runs in a worker
thread that a cancellation abandons (lookups and the close have deadlines). On shutdown
the browser is cancelled and the service unregistered (the goodbye tells the others at
once) before the node says ``bye`` to its peers.

The table (``hd_protocol.reach.lan``) holds at most ``MAX_LAN_PEERS``: made-up nodes are free
to make, so a trusted peer's announcement that finds it full takes the place of one we
do not trust.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import trio
from prometheus_client import Counter, Gauge
from zeroconf import ServiceBrowser, ServiceInfo, Zeroconf

from hd_protocol import DialCandidate, ProtocolError
from hd_protocol.reach.lan import (
    NO_REDIAL,
    SERVICE_TYPE,
    LanAnnouncement,
    LanTable,
    announced_from,
    announcement_txt,
    decide_lan_dial,
    parse_announcement,
    service_name,
)
from hd_shell.clock import mono_ms, trio_deadline

from ..errors import HubError
from ..hub.linkdriver import LinkDriver
from ..hub.peerhub import PeerHub
from ..hub.trust import DialIntent
from ..metrics import NodeMetrics
from ..transports.direct import DirectTransport
from .mdns import Names, Resolved, announced_addresses, open_zeroconf

log = logging.getLogger("hd_node.lan")

KIND = "lan"
CLOSE_TIMEOUT_S = 5.0


def lan_transport(direct: DirectTransport) -> DirectTransport:
    """The ``lan`` transport: the direct one's dialler under the ``lan`` kind. It never
    serves: inbound LAN links arrive on the peer listener like any direct link."""
    return DirectTransport(host=direct.host, port=direct.port,
                           max_message_bytes=direct.max_message_bytes, metrics=direct.metrics,
                           kind=KIND, server_limits=direct.server_limits)


class LanDiscovery:
    """One node's mDNS presence and view of the LAN. ``run`` owns zeroconf for its whole
    life; ``view`` is what tabs see; it listens to sessions to redial and relabel."""

    def __init__(self, hub: PeerHub, metrics: NodeMetrics, direct: DirectTransport, *,
                 include_loopback: bool = False) -> None:
        self.hub = hub
        self.host = direct.host
        self.include_loopback = include_loopback
        self.own_id = hub.identity.node_id
        self.table = LanTable()
        self.ignored = Counter("hd_lan_ignored", "LAN announcements not taken, by reason "
                               "(malformed, version, id_mismatch, own, no_address, full, "
                               "overflow, unresolved; evicted: dropped for a trusted "
                               "peer)", ["reason"], registry=metrics.registry)
        self.listed = Gauge("hd_lan_peers", "Announcements of other nodes seen on the LAN",
                            registry=metrics.registry)
        hub.sessions.listen(self)
        hub.peers.on_renamed(self._renamed)
        self.names = Names(found=self._take, gone=self._gone, held=self._held,
                           count=lambda reason: self.ignored.labels(reason).inc())
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()
        self._zc: Zeroconf | None = None
        self._browser: ServiceBrowser | None = None
        self._info: ServiceInfo | None = None
        self._dialling: set[str] = set()
        self._wake = trio.Event()
        self._published: list[dict[str, Any]] | None = None

    # --- lifecycle --------------------------------------------------------------------

    async def run(self, port: int | None, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Browse (and announce ``port``, our peer listener's, when there is one) until
        cancelled or ``aclose``; a zeroconf that cannot start only costs discovery."""
        self.names.listen()
        try:
            with trio.CancelScope() as self._scope:
                try:
                    self._zc = await trio.to_thread.run_sync(open_zeroconf, self.host)
                except (OSError, ValueError) as exc:
                    log.warning("lan discovery off: zeroconf cannot start on %s: %s",
                                self.host, exc)
                    task_status.started()
                    return
                zc = self._zc
                self._browser = await trio.to_thread.run_sync(
                    lambda: ServiceBrowser(zc, SERVICE_TYPE, handlers=[self.names.on_change]))
                log.info("lan discovery started host=%s announce=%s", self.host,
                         port if port else "-")
                async with trio.open_nursery() as n:
                    self._nursery = n
                    n.start_soon(self.names.run, zc)
                    n.start_soon(self._timers)
                    if port:
                        n.start_soon(self._announce, zc, port)
                    task_status.started()
        finally:
            self._nursery = None
            self.names.close()
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                await trio.to_thread.run_sync(self._close_zeroconf, abandon_on_cancel=True)
            self._done.set()

    async def aclose(self) -> None:
        """Stop: unregister (a goodbye to the others) and close, then return."""
        if self._scope is None:
            return
        self._scope.cancel()
        await self._done.wait()

    def _close_zeroconf(self) -> None:  # worker thread
        browser, zc = self._browser, self._zc
        self._browser = self._zc = None
        if browser is not None:
            browser.cancel()
        if zc is not None:
            zc.close()  # unregisters our service (goodbye) first
            log.info("lan discovery stopped")

    def _service_info(self, name: str, port: int, node_name: str) -> ServiceInfo:
        ident = self.hub.identity
        return ServiceInfo(
            SERVICE_TYPE, name, port=port,
            properties=announcement_txt(ident.node_id, ident.public_key, node_name),
            server=f"hd-{ident.node_id}.local.",
            parsed_addresses=announced_addresses(self.host, self.include_loopback))

    async def _announce(self, zc: Zeroconf, port: int) -> None:
        info = self._service_info(service_name(self.own_id), port, self.hub.node_name)
        started = mono_ms()
        # Probing takes ~1.7 s; a name clash gets another instance name (the TXT, not
        # the name, says who we are).
        await trio.to_thread.run_sync(
            lambda: zc.register_service(info, allow_name_change=True), abandon_on_cancel=True)
        self._info = info
        log.info("lan announced service=%s port=%d ms=%d", info.name, port,
                 mono_ms() - started)

    def _renamed(self, name: str) -> None:
        """``network rename``: the TXT says the new name (a display name only)."""
        old, zc, n = self._info, self._zc, self._nursery
        if old is None or zc is None or n is None or old.port is None:
            return
        info = self._service_info(old.name, old.port, name)
        self._info = info
        n.start_soon(partial(trio.to_thread.run_sync, lambda: zc.update_service(info),
                             abandon_on_cancel=True))

    # --- what zeroconf resolved ---------------------------------------------------------

    def _held(self) -> list[str]:
        return [a.service for a in self.table.announcements()]

    def _gone(self, name: str) -> None:
        if self.table.removed(name):
            log.info("lan peer gone service=%s", name)
            self._changed()

    def _trusted(self, ann: LanAnnouncement) -> bool:
        """Whether ``ann`` names a peer we trust, under the key we pinned for it."""
        stored = self.hub.store.get_peer(ann.node_id)
        return (stored is not None and stored.trusted and not stored.blocked
                and stored.public_key == ann.public_key)

    def _see(self, ann: LanAnnouncement) -> bool:
        """``table.seen``; a trusted peer's announcement that finds the table full (of
        nodes anyone on the LAN can make up) takes the place of one we do not trust."""
        keep, now = self._trusted(ann), mono_ms()
        try:
            return self.table.seen(ann, now, keep=keep)
        except ProtocolError as exc:
            victim = self.table.evict_for(ann) if keep and exc.code == "full" else None
            if victim is None:
                raise
        log.info("lan peer dropped for a trusted peer peer=%s service=%s for=%s",
                 victim.node_id, victim.service, ann.node_id)
        self.ignored.labels("evicted").inc()
        return self.table.seen(ann, now, keep=True)

    def _take(self, name: str, got: Resolved) -> None:
        try:
            ann = parse_announcement(name, got.properties, got.addresses, got.port,
                                     own_id=self.own_id)
            changed = self._see(ann)
        except ProtocolError as exc:
            self.ignored.labels(exc.code).inc()
            (log.debug if exc.code == "own" else log.info)(
                "lan announcement ignored service=%s reason=%s", name, exc.code)
            if self.table.removed(name):  # it now says something we do not take
                self._changed()
            return
        if changed:
            log.info("lan peer seen peer=%s addr=%s service=%s", ann.node_id, ann.urls[0],
                     name)
            self._relabel(ann.node_id)
            self._changed()

    # --- decisions and dials ------------------------------------------------------------

    async def _timers(self) -> None:
        while True:
            now = mono_ms()
            for ann in self.table.expire(now):
                log.info("lan peer expired peer=%s service=%s", ann.node_id, ann.service)
                self._changed()
            for ann in self.table.due(now, busy=self._dialling):
                self._consider(ann)
            self._wake = trio.Event()
            with trio.move_on_at(trio_deadline(self.table.next_deadline())):
                await self._wake.wait()

    def _consider(self, ann: LanAnnouncement) -> None:
        hub = self.hub
        stored = hub.store.get_peer(ann.node_id)
        d = decide_lan_dial(ann, policy=hub.policy,
                            record=stored.record() if stored else None,
                            connected=hub.sessions.get(ann.node_id) is not None,
                            user_disconnected=ann.node_id in hub.peers.manual_disconnect)
        log.info("lan dial decision peer=%s dial=%s reason=%s", ann.node_id, d.dial, d.reason)
        if not d.dial or hub.shutting_down or self._nursery is None:
            return
        self._dialling.add(ann.node_id)
        cands = [DialCandidate(KIND, url, len(d.urls) - i) for i, url in enumerate(d.urls)]
        # SPEC 8.5: the dial pins the announced id and key; whoever answers must be it.
        intent = DialIntent(expected_node_id=ann.node_id, expected_key=d.expected_key)
        self._nursery.start_soon(self._dial, ann, cands, intent)

    async def _dial(self, ann: LanAnnouncement, cands: list[DialCandidate],
                    intent: DialIntent) -> None:
        try:
            await self.hub.connector.dial_any(cands, intent)
            self.table.dial_succeeded(ann.service)
        except HubError as exc:
            log.info("lan dial failed peer=%s service=%s reason=%s", ann.node_id,
                     ann.service, exc.code)
            self.table.dial_failed(ann.service, mono_ms())
        except Exception:
            log.exception("lan dial failed peer=%s: a bug", ann.node_id)
            self.table.dial_failed(ann.service, mono_ms())
        finally:
            self._dialling.discard(ann.node_id)
            self._wake.set()

    # --- sessions (SessionListener) -------------------------------------------------------

    def session_opened(self, driver: LinkDriver) -> None:
        peer = driver.peer_id
        if peer is not None and self.table.by_node(peer):
            self._relabel(peer)
            self._changed()

    def _relabel(self, peer: str) -> None:
        """A peer that dialled us from the address it announces on the LAN reached us
        over the LAN: its session is a ``lan`` link here too, as it is at its end."""
        driver = self.hub.sessions.get(peer)
        if driver is None or driver.conn.role != "acceptor" or driver.kind != "direct":
            return
        if any(announced_from(a, driver.link.remote_addr) for a in self.table.by_node(peer)):
            driver.kind = KIND
            self.hub.peers.peer_update(peer)

    def session_closed(self, driver: LinkDriver, reason: str, remote: bool) -> None:
        peer = driver.peer_id
        if peer is None or not self.table.by_node(peer):
            return
        if reason not in NO_REDIAL and not self.hub.shutting_down:
            self.table.poke(peer, mono_ms())
            self._wake.set()
        self._changed()

    def peer_error(self, driver: LinkDriver, err: Any) -> None:
        pass

    # --- what tabs see ----------------------------------------------------------------------

    def view(self) -> list[dict[str, Any]]:
        """``lan_peers`` rows: who is on the LAN, whether we know them, at which level."""
        rows = []
        for ann in self.table.announcements():
            stored = self.hub.store.get_peer(ann.node_id)
            driver = self.hub.sessions.get(ann.node_id)
            session = driver.conn.session if driver is not None else None
            if session is not None:
                level: str | None = session.level
            else:
                level = "trusted" if stored and stored.trusted and not stored.blocked else None
            rows.append({
                "node_id": ann.node_id,
                "node_name": (stored.node_name if stored and stored.node_name
                              else ann.node_name),
                "address": ann.urls[0], "known": stored is not None, "level": level,
                "connected": session is not None,
            })
        return rows

    def answer(self) -> dict[str, Any]:
        return {"enabled": True, "peers": self.view()}

    def _changed(self) -> None:
        """Push ``lan_peers`` to every tab when what they would see changed."""
        self.listed.set(len(self.table))
        self._wake.set()
        rows = self.view()
        if rows != self._published:
            self._published = rows
            self.hub.bus.publish("network", "lan_peers", {"peers": rows})
