"""The node's one SQLite database (WAL): peers, invites, panes, chats, agent tasks, own
settings.

Only this class opens the database. Each logical write is one transaction. Invite
tokens are never stored, only their SHA-256; lookups go by hash and the final
comparison is constant-time inside hd_protocol.peer.admission.

The file is created or checked first (``dbfile``: mode 0600, ``integrity_check``, a
damaged file refused and kept as is). WAL with ``synchronous=NORMAL`` (a commit survives
a crash of the process), and ``synchronous=FULL`` for the batches that hold what we answer
a peer about (``batch(durable=True)``: a chat message is on disk, across an OS crash,
before its ack leaves); many writes share one commit, which keeps the fsyncs few.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hd_protocol import InviteRecord, PeerRecord
from hd_protocol.apps.chat import ChatMessage
from hd_protocol.apps.collab import Pane
from hd_protocol.peer.addressbook import Book, dial_order, from_json, to_json
from hd_shell.sqlitefile import Transactions, connect, open_checked, read_only

from .dbfile import EMPTY_IS_DAMAGE, LOST

log = logging.getLogger("hd_node.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    node_id      TEXT PRIMARY KEY,
    public_key   TEXT NOT NULL,
    node_name    TEXT NOT NULL DEFAULT '',
    trusted      INTEGER NOT NULL DEFAULT 0,
    blocked      INTEGER NOT NULL DEFAULT 0,
    addrs        TEXT NOT NULL DEFAULT '[]',
    capabilities TEXT NOT NULL DEFAULT '[]',
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS panes (
    pane_key     TEXT PRIMARY KEY,
    text         TEXT NOT NULL,
    rev          INTEGER NOT NULL,
    author       TEXT NOT NULL,
    sharers      TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS chat_messages (
    peer_id      TEXT NOT NULL,
    id           TEXT NOT NULL,
    direction    TEXT NOT NULL,
    text         TEXT NOT NULL,
    ts           INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    status       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    from_name    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (peer_id, id)
);
CREATE INDEX IF NOT EXISTS chat_by_seq ON chat_messages (peer_id, seq);
CREATE TABLE IF NOT EXISTS chat_read (
    peer_id      TEXT PRIMARY KEY,
    seq          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS node_settings (
    key          TEXT PRIMARY KEY,
    value        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_tasks (
    id           TEXT PRIMARY KEY,
    created      INTEGER NOT NULL,
    meta         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_task_events (
    task_id      TEXT NOT NULL REFERENCES agent_tasks (id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    event        TEXT NOT NULL,
    data         TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);
CREATE TABLE IF NOT EXISTS invites (
    token_hash   TEXT PRIMARY KEY,
    created_at   INTEGER NOT NULL,
    exp          INTEGER NOT NULL,
    redeemed_by  TEXT,
    revoked      INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class StoredPeer:
    node_id: str
    public_key: str
    node_name: str
    trusted: bool
    blocked: bool
    book: Book  # where it can be reached (hd_protocol.peer.addressbook)
    capabilities: list[str]
    first_seen: int
    last_seen: int

    @property
    def addrs(self) -> list[str]:
        """Its addresses in the order to dial them."""
        return dial_order(self.book)

    def record(self) -> PeerRecord:
        return PeerRecord(self.node_id, self.public_key, self.trusted, self.blocked)


@dataclass(frozen=True)
class StoredInvite:
    token_hash: str
    created_at: int
    exp: int
    redeemed_by: str | None
    revoked: bool

    @property
    def token_id(self) -> str:
        """A public handle for list/revoke: a prefix of the hash (never the token)."""
        return self.token_hash[:16]

    def record(self) -> InviteRecord:
        return InviteRecord(self.token_hash, self.exp, self.redeemed_by, self.revoked)


class NodeStore:
    def __init__(self, path: Path, *, empty_is_damage: bool = False) -> None:
        """Open ``path``, creating it if missing. ``empty_is_damage``: a 0-byte file is
        a truncated database (the node passes it when an identity exists)."""
        self.path = path
        self.check_ms = open_checked(path, SCHEMA, lost=LOST,  # None: new
                                     empty_is_damage=EMPTY_IS_DAMAGE if empty_is_damage else None)
        self._db = connect(path, SCHEMA, LOST, ("foreign_keys=ON",))
        self._tx_kit = Transactions(self._db, full=False)
        self._tx = self._tx_kit.tx

    def close(self) -> None:
        self._db.close()

    # --- transactions -------------------------------------------------------------------

    @contextmanager
    def batch(self, *, durable: bool = False) -> Iterator[None]:
        """Several logical writes in one transaction (committed when the outermost
        batch ends). The node wraps synchronous stretches of work in it — every frame of
        one read from a link — so a burst of chat messages costs one commit, not one
        each. A batch must never span an ``await``: frames queued inside it reach the
        wire only after the commit, which is what keeps "stored before sent" (SPEC 6.2).

        ``durable``: the commit is on disk (``synchronous=FULL``, an fsync) before the
        batch ends, across an OS crash — for what we answer a peer about, such as the
        chat message we are about to ack. Other commits survive a crash of the process,
        not of the machine (WAL with ``synchronous=NORMAL``), and cost no fsync."""
        with self._tx_kit.batch(durable=durable):
            yield

    # --- peers ------------------------------------------------------------------------

    def _peer(self, row: tuple[Any, ...] | None) -> StoredPeer | None:
        if row is None:
            return None
        return StoredPeer(
            node_id=row[0], public_key=row[1], node_name=row[2], trusted=bool(row[3]),
            blocked=bool(row[4]), book=from_json(json.loads(row[5])),
            capabilities=json.loads(row[6]),
            first_seen=row[7], last_seen=row[8],
        )

    _PEER_COLS = (
        "node_id, public_key, node_name, trusted, blocked, addrs, capabilities, "
        "first_seen, last_seen"
    )

    def get_peer(self, node_id: str) -> StoredPeer | None:
        cur = self._db.execute(
            f"SELECT {self._PEER_COLS} FROM peers WHERE node_id = ?", (node_id,)  # noqa: S608
        )
        return self._peer(cur.fetchone())

    def list_peers(self) -> list[StoredPeer]:
        cur = self._db.execute(f"SELECT {self._PEER_COLS} FROM peers ORDER BY node_id")  # noqa: S608
        return [p for p in map(self._peer, cur.fetchall()) if p is not None]

    def pin_peer(
        self,
        node_id: str,
        public_key: str,
        *,
        now: int,
        node_name: str = "",
        trusted: bool | None = None,
        capabilities: list[str] | None = None,
    ) -> StoredPeer:
        """Record a peer seen in an authenticated session. The first key seen is pinned:
        this never changes a stored key (admission rejects a mismatch before this)."""
        with self._tx():
            existing = self.get_peer(node_id)
            if existing is None:
                self._db.execute(
                    "INSERT INTO peers (node_id, public_key, node_name, trusted, capabilities,"
                    " first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (node_id, public_key, node_name, int(bool(trusted)),
                     json.dumps(capabilities or []), now, now),
                )
            else:
                if existing.public_key != public_key:
                    raise ValueError("refusing to re-pin a peer to another key")
                self._db.execute(
                    "UPDATE peers SET node_name = ?, last_seen = ?, capabilities = ?,"
                    " trusted = CASE WHEN ? IS NULL THEN trusted ELSE ? END WHERE node_id = ?",
                    (node_name or existing.node_name, now,
                     json.dumps(capabilities if capabilities is not None
                                else existing.capabilities),
                     trusted, int(bool(trusted)), node_id),
                )
        peer = self.get_peer(node_id)
        assert peer is not None
        return peer

    def set_trust(self, node_id: str, *, trusted: bool, blocked: bool | None = None) -> bool:
        with self._tx():
            cur = self._db.execute(
                "UPDATE peers SET trusted = ?, blocked = COALESCE(?, blocked) WHERE node_id = ?",
                (int(trusted), None if blocked is None else int(blocked), node_id),
            )
        return cur.rowcount > 0

    def delete_peer(self, node_id: str) -> bool:
        """Forget a peer: its pinned key, addresses and trust (its chats stay)."""
        with self._tx():
            cur = self._db.execute("DELETE FROM peers WHERE node_id = ?", (node_id,))
        return cur.rowcount > 0

    def set_book(self, node_id: str, book: Book) -> None:
        """Store a peer's address book (older nodes stored a plain list of URLs, which
        ``from_json`` still reads)."""
        with self._tx():
            self._db.execute(
                "UPDATE peers SET addrs = ? WHERE node_id = ?", (json.dumps(to_json(book)), node_id)
            )

    def touch(self, node_id: str, now: int) -> None:
        with self._tx():
            self._db.execute("UPDATE peers SET last_seen = ? WHERE node_id = ?", (now, node_id))

    # --- our own settings (what a person changed from a tab, e.g. the node's name) ------

    def get_setting(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM node_settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with self._tx():
            self._db.execute("INSERT INTO node_settings (key, value) VALUES (?, ?) ON CONFLICT"
                             "(key) DO UPDATE SET value = excluded.value", (key, value))

    # --- invites ----------------------------------------------------------------------

    def _invite(self, row: tuple[Any, ...] | None) -> StoredInvite | None:
        if row is None:
            return None
        return StoredInvite(row[0], row[1], row[2], row[3], bool(row[4]))

    def add_invite(self, token_hash: str, *, created_at: int, exp: int) -> StoredInvite:
        with self._tx():
            self._db.execute(
                "INSERT INTO invites (token_hash, created_at, exp) VALUES (?, ?, ?)",
                (token_hash, created_at, exp),
            )
        inv = self.get_invite(token_hash)
        assert inv is not None
        return inv

    def get_invite(self, token_hash: str) -> StoredInvite | None:
        cur = self._db.execute(
            "SELECT token_hash, created_at, exp, redeemed_by, revoked FROM invites"
            " WHERE token_hash = ?", (token_hash,),
        )
        return self._invite(cur.fetchone())

    def list_invites(self) -> list[StoredInvite]:
        cur = self._db.execute(
            "SELECT token_hash, created_at, exp, redeemed_by, revoked FROM invites"
            " ORDER BY created_at"
        )
        return [i for i in map(self._invite, cur.fetchall()) if i is not None]

    def revoke_invite(self, token_id: str) -> bool:
        if not token_id or len(token_id) < 8:
            return False
        with self._tx():
            cur = self._db.execute(
                "UPDATE invites SET revoked = 1 WHERE substr(token_hash, 1, ?) = ?",
                (len(token_id), token_id),
            )
        return cur.rowcount == 1

    def redeem_invite(self, token_hash: str, node_id: str) -> bool:
        """Mark the invite as owned by ``node_id``; False if another node owns it."""
        with self._tx():
            cur = self._db.execute(
                "UPDATE invites SET redeemed_by = ? WHERE token_hash = ?"
                " AND (redeemed_by IS NULL OR redeemed_by = ?)",
                (node_id, token_hash, node_id),
            )
        return cur.rowcount == 1

    # --- panes (SPEC 6.1) ---------------------------------------------------------------

    def save_pane(self, pane: Pane) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO panes (pane_key, text, rev, author, sharers) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(pane_key) DO UPDATE SET text = excluded.text, rev = excluded.rev,"
                " author = excluded.author, sharers = excluded.sharers",
                (pane.key, pane.text, pane.rev, pane.author, json.dumps(sorted(pane.sharers))),
            )

    def load_panes(self) -> list[Pane]:
        cur = self._db.execute("SELECT pane_key, text, rev, author, sharers FROM panes")
        return [Pane(key=r[0], text=r[1], rev=r[2], author=r[3],
                     sharers=frozenset(json.loads(r[4]))) for r in cur.fetchall()]

    # --- chat (SPEC 6.2) ----------------------------------------------------------------

    def insert_message(self, m: ChatMessage) -> bool:
        """Insert-or-ignore by (peer, id): a replay never overwrites (SPEC 6.2)."""
        with self._tx():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO chat_messages (peer_id, id, direction, text, ts,"
                " received_at, status, seq, from_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (m.peer_id, m.id, m.direction, m.text, m.ts, m.received_at, m.status, m.seq,
                 m.from_name),
            )
        return cur.rowcount == 1

    def set_message_status(self, peer_id: str, msg_id: str, status: str) -> None:
        with self._tx():
            self._db.execute(
                "UPDATE chat_messages SET status = ? WHERE peer_id = ? AND id = ?",
                (status, peer_id, msg_id),
            )

    def set_read_mark(self, peer_id: str, seq: int) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO chat_read (peer_id, seq) VALUES (?, ?) ON CONFLICT(peer_id)"
                " DO UPDATE SET seq = MAX(seq, excluded.seq)", (peer_id, seq),
            )

    def load_messages(self) -> list[ChatMessage]:
        cur = self._db.execute(
            "SELECT peer_id, id, direction, text, ts, received_at, status, seq, from_name"
            " FROM chat_messages ORDER BY seq"
        )
        return [ChatMessage(peer_id=r[0], id=r[1], direction=r[2], text=r[3], ts=r[4],
                            received_at=r[5], status=r[6], seq=r[7], from_name=r[8])
                for r in cur.fetchall()]

    def load_read_marks(self) -> dict[str, int]:
        cur = self._db.execute("SELECT peer_id, seq FROM chat_read")
        return {r[0]: r[1] for r in cur.fetchall()}

    # --- agent tasks (hd_protocol.apps.agent_tasks) -------------------------------------

    def save_task(self, task_id: str, created: int, meta: dict[str, Any],
                  events: Iterable[tuple[int, str, Mapping[str, Any]]]) -> None:
        """The task's row (``meta``: its summary fields) and new events to append."""
        with self._tx():
            self._db.execute(
                "INSERT INTO agent_tasks (id, created, meta) VALUES (?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET meta = excluded.meta",
                (task_id, created, json.dumps(meta)))
            self._db.executemany(
                "INSERT OR IGNORE INTO agent_task_events (task_id, seq, event, data)"
                " VALUES (?, ?, ?, ?)",
                [(task_id, seq, event, json.dumps(dict(data))) for seq, event, data in events])

    def drop_tasks(self, task_ids: Sequence[str]) -> None:
        with self._tx():
            self._db.executemany("DELETE FROM agent_tasks WHERE id = ?",
                                 [(t,) for t in task_ids])

    def load_tasks(self) -> list[tuple[str, dict[str, Any], list[tuple[str, Any]]]]:
        """Every task, oldest first: (id, meta, [(event, data)] in sequence order)."""
        events: dict[str, list[tuple[str, Any]]] = {}
        for task_id, event, data in self._db.execute(
                "SELECT task_id, event, data FROM agent_task_events ORDER BY task_id, seq"):
            events.setdefault(task_id, []).append((event, json.loads(data)))
        rows = self._db.execute("SELECT id, meta FROM agent_tasks ORDER BY created, rowid")
        return [(r[0], json.loads(r[1]), events.get(r[0], [])) for r in rows.fetchall()]


def stored_setting(path: Path, key: str) -> str | None:
    """One of our settings, read-only without opening the store (``hd-node id``, while
    the node may run); None without a database, the row, or a readable file."""
    try:
        with read_only(path) as db:
            row = db.execute("SELECT value FROM node_settings WHERE key = ?", (key,)).fetchone()
    except (OSError, sqlite3.Error):
        return None
    return None if row is None else str(row[0])
