"""What a node answers a peer about is on disk first; the rest skips the fsync."""

from __future__ import annotations

from pathlib import Path

from hd_node.hub.sessions import SessionRegistry
from hd_node.hub.trust import Trust
from hd_node.metrics import NodeMetrics
from hd_node.store import NodeStore
from hd_protocol import Identity, Policy
from hd_protocol.limits import DEFAULT_LIMITS

NODE = "a" * 16


def _sync(store: NodeStore) -> int:
    return int(store._db.execute("PRAGMA synchronous").fetchone()[0])


def test_a_durable_batch_commits_with_fsync_and_others_do_not(tmp_path: Path) -> None:
    store = NodeStore(tmp_path / "node.db")
    try:
        with store.batch(durable=True):
            store.pin_peer(NODE, "k" * 44, now=1)
            assert _sync(store) == 2  # FULL for this commit
        assert _sync(store) == 1  # back to NORMAL
        with store.batch():
            store.touch(NODE, 2)
            assert _sync(store) == 1
        with store.batch(), store.batch(durable=True):  # any durable part makes it durable
            store.touch(NODE, 3)
            assert _sync(store) == 2
        assert store.get_peer(NODE) is not None and store.get_peer(NODE).last_seen == 3
    finally:
        store.close()


def test_what_a_link_reader_processes_is_committed_durably(tmp_path: Path) -> None:
    # The link drivers' batches (inbound envelopes; acks are among their answers).
    store = NodeStore(tmp_path / "node.db")
    ident = Identity.from_seed(b"\x07" * 32)
    registry = SessionRegistry(ident, DEFAULT_LIMITS, store, NodeMetrics(),
                               Trust(ident, store, Policy()))
    try:
        with registry.batch():
            store.pin_peer(NODE, "k" * 44, now=1)
            assert _sync(store) == 2
    finally:
        store.close()
