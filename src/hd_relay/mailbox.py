"""The relay's mailbox on JetStream: one stream for every instance of a cluster (issue 19).

The stream ``HD_MAILBOX`` holds the envelopes waiting for nodes, one subject per
destination (``hd.mail.<node id>``), so one destination's mail is one ordered sequence
whichever instance stored it, and any instance can deliver it:

- limits (SPEC 11): ``max_msgs_per_subject`` 1000 with ``discard new`` per subject (the
  1001st envelope for a node is refused: ``queue_full``), ``max_bytes`` 1 GiB in all
  (refused past it: ``queue_full``), ``max_age`` 24 h (JetStream drops what is older:
  that is the purge). The 16 MiB per destination has no JetStream limit; each instance
  checks nothing it cannot see, so in a cluster it is not enforced (the 1000 envelopes
  and the 1 GiB are).
- dedupe: ``Nats-Msg-Id`` is ``<dst>:<msg_id>`` within the ``duplicate_window``; a resend
  of an envelope already stored is acknowledged and stored once.
- ``qid`` is the stream sequence; the recipient's ack deletes by sequence.
- loading for a node: an ephemeral pull consumer filtered on its subject (in memory, no
  acks, asked once for up to ``limit`` with ``no_wait``, deleted after), oldest first.
  A consumer is served by the stream's leader, which has applied everything it
  acknowledged, so a load right after an ack sees it.
- new mail: once a store is acknowledged the instance publishes a note on
  ``hd.mailnote.<dst>`` (core NATS, one per destination per batch). Every instance
  listens on ``hd.mailnote.*`` and tells its machine (``mail_arrived``), which loads only
  for nodes attached there. The note follows the ack, not the publish: a core
  subscriber on ``hd.mail.<dst>`` itself could see the message before the stream has
  it and load nothing.
- counts at start (``RelayServer(queued=...)``): stream info with a subjects filter
  gives envelopes per destination; bytes are estimated as that share of the stream's
  bytes (JetStream does not count bytes per subject).

What "acknowledged as queued" promises: the relay sends ``relay_ack queued`` only after
JetStream's publish ack. With one server (replicas 1) that ack means the server has
written it to its file store; nats-server's ``sync_interval`` defaults to 2 minutes, so
the write is in the OS's buffers and survives the server process being killed, but an
OS crash or power loss can lose up to the last interval of acknowledged envelopes unless
the server runs with ``sync_interval: always`` (``jetstream { sync_interval: always }``),
which is the setting to choose for a single server (the SQLite mailbox's
``synchronous=FULL``). With three servers (replicas 3) the ack means a quorum, two of
three, holds it: any one server may die, even with its disk, and nothing acknowledged is
lost; only a power loss of two servers at once within the interval can lose some, which
``sync_interval: always`` closes too. The tests kill servers (SIGKILL), which the default
survives, and run with the default.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hd_protocol.brokers.relay import QueuedEnvelope, StoreQueued
from hd_protocol.limits import DEFAULT_LIMITS, Limits
from hd_shell.cluster import Bus

STREAM = "HD_MAILBOX"
SUBJECT = "hd.mail."
NOTE = "hd.mailnote."
DUPLICATE_WINDOW_S = 120.0
FETCH_WAIT_S = 1.5  # the server's answer to one no_wait pull
PUT_WAIT_S = 1.5  # the acks of one batch (within the bus's own call deadline)
# JetStream's answers to a publish it refused for the stream's limits (message count,
# messages per subject, bytes): 10077 "maximum messages per subject exceeded" and
# kin, 10054 "maximum messages exceeded", 10039 "insufficient resources"... all said
# as "maximum ... exceeded"; anything else is "unavailable".
_FULL_WORDS = ("maximum", "exceeded")


@dataclass(frozen=True, slots=True)
class StoreResult:
    ok: bool
    code: str = ""  # "queue_full", "too_large" or "unavailable" when not ok
    duplicate: bool = False
    seq: int = 0


class ClusterMailbox:
    """The mailbox of the relay instances that share one NATS (``bus``)."""

    def __init__(self, bus: Bus, *, servers: int, limits: Limits = DEFAULT_LIMITS,
                 stream: str = STREAM) -> None:
        """``servers``: how many NATS servers the cluster has (the stream is replicated
        on min(3, servers))."""
        self.bus = bus
        self.replicas = max(1, min(3, servers))
        self.limits = limits
        self.stream = stream
        self.ready = False  # the stream exists (made or checked once the bus is there)

    # --- the stream -------------------------------------------------------------------

    def config(self) -> Any:
        import nats.js.api as api

        lim = self.limits
        return api.StreamConfig(
            name=self.stream, subjects=[f"{SUBJECT}*"], storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.NEW,
            discard_new_per_subject=True, max_msgs_per_subject=lim.relay_queue_envelopes,
            max_bytes=lim.relay_total_bytes, max_age=lim.relay_queue_age_ms / 1000,
            max_msg_size=lim.max_envelope_bytes + 4096,
            duplicate_window=DUPLICATE_WINDOW_S, num_replicas=self.replicas,
            allow_direct=False)

    async def ensure(self) -> None:
        """Make the stream, or bring an existing one to this configuration (raises
        ClusterUnavailable while the bus is gone)."""
        config = self.config()

        async def ensure(js: Any) -> None:
            import nats.js.errors

            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:  # there, with other settings
                await js.update_stream(config)

        await self.bus.call(ensure)
        self.ready = True

    # --- stores ---------------------------------------------------------------------------

    async def put_many(self, items: Sequence[StoreQueued]) -> list[StoreResult]:
        """Publish every item (in order: one destination's mail keeps its order), wait
        for all the acks at once, then note each destination that got mail. One answer
        per item; a bus that is gone raises ClusterUnavailable for the whole batch."""
        msgs = [(f"{SUBJECT}{it.dst}", _body(it),
                 {"Nats-Msg-Id": f"{it.dst}:{it.msg_id}"}) for it in items]

        async def put(js: Any) -> list[StoreResult]:
            import asyncio

            import nats.errors

            # Published one after the other with a reply subject each, then the acks
            # awaited together (nats-py's publish_async loses an error reply). One
            # inbox for the batch; what has no answer in time is "unavailable".
            nc = js._nc  # noqa: SLF001
            inbox = nc.new_inbox()
            sub = await nc.subscribe(f"{inbox}.*", pending_msgs_limit=len(msgs) + 8)
            answers: dict[int, StoreResult] = {}
            limit = self.bus.max_payload - 1024  # the headers go with the data
            try:
                for i, (subject, data, headers) in enumerate(msgs):
                    if len(data) > limit:  # one the bus refuses must not sink the batch
                        answers[i] = StoreResult(False, "too_large")
                        continue
                    await nc.publish(subject, data, reply=f"{inbox}.{i}", headers=headers)
                with contextlib.suppress(asyncio.TimeoutError, nats.errors.TimeoutError):
                    while len(answers) < len(msgs):
                        reply = await sub.next_msg(timeout=PUT_WAIT_S)
                        with contextlib.suppress(ValueError):
                            answers[int(reply.subject.rsplit(".", 1)[1])] = _answer(reply)
            finally:
                await sub.unsubscribe()
            out = [answers.get(i, StoreResult(False, "unavailable")) for i in range(len(msgs))]
            for dst in dict.fromkeys(it.dst for it, r in zip(items, out, strict=True)
                                     if r.ok and not r.duplicate):
                await nc.publish(f"{NOTE}{dst}", b"")  # new mail, after the ack
            return out

        return await self.bus.call(put)

    # --- loads and deletes ----------------------------------------------------------------

    async def load(self, dst: str, limit: int) -> list[QueuedEnvelope]:
        """Up to ``limit`` envelopes for ``dst``, oldest first."""
        stream = self.stream

        async def load(js: Any) -> list[QueuedEnvelope]:
            import nats.js.api as api

            nc = js._nc  # noqa: SLF001 - the pull is spoken by hand: one request, no_wait
            name = f"hd-load-{secrets.token_hex(8)}"
            await js.add_consumer(stream, api.ConsumerConfig(
                name=name, filter_subject=f"{SUBJECT}{dst}",
                deliver_policy=api.DeliverPolicy.ALL, ack_policy=api.AckPolicy.NONE,
                inactive_threshold=30.0, mem_storage=True, num_replicas=1))
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox, pending_msgs_limit=limit + 8)
            got: list[QueuedEnvelope] = []
            try:
                await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}",
                                 json.dumps({"batch": limit, "no_wait": True}).encode(),
                                 reply=inbox)
                for _ in range(limit):
                    msg = await sub.next_msg(timeout=FETCH_WAIT_S)
                    if msg.headers and msg.headers.get("Status"):
                        break  # 404 no messages / 408: that was all
                    if (item := _item(dst, msg)) is not None:
                        got.append(item)
            finally:
                await sub.unsubscribe()
                await nc.publish(f"$JS.API.CONSUMER.DELETE.{stream}.{name}", b"")
            return got

        return await self.bus.call(load)

    async def delete(self, dst: str, qids: Sequence[int], below: int = 0) -> list[int]:
        """Delete what ``dst`` acknowledged: every message on its subject below
        ``below`` in one purge (the machine says nothing older is still in flight),
        the rest by sequence. Returns the qids not deleted yet (no answer in time, or
        the stream could not: electing a leader, say); one already gone is deleted."""
        stream, subject = self.stream, f"{SUBJECT}{dst}"
        wait = max(0.2, self.bus.call_timeout_s - 0.5)  # all answers within the call
        one_by_one = [q for q in qids if q >= below]

        async def delete(js: Any) -> list[int]:
            import asyncio

            import nats.errors

            nc = js._nc  # noqa: SLF001 - the API spoken by hand: no_erase, many at once
            left: list[int] = []
            if below > 0:
                try:
                    reply = await nc.request(
                        f"$JS.API.STREAM.PURGE.{stream}",
                        json.dumps({"filter": subject, "seq": below}).encode(), timeout=wait)
                    purged = bool(json.loads(reply.data).get("success"))
                except (TimeoutError, nats.errors.Error, ValueError):
                    purged = False
                left = [] if purged else [q for q in qids if q < below]
            answers = await asyncio.gather(*(
                nc.request(f"$JS.API.STREAM.MSG.DELETE.{stream}",
                           json.dumps({"seq": q, "no_erase": True}).encode(), timeout=wait)
                for q in one_by_one), return_exceptions=True)
            return left + [q for q, a in zip(one_by_one, answers, strict=True)
                           if not _deleted(a)]

        return await self.bus.call(delete)

    async def counts(self) -> dict[str, tuple[int, int]]:
        """Envelopes (and, estimated, bytes) waiting per destination."""
        stream = self.stream

        async def counts(js: Any) -> dict[str, tuple[int, int]]:
            info = await js.stream_info(stream, subjects_filter=f"{SUBJECT}*")
            total, size = int(info.state.messages or 0), int(info.state.bytes or 0)
            each = size // total if total else 0
            return {s[len(SUBJECT):]: (int(n), int(n) * each)
                    for s, n in (info.state.subjects or {}).items()}

        return await self.bus.call(counts)


def _body(item: StoreQueued) -> bytes:
    """``<src> <size>`` on a line, then the envelope's JSON (headers cost more)."""
    head = f"{item.src} {item.size}\n".encode()
    return head + json.dumps(item.envelope, separators=(",", ":"), ensure_ascii=False).encode()


def _answer(reply: Any) -> StoreResult:
    """JetStream's answer to one publish: the ack, or why not."""
    if reply.headers and reply.headers.get("Status") == "503":  # no stream responders
        return StoreResult(False, "unavailable")
    resp = json.loads(reply.data)
    err = resp.get("error")
    if err is not None:
        text = str(err.get("description", "")).lower()
        full = all(w in text for w in _FULL_WORDS) or "resources" in text
        return StoreResult(False, "queue_full" if full else "unavailable")
    return StoreResult(True, duplicate=bool(resp.get("duplicate")), seq=int(resp["seq"]))


def _deleted(answer: Any) -> bool:
    if isinstance(answer, BaseException):
        return False
    try:
        resp = json.loads(answer.data)
    except ValueError:
        return False
    err = resp.get("error")
    # 10057: no such message (deleted already, or expired): what we wanted.
    return bool(resp.get("success")) or (err is not None and err.get("err_code") == 10057)


def _item(dst: str, msg: Any) -> QueuedEnvelope | None:
    try:
        seq = int(msg.metadata.sequence.stream)
        head, _, body = bytes(msg.data).partition(b"\n")
        src, size = head.decode().split(" ")
        envelope = json.loads(body)
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        return None  # never written by a relay: skip rather than stall the mailbox
    if not isinstance(envelope, dict):
        return None
    return QueuedEnvelope(seq, dst, src, envelope, int(size))


__all__ = ["NOTE", "STREAM", "SUBJECT", "ClusterMailbox", "StoreResult"]
