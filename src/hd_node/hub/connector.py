"""Dialling: one attempt over a transport, and the join ladder over many (SPEC 8.2).

An attempt opens a link through the transport of the candidate's kind, starts its
driver in the node's link nursery (a session outlives the attempt that made it) and
waits for the handshake to end. The ladder runs attempts by ``hd_protocol``'s
``Ladder``: best first, staggered, WebRTC and relay at their offsets, the first
authenticated session wins and the others are cancelled, a refusal stops it.
Every failure comes back as a ``HubError`` with a code; nothing a remote sends or
answers escapes as anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from hd_protocol import Connection, DialCandidate, Identity, Ladder
from hd_protocol.limits import Limits
from hd_protocol.peer.addressbook import learn, record
from hd_protocol.peer.candidates import LadderOutput, StartDial
from hd_protocol.peer.handshake import State as HsState
from hd_shell.clock import mono_ms, trio_deadline, wall_ms

from ..errors import HubError
from ..metrics import NodeMetrics
from ..store import NodeStore
from ..transports.seam import DialFailed, Transports
from .linkdriver import LinkDriver, LinkLimits
from .sessions import SessionRegistry
from .tasks import Tasks
from .trust import DialIntent

log = logging.getLogger("hd_node.dial")

# Transport failures as a tab or the CLI sees them.
_DIAL_CODES = {"timeout": "unreachable", "bad_handshake": "unreachable",
               "refused_http": "unreachable", "bad_address": "bad_request"}


class Connector:
    def __init__(self, identity: Identity, transports: Transports, sessions: SessionRegistry,
                 store: NodeStore, *, limits: Limits, link_limits: LinkLimits,
                 rng: Callable[[int], bytes], node_name: str,
                 capabilities: Sequence[str], tasks: Tasks, metrics: NodeMetrics,
                 on_step: Callable[[dict[str, Any]], None]) -> None:
        """``tasks``: where links live (the node's); ``on_step``: told every ladder step
        (SPEC 8.2: a person sees which path won); ``metrics``: attempts and wins per kind."""
        self.identity = identity
        self.transports = transports
        self.sessions = sessions
        self.store = store
        self.limits = limits
        self.link_limits = link_limits
        self.rng = rng
        self.node_name = node_name
        self.capabilities = list(capabilities)
        self.tasks = tasks
        self.attest: dict[str, Any] | None = None  # a lobby's attestation (SPEC 7.6)
        self.on_step = on_step
        self.metrics = metrics

    def rename(self, name: str) -> None:
        """What our handshakes say from now on (``network rename``)."""
        self.node_name = name

    def attested(self, attest: dict[str, Any] | None) -> None:
        """The lobby's attestation of us (SPEC 7.6), presented in our handshakes."""
        self.attest = attest

    async def dial(self, candidate: DialCandidate, intent: DialIntent) -> LinkDriver:
        """One attempt. Returns the session (perhaps one that already existed)."""
        if not self.tasks.running:
            raise HubError("not_running", "the node is not running")
        expected = intent.expected_node_id
        if expected == self.identity.node_id:
            raise HubError("wrong_node", "a node cannot dial itself")
        if expected is not None and (existing := self.sessions.get(expected)) is not None:
            return existing
        if len(self.sessions.sessions) >= self.limits.sessions_per_node:
            raise HubError("busy", "too many sessions")
        log.info("dial started kind=%s addr=%s expect=%s", candidate.kind, candidate.address,
                 expected or "-")
        try:
            link = await self.transports.open(
                candidate, timeout_s=self.limits.handshake_timeout_ms / 1000,
                peer_id=expected)
        except DialFailed as exc:
            if exc.code == "duplicate" and expected and (e := self.sessions.get(expected)):
                # The transport met the peer's own simultaneous attempt and kept that one
                # (WebRTC glare, SPEC 8.4): its session is this dial's result.
                return e
            self._demote_address(candidate, expected)
            code = _DIAL_CODES.get(exc.code, exc.code)
            if exc.code == "refused_http" and "503" in exc.message:
                code = "busy"
            log.info("dial failed kind=%s addr=%s reason=%s", candidate.kind,
                     candidate.address, exc.code)
            raise HubError(code, exc.message) from None
        conn = Connection.dial(
            self.identity, rng=self.rng, now=mono_ms(), wall=wall_ms(), limits=self.limits,
            link=candidate.kind, node_name=self.node_name, capabilities=self.capabilities,
            expected_node_id=expected, token=intent.token, attest=self.attest,
        )
        driver = LinkDriver(link, conn, self.sessions, limits=self.link_limits,
                            candidate=candidate)
        self.sessions.track(driver, intent)
        self.tasks.start_soon(driver.run)
        try:
            await driver.established.wait()  # the machine's deadline bounds this
        except BaseException:
            driver.close("cancelled")  # a ladder loser, or the caller gave up
            raise
        if driver.registered:
            self._remember_address(driver)
            return driver
        peer = conn.peer_id
        if conn.closed is not None and conn.closed.reason == "duplicate" and peer:
            existing = self.sessions.get(peer)
            if existing is not None:
                return existing  # already connected to whoever answers there
        failure = conn.failure
        if failure is None:
            raise HubError("closed", "the session ended at once")
        if failure.reason in ("timeout", "closed", "wrong_node", "bad_handshake"):
            self._demote_address(candidate, expected)
        message = failure.message or failure.reason
        if failure.reason == "closed" and conn.handshake.state is HsState.WAIT_HELLO_ACK:
            # An acceptor drops a hello addressed to someone else unanswered.
            message = (f"nothing at {candidate.address} answered as "
                       f"{expected or 'an hd node'} (another node there?)")
        if failure.reason == "duplicate" and peer and (e := self.sessions.get(peer)):
            return e
        raise HubError(failure.reason, message, refused=failure.remote)

    async def dial_any(self, candidates: Sequence[DialCandidate | str],
                       intent: DialIntent) -> LinkDriver:
        """The join ladder (SPEC 8.2) over ``candidates``."""
        ladder = Ladder(list(candidates)[: self.limits.addresses * 2], mono_ms())
        results_send, results_recv = trio.open_memory_channel[
            tuple[DialCandidate, LinkDriver | HubError]](self.limits.addresses * 2)
        won: dict[DialCandidate, LinkDriver] = {}
        errors: list[HubError] = []

        async def attempt(cand: DialCandidate) -> None:
            try:
                res: LinkDriver | HubError = await self.dial(cand, intent)
            except HubError as exc:
                res = exc
            results_send.send_nowait((cand, res))  # one result per candidate: never blocks

        async with trio.open_nursery() as n:
            outs: list[LadderOutput] = list(ladder.start(mono_ms()))
            while True:
                for out in outs:
                    if isinstance(out, StartDial):
                        log.info("ladder step kind=%s addr=%s", out.candidate.kind,
                                 out.candidate.address)
                        self._step(intent, out.candidate, "start")
                        n.start_soon(attempt, out.candidate)
                if ladder.done is not None:
                    n.cancel_scope.cancel()  # the losers
                    break
                got: Any = None
                with trio.move_on_at(trio_deadline(ladder.next_deadline())):
                    got = await results_recv.receive()
                if got is None:
                    outs = ladder.on_timer(mono_ms())
                elif isinstance(got[1], HubError):
                    errors.append(got[1])
                    self._step(intent, got[0], "failed", got[1].code)
                    outs = ladder.failed(got[0], got[1].code, mono_ms(),
                                         refused=got[1].refused)
                else:
                    won[got[0]] = got[1]
                    outs = ladder.succeeded(got[0])
        done = ladder.done
        assert done is not None
        if done.candidate is not None:
            driver = won[done.candidate]
            log.info("ladder won kind=%s addr=%s peer=%s", done.candidate.kind,
                     done.candidate.address, driver.peer_id)
            self._step(intent, done.candidate, "won")
            return driver
        reason = done.reason or "unreachable"
        last = next((e for e in reversed(errors) if e.code == reason), None)
        raise HubError(reason, last.message if last else "no candidate answered",
                       refused=bool(last and last.refused))

    def _step(self, intent: DialIntent, cand: DialCandidate, step: str,
              reason: str | None = None) -> None:
        if step in ("start", "won"):
            counter = self.metrics.ladder_attempts if step == "start" else self.metrics.ladder_wins
            counter.labels(cand.kind).inc()
        try:
            self.on_step({"node_id": intent.expected_node_id, "kind": cand.kind,
                          "address": cand.address, "step": step, "reason": reason})
        except Exception:
            log.exception("ladder step listener failed")

    def _remember_address(self, driver: LinkDriver) -> None:
        """An address that got us a session goes to the front (as the user's: we
        dialled it because the user, an invite or a stored record said so)."""
        cand, peer = driver.candidate, driver.peer_id
        if cand is None or peer is None or not self._remembers(cand):
            return
        stored = self.store.get_peer(peer)
        if stored is not None:
            book = learn(record(stored.book, cand.address, ok=True), [cand.address], "user",
                         limit=self.limits.addresses)
            self.store.set_book(peer, book)

    def _demote_address(self, cand: DialCandidate, peer: str | None) -> None:
        """An address of a known peer failed: it is tried after the others next time."""
        if peer is None or not self._remembers(cand):
            return
        stored = self.store.get_peer(peer)
        if stored is not None and cand.address in stored.addrs:
            self.store.set_book(peer, record(stored.book, cand.address, ok=False))

    def _remembers(self, cand: DialCandidate) -> bool:
        transport = self.transports.get(cand.kind)
        return bool(transport and transport.remembers_addresses)
