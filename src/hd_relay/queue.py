"""The relay's store-and-forward queue (SPEC 7.7): SQLite in WAL mode, in the data dir.

An envelope is written — and the commit is on disk, ``synchronous=FULL`` — before the
sender hears ``relay_ack queued``: a relay killed and restarted loses nothing it
acknowledged. Writes made while processing one read from a connection share one
commit (``batch``). Envelopes are kept as their JSON text, in arrival order (``qid``),
until the destination acks them or they expire.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path

from hd_protocol.brokers.relay import QueuedEnvelope, StoreQueued
from hd_shell.sqlitefile import Transactions, connect, open_checked

SCHEMA = """
CREATE TABLE IF NOT EXISTS queued (
    qid       INTEGER PRIMARY KEY AUTOINCREMENT,
    dst       TEXT NOT NULL,
    src       TEXT NOT NULL,
    msg_id    TEXT NOT NULL,
    envelope  TEXT NOT NULL,
    size      INTEGER NOT NULL,
    expires   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queued_by_dst ON queued (dst, qid);
"""


# What starting with an empty mailbox costs (the end of a "damaged" error line).
LOST = "the envelopes queued for offline nodes are lost"


class QueueStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        open_checked(path, SCHEMA, lost=LOST)
        self._db = connect(path, SCHEMA, LOST, ())
        tx = Transactions(self._db, full=True)
        # Writes inside one batch share one commit, made when the outermost batch ends
        # (before anything queued meanwhile reaches the wire: no await happens inside).
        self.batch = tx.batch
        self._tx = tx.tx

    def close(self) -> None:
        self._db.close()

    def put(self, item: StoreQueued) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO queued (dst, src, msg_id, envelope, size, expires)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (item.dst, item.src, item.msg_id, json.dumps(item.envelope), item.size,
                 item.expires))

    def load(self, dst: str, limit: int) -> list[QueuedEnvelope]:
        rows = self._db.execute(
            "SELECT qid, dst, src, envelope, size FROM queued WHERE dst = ? ORDER BY qid"
            " LIMIT ?", (dst, limit)).fetchall()
        out = []
        for qid, d, src, text, size in rows:
            try:
                env = json.loads(text)
            except ValueError:
                continue  # never written by us; skip rather than stall the queue
            out.append(QueuedEnvelope(qid, d, src, env, size))
        return out

    def delete(self, dst: str, qids: Sequence[int]) -> None:
        with self._tx():
            self._db.executemany("DELETE FROM queued WHERE dst = ? AND qid = ?",
                                 [(dst, q) for q in qids])

    def counts(self) -> dict[str, tuple[int, int]]:
        """Envelopes and bytes waiting, per destination (what the machine starts from)."""
        rows = self._db.execute(
            "SELECT dst, COUNT(*), SUM(size) FROM queued GROUP BY dst").fetchall()
        return {d: (int(n), int(b or 0)) for d, n, b in rows}

    def purge_expired(self, wall: int, keep: Collection[int] = ()) -> dict[str, tuple[int, int]]:
        """Drop envelopes past their 24 h, except the qids in ``keep`` (delivered and
        not yet acknowledged: their ack removes them); returns what went, per
        destination."""
        gone: dict[str, tuple[int, int]] = {}
        with self._tx():
            rows = self._db.execute(
                "SELECT qid, dst, size FROM queued WHERE expires <= ?", (wall,)).fetchall()
            rows = [r for r in rows if r[0] not in keep]
            self._db.executemany("DELETE FROM queued WHERE qid = ?", [(r[0],) for r in rows])
        for _, dst, size in rows:
            n, b = gone.get(dst, (0, 0))
            gone[dst] = (n + 1, b + int(size))
        return gone
