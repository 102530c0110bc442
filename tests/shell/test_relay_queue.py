"""The relay's SQLite queue on its own: order, acks, expiry around in-flight envelopes,
a reopen that finds what was committed, batches, and a damaged file refused in the
relay's own words."""

from __future__ import annotations

from pathlib import Path

import pytest

from hd_protocol.brokers.relay import StoreQueued
from hd_relay import QueueStore
from hd_shell.datadir import DataError

A, B = "a" * 16, "b" * 16


def item(dst: str, n: int, expires: int, size: int = 10) -> StoreQueued:
    return StoreQueued(dst, A, f"{n:032x}", {"msg_id": f"{n:032x}"}, size, expires)


def test_load_is_in_arrival_order_per_destination(tmp_path: Path) -> None:
    q = QueueStore(tmp_path / "q.db")
    for n in range(5):
        q.put(item(B if n % 2 else A, n, 1000))
    assert [e.envelope["msg_id"] for e in q.load(B, 10)] == [f"{n:032x}" for n in (1, 3)]
    assert q.counts() == {A: (3, 30), B: (2, 20)}
    q.close()


def test_purge_skips_what_is_in_flight_and_reports_what_went(tmp_path: Path) -> None:
    q = QueueStore(tmp_path / "q.db")
    for n in range(4):
        q.put(item(B, n, expires=100 if n < 3 else 10_000, size=10 + n))
    loaded = q.load(B, 2)  # delivered, not yet acked
    gone = q.purge_expired(500, keep={e.qid for e in loaded})
    assert gone == {B: (1, 12)}  # only the third: expired and never delivered
    assert [e.envelope["msg_id"] for e in q.load(B, 10)] == [
        f"{n:032x}" for n in (0, 1, 3)]
    q.delete(B, [e.qid for e in loaded])  # the ack removes the in-flight ones
    assert q.counts() == {B: (1, 13)}
    assert q.purge_expired(500) == {}
    q.close()


def test_a_reopened_queue_has_what_was_committed(tmp_path: Path) -> None:
    q = QueueStore(tmp_path / "q.db")
    q.put(item(B, 1, 1000))
    with q.batch():
        q.put(item(B, 2, 1000))
    q.close()
    q2 = QueueStore(tmp_path / "q.db")
    assert [e.envelope["msg_id"] for e in q2.load(B, 10)] == [f"{n:032x}" for n in (1, 2)]
    q2.close()


def test_a_damaged_queue_is_refused_in_the_relays_words_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    path.write_bytes(b"not a database, not even close" * 200)
    before = path.read_bytes()
    with pytest.raises(DataError) as refused:
        QueueStore(path)
    msg = str(refused.value)
    assert str(path) in msg and "queued for offline nodes are lost" in msg, msg
    assert "peers" not in msg and "chats" not in msg and "node" not in msg.split("(")[0]
    assert path.read_bytes() == before


def test_a_batch_that_raises_commits_nothing_and_the_queue_goes_on(tmp_path: Path) -> None:
    q = QueueStore(tmp_path / "q.db")
    with pytest.raises(RuntimeError), q.batch():
        q.put(item(B, 1, 1000))
        raise RuntimeError("the reader failed")
    assert q.counts() == {}
    with q.batch(), q.batch():  # nested: one commit at the outer end
        q.put(item(B, 2, 1000))
    q.close()
    q2 = QueueStore(tmp_path / "q.db")
    assert [e.envelope["msg_id"] for e in q2.load(B, 10)] == [f"{2:032x}"]
    q2.close()
