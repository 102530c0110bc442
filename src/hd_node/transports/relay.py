"""The relay transport (SPEC 7.7, 8.1): sessions through a relay broker, on the link seam.

The node attaches to a relay (challenge, signed ``attach``) and keeps that connection
up, reconnecting with backoff. Over it run *virtual links*, one per peer: what a link
sends becomes ``relay {to: peer, envelope}``, and what arrives as ``relay {from: peer,
envelope}`` is that peer's link's input. The handshake and the sealed session run on a
virtual link exactly as on a WebSocket — the relay sees types, ids and sizes, never a
payload, and cannot forge, re-address or replay anything the session would accept.

A virtual link outlives a reconnect to its relay (what was sent meanwhile waits in the
relay's store and comes back in order), duplicates from at-least-once delivery are
dropped by ``msg_id``, and stored envelopes are acknowledged (``ack {qids}``) once read.
A ``relay`` from a peer we have no link with opens an inbound one, but only with a
``hello``, and only when the hub has a handshake slot for it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import trio

from hd_protocol import DialCandidate, Envelope, Identity, reconnect_delay_ms
from hd_protocol.envelope import envelope_from_obj
from hd_protocol.errors import RemoteProtocolError
from hd_protocol.frames import decode_frame, parse_challenge
from hd_protocol.relay import ack_frame, attach_frame, relay_frame
from hd_shell.ws.link import DialError, WsLink, dial_ws

from .seam import DialFailed, InboundGate, Link, LinkClosed

log = logging.getLogger("hd_node.relay")

LINK_QUEUE = 256  # frames waiting for a virtual link's reader before the relay waits
DEDUP_IDS = 2048


class RelayLink:
    """One peer's virtual link through one attachment."""

    kind = "relay"

    def __init__(self, att: Attachment, peer: str) -> None:
        self.att = att
        self.peer = peer
        self.remote_addr: str | None = f"relay:{peer}"
        self._send, self._recv = trio.open_memory_channel[Envelope](LINK_QUEUE)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.closed = False

    def feed(self, env: Envelope) -> bool:
        """An envelope for this link; False if it is a duplicate or the link is gone."""
        if self.closed or env.msg_id in self._seen:
            return False
        self._seen[env.msg_id] = None
        if len(self._seen) > DEDUP_IDS:
            self._seen.popitem(last=False)
        try:
            self._send.send_nowait(env)
        except trio.WouldBlock:
            return False  # its reader is behind: the session's own checks recover
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def receive_some(self) -> list[str | bytes | Envelope]:
        try:
            out: list[str | bytes | Envelope] = [await self._recv.receive()]
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise LinkClosed("the virtual link is closed") from None
        while True:
            try:
                out.append(self._recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return out

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        if self.closed:
            raise LinkClosed("the virtual link is closed")
        await self.att.send([relay_frame(self.peer, m if isinstance(m, str) else m.decode())
                             for m in messages])

    def authenticated(self) -> None:
        pass

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.att.links.pop(self.peer, None)
            self._send.close()


class Attachment:
    """Our attachment to one relay: reconnects by itself, carries virtual links."""

    def __init__(self, transport: RelayTransport, url: str) -> None:
        self.transport = transport
        self.url = url
        self.links: dict[str, RelayLink] = {}
        self.ws: WsLink | None = None
        self.attached = trio.Event()
        self._write_lock = trio.Lock()
        self._changed = trio.Event()

    async def send(self, frames: list[str]) -> None:
        """Write relay frames; waits (the caller's write deadline bounds it) while the
        relay connection is down — a reconnect resumes it."""
        while True:
            ws = self.ws
            if ws is not None and self.attached.is_set():
                async with self._write_lock:
                    try:
                        await ws.send_many(frames)
                        return
                    except LinkClosed:
                        pass
            self._changed = trio.Event()
            await self._changed.wait()

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._session()
                attempt = 0
            except (DialError, LinkClosed, RemoteProtocolError, trio.TooSlowError) as exc:
                log.info("relay connection lost url=%s reason=%s", self.url, exc)
            except Exception:  # a bug of ours: logged, and the attachment carries on
                log.exception("relay attachment failed url=%s", self.url)
            self.attached = trio.Event()
            self.ws = None
            self._changed.set()
            await trio.sleep(reconnect_delay_ms(attempt, self.transport.rng) / 1000)
            attempt += 1

    async def _session(self) -> None:
        t = self.transport
        ws = await dial_ws(self.url, timeout_s=10, max_message_size=t.max_frame, kind="relay")
        try:
            with trio.fail_after(10):
                first = list(await ws.receive_some())
                hello = parse_challenge(decode_frame(first.pop(0), 64 * 1024))
                await ws.send_many([attach_frame(t.identity, hello)])
                rest = first or list(await ws.receive_some())
                answer = decode_frame(rest.pop(0), 64 * 1024)
            if answer["type"] != "attached":
                raise RemoteProtocolError("auth", f"the relay answered {answer['type']}")
            self.ws = ws
            self.attached.set()
            self._changed.set()
            log.info("relay attached url=%s queued=%s", self.url, answer.get("queued"))
            frames = rest  # what came with the answer (stored envelopes) comes first
            while True:
                if frames:
                    await self._read(frames)
                frames = list(await ws.receive_some())
        finally:
            with trio.CancelScope(shield=True):
                await ws.aclose()

    async def _read(self, frames: list[str | bytes]) -> None:
        qids: list[int] = []
        for raw in frames:
            try:
                f = decode_frame(raw, self.transport.max_frame)
            except RemoteProtocolError:
                continue
            if f["type"] == "relay":
                self._on_relay(f)
                if type(f.get("qid")) is int:
                    qids.append(f["qid"])
            elif f["type"] == "error":
                log.info("relay error url=%s code=%s", self.url, f.get("code"))
        if qids and self.ws is not None:
            async with self._write_lock:
                await self.ws.send_many([ack_frame(qids)])

    def _on_relay(self, f: dict[str, Any]) -> None:
        peer = f.get("from")
        try:
            env = envelope_from_obj(f.get("envelope"))
        except RemoteProtocolError:
            return
        if env.src != peer or env.dst != self.transport.identity.node_id:
            return  # not ours, or not from whom the relay says: the session would drop it
        link = self.links.get(env.src)
        if link is None:
            if env.type != "hello":
                return  # a stray for a link that is gone
            link = self.transport.inbound(self, env.src)
            if link is None:
                return
        link.feed(env)


class RelayTransport:
    kind = "relay"
    remembers_addresses = False

    def __init__(self, identity: Identity, *, max_envelope_bytes: int,
                 rng: Callable[[int], bytes], default_url: Callable[[], str | None]) -> None:
        self.identity = identity
        self.rng = rng
        self.max_frame = max_envelope_bytes + 4096
        self.default_url = default_url
        self.attachments: dict[str, Attachment] = {}
        self._gate: InboundGate | None = None
        self._nursery: trio.Nursery | None = None

    def attachment(self, url: str) -> Attachment:
        att = self.attachments.get(url)
        if att is None:
            assert self._nursery is not None, "the relay transport is not running"
            att = self.attachments[url] = Attachment(self, url)
            self._nursery.start_soon(att.run)
        return att

    async def serve(self, gate: InboundGate, *,
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            self._gate, self._nursery = gate, n
            task_status.started()
            while True:  # our own relay follows the settings (and the lobby we use)
                url = self.default_url()
                if url:
                    self.attachment(url)
                await trio.sleep(1.0)

    async def open(self, candidate: DialCandidate, *, timeout_s: float,
                   peer_id: str | None = None) -> Link:
        if peer_id is None:
            raise DialFailed("bad_address", "a relay link needs the node id it goes to")
        if self._nursery is None:
            raise DialFailed("unsupported", "the relay transport is not running")
        att = self.attachment(candidate.address)
        with trio.move_on_after(timeout_s):
            await att.attached.wait()
        if not att.attached.is_set():
            raise DialFailed("unreachable", f"cannot attach to the relay {candidate.address}")
        old = att.links.get(peer_id)
        if old is not None:
            await old.aclose()
        link = att.links[peer_id] = RelayLink(att, peer_id)
        return link

    def inbound(self, att: Attachment, peer: str) -> RelayLink | None:
        """A peer's ``hello`` with no link yet: a new inbound link, if the hub has room."""
        if self._gate is None or self._nursery is None:
            return None
        ticket = self._gate.reserve(f"relay:{peer}")
        if ticket is None:
            return None
        link = att.links[peer] = RelayLink(att, peer)
        self._nursery.start_soon(self._gate.accept, link, ticket)
        return link
