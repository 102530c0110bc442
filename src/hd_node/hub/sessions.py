"""The session registry: at most one session per peer (SPEC 4), and every link's owner.

Every link driver reports here, synchronously: the admission it needs, its session
opening, each verified message, its end. The registry keeps exactly one session per
peer — the SPEC 4 tie-break picks the same link on both ends without talking — and
tells its listeners (features, presence, reconnect, tabs) when a peer's session opens
or closes. Messages are routed by envelope type to the handler registered for it;
anything nobody serves is answered ``error {code: "unsupported"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from hd_protocol import Decision, Identity, LocalProtocolError, keep_new_session
from hd_protocol.limits import Limits
from hd_protocol.peer.admission import reject
from hd_protocol.peer.connection import (
    Closed,
    Dropped,
    Event,
    HandshakeFailed,
    Message,
    NeedAdmission,
    PeerError,
)

from ..metrics import NodeMetrics
from ..store import NodeStore
from ..transports.seam import Ticket
from .linkdriver import LinkBusy, LinkDriver
from .trust import DialIntent, Trust

log = logging.getLogger("hd_node.sessions")

MessageHandler = Callable[[LinkDriver, Message], None]


class SessionListener(Protocol):
    def session_opened(self, driver: LinkDriver) -> None: ...

    def session_closed(self, driver: LinkDriver, reason: str, remote: bool) -> None: ...

    def peer_error(self, driver: LinkDriver, err: PeerError) -> None: ...


class HandshakeSlots:
    """Inbound handshakes in flight (SPEC 4): at most ``total``, and at most
    ``per_address`` from one remote address, so one address cannot hold every slot.
    Taken synchronously (exact: no await between the check and the count)."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self.in_flight = 0
        self._by_addr: dict[str | None, int] = {}

    def take(self, addr: str | None) -> Ticket | None:
        if self.in_flight >= self.total or self._by_addr.get(addr, 0) >= self.per_address:
            return None
        self.in_flight += 1
        self._by_addr[addr] = self._by_addr.get(addr, 0) + 1

        def release() -> None:
            self.in_flight -= 1
            left = self._by_addr.get(addr, 1) - 1
            if left > 0:
                self._by_addr[addr] = left
            else:
                self._by_addr.pop(addr, None)

        return Ticket(release)


class SessionRegistry:
    def __init__(self, identity: Identity, limits: Limits, store: NodeStore,
                 metrics: NodeMetrics, trust: Trust) -> None:
        self.identity = identity
        self.limits = limits
        self.store = store
        self.metrics = metrics
        self.trust = trust
        self.sessions: dict[str, LinkDriver] = {}
        self.intents: dict[LinkDriver, DialIntent] = {}
        self.slots = HandshakeSlots(limits.handshakes_in_flight, limits.handshakes_per_address)
        self._in_handshake: dict[LinkDriver, Ticket | None] = {}
        self._routes: dict[str, MessageHandler] = {}
        self._listeners: list[SessionListener] = []

    # --- wiring -----------------------------------------------------------------------

    def route(self, type_: str, handler: MessageHandler) -> None:
        self._routes[type_] = handler

    def listen(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    # --- queries ----------------------------------------------------------------------

    def get(self, peer_id: str) -> LinkDriver | None:
        """The live session with ``peer_id``, if any."""
        d = self.sessions.get(peer_id)
        return d if d is not None and d.is_open else None

    @property
    def handshakes_in_flight(self) -> int:
        return len(self._in_handshake)

    def reserve(self, remote_addr: str | None) -> Ticket | None:
        """An inbound handshake slot, or None when too busy (SPEC 4, SPEC 11)."""
        if len(self.sessions) >= self.limits.sessions_per_node:
            return None
        return self.slots.take(remote_addr)

    # --- link life (LinkOwner) ----------------------------------------------------------

    def track(self, driver: LinkDriver, intent: DialIntent | None,
              ticket: Ticket | None = None) -> None:
        """A new link starts its handshake (an inbound one holds ``ticket``, its slot,
        until the handshake ends)."""
        if intent is not None:
            self.intents[driver] = intent
        self._in_handshake[driver] = ticket

    def batch(self) -> AbstractContextManager[Any]:
        # What a link's reader processes is what we answer peers about (chat acks,
        # admission records): its commits are durable before the answers leave.
        return self.store.batch(durable=True)

    def decide(self, driver: LinkDriver, need: NeedAdmission) -> Decision:
        kind, addr = driver.kind, driver.link.remote_addr
        if driver.conn.role == "acceptor":
            return self.trust.decide_acceptor(need, kind, addr)
        if self.get(need.peer.node_id) is not None:
            # Already connected (another ladder step, or the peer dialled us first):
            # a second session would only be closed again by the tie-break.
            return reject("duplicate")
        return self.trust.decide_dialer(need, self.intents.get(driver, DialIntent()), kind,
                                        addr)

    def established(self, driver: LinkDriver) -> None:
        self._handshake_over(driver)
        session = driver.conn.session
        assert session is not None
        role = driver.conn.role
        self.metrics.handshakes.labels(role, "ok").inc()
        peer = session.peer_id
        if role == "dialer":
            hello = driver.conn.peer
            assert hello is not None
            self.trust.pin_dialled(peer, hello.public_key, hello.node_name,
                                   list(hello.capabilities),
                                   self.intents.get(driver, DialIntent()))
        existing = self.get(peer)
        if existing is not None:
            old = existing.conn.session
            assert old is not None
            new_wins = keep_new_session(
                self.identity.node_id, existing_dialer=old.dialer_id,
                existing_opened_at=old.opened_at, new_dialer=session.dialer_id,
                new_opened_at=session.opened_at,
                handshake_timeout_ms=self.limits.handshake_timeout_ms,
            )
            log.info("duplicate session peer=%s keep=%s", peer, "new" if new_wins else "old")
            if not new_wins:
                driver.close("duplicate")
                return
            self.sessions[peer] = driver  # first: the old one's close is then no news
            existing.registered = False
            existing.close("duplicate")
        self.sessions[peer] = driver
        driver.registered = True
        self.metrics.sessions.set(len(self.sessions))
        log.info("session open peer=%s level=%s role=%s kind=%s", peer, session.level, role,
                 driver.kind)
        for listener in self._listeners:
            _guard(listener.session_opened, driver)

    def message(self, driver: LinkDriver, msg: Message) -> None:
        self.metrics.envelopes_in.inc()
        handler = self._routes.get(msg.type)
        if handler is None:
            self._reply_error(driver, "unsupported", f"{msg.type} is not served here",
                              msg.msg_id)
            return
        _guard(handler, driver, msg)

    def event(self, driver: LinkDriver, ev: Event) -> None:
        if isinstance(ev, Dropped):
            self.metrics.dropped.labels(ev.code).inc()
            log.info("envelope dropped peer=%s code=%s", driver.peer_id, ev.code)
        elif isinstance(ev, PeerError):
            log.info("peer error peer=%s code=%s", driver.peer_id, ev.code)
            if driver.registered:
                for listener in self._listeners:
                    _guard(listener.peer_error, driver, ev)
        elif isinstance(ev, HandshakeFailed):
            self._handshake_over(driver)
            role = driver.conn.role
            self.metrics.handshakes.labels(role, ev.reason).inc()
            log.info("handshake failed role=%s addr=%s reason=%s remote=%s", role,
                     driver.address, ev.reason, ev.remote)
        elif isinstance(ev, Closed):
            self._closed(driver, ev.reason, ev.remote)

    def ended(self, driver: LinkDriver) -> None:
        self._handshake_over(driver)
        self.intents.pop(driver, None)
        if driver.registered:  # a session that ended without a Closed event
            self._closed(driver, driver.close_reason or "link closed", True)

    def sent(self, driver: LinkDriver, frames: int, nbytes: int) -> None:
        self.metrics.envelopes_out.inc(frames)
        self.metrics.bytes_out.inc(nbytes)

    # --- internals ----------------------------------------------------------------------

    def _handshake_over(self, driver: LinkDriver) -> None:
        if driver in self._in_handshake:
            ticket = self._in_handshake.pop(driver)
            if ticket is not None:
                ticket.release()

    def _closed(self, driver: LinkDriver, reason: str, remote: bool) -> None:
        peer = driver.peer_id
        if not driver.registered or peer is None:
            return
        driver.registered = False
        if self.sessions.get(peer) is driver:
            del self.sessions[peer]
        self.metrics.sessions.set(len(self.sessions))
        log.info("session closed peer=%s reason=%s remote=%s", peer, reason, remote)
        for listener in self._listeners:
            _guard(listener.session_closed, driver, reason, remote)

    def _reply_error(self, driver: LinkDriver, code: str, message: str, re: str) -> None:
        if driver.is_open:
            _guard(driver.reply_error, code, message, re)


def _guard(fn: Callable[..., None], *args: Any) -> None:
    """A listener's or handler's bug must not take the link (or the node) down."""
    try:
        fn(*args)
    except LinkBusy:
        log.info("link overloaded: %s could not queue its answer",
                 getattr(fn, "__qualname__", fn))
    except LocalProtocolError as exc:
        if exc.code != "not_open":
            _log_failure(exc, fn)
        # The session ended while this message was being handled: nothing to answer.
    except Exception as exc:
        _log_failure(exc, fn)


def _log_failure(exc: BaseException, fn: Any) -> None:
    """A bug of ours: logged with its traceback, never mistaken for a peer's fault."""
    log.error("handler failed: %s", getattr(fn, "__qualname__", fn), exc_info=exc)
