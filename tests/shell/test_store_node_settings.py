"""The store's own settings (the node's name, set from a tab or at start) and forgetting
a peer: kept across reopening, readable without opening the store, chats untouched."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from hd_node.config import Settings
from hd_node.hub.peerhub import node_name_for
from hd_node.store import NodeStore, stored_setting
from hd_protocol import Identity
from hd_protocol.apps.chat import ChatMessage

PEER = "p" * 16


def test_a_setting_survives_reopening_and_is_read_without_the_store(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    store = NodeStore(db)
    try:
        assert store.get_setting("node_name") is None
        store.set_setting("node_name", "alice")
        store.set_setting("node_name", "Alice's laptop ☕")
        assert stored_setting(db, "node_name") == "Alice's laptop ☕"  # while it is open
    finally:
        store.close()
    again = NodeStore(db)
    try:
        assert again.get_setting("node_name") == "Alice's laptop ☕"
    finally:
        again.close()
    assert stored_setting(db, "node_name") == "Alice's laptop ☕"
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_reading_a_setting_without_a_database_or_a_table_is_none(tmp_path: Path) -> None:
    assert stored_setting(tmp_path / "missing.db", "node_name") is None
    assert not (tmp_path / "missing.db").exists()  # the look created nothing
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:  # a database from before the settings table
        db.execute("CREATE TABLE peers (node_id TEXT)")
    db.close()
    assert stored_setting(old, "node_name") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]


def test_forgetting_a_peer_drops_its_record_and_keeps_its_chats(tmp_path: Path) -> None:
    store = NodeStore(tmp_path / "node.db")
    try:
        store.pin_peer(PEER, "k" * 44, now=1, node_name="pat", trusted=True)
        store.insert_message(ChatMessage(PEER, "ab" * 16, "in", "hi", ts=1, received_at=2,
                                         status="delivered", seq=1, from_name="pat"))
        assert store.delete_peer(PEER) is True
        assert store.get_peer(PEER) is None and store.list_peers() == []
        assert store.delete_peer(PEER) is False
        assert [m.text for m in store.load_messages()] == ["hi"]
        # Pinning it again (a new pairing) starts a fresh record.
        again = store.pin_peer(PEER, "j" * 44, now=5)
        assert (again.public_key, again.trusted) == ("j" * 44, False)
    finally:
        store.close()


def test_the_name_given_last_is_the_one_the_node_goes_by(tmp_path: Path) -> None:
    ident = Identity.generate()
    store = NodeStore(tmp_path / "node.db")
    try:
        unnamed = Settings(data_dir=tmp_path)
        assert node_name_for(unnamed, store, ident) == f"node-{ident.node_id[:6]}"
        assert store.get_setting("node_name") is None  # a default is not stored
        named = Settings(data_dir=tmp_path, node_name="alice")
        assert node_name_for(named, store, ident) == "alice"
        assert node_name_for(unnamed, store, ident) == "alice"  # kept for starts without
        store.set_setting("node_name", "renamed in a tab")
        assert node_name_for(unnamed, store, ident) == "renamed in a tab"
        assert node_name_for(named, store, ident) == "alice"  # given at start: it wins
        assert store.get_setting("node_name") == "alice"
    finally:
        store.close()
