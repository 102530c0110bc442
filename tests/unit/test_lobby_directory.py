"""The lobby's directory past ``Limits.presence_push_max`` (SPEC 7.2), without sockets:
below the limit nothing changes; above it presence goes only to room peers,
``registered`` carries a first page, and ``list_nodes`` pages every node once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol import Identity
from hd_protocol.brokers.directory import (
    NODES_PAGE,
    Directory,
    Schedule,
    encode_entry,
    presence_frame,
)
from hd_protocol.brokers.frames import encode_frame
from hd_protocol.brokers.lobby import PRESENCE_BATCH_MS, LobbyServer
from hd_protocol.brokers.lobby_client import LobbyClient, NodesPage, Registered
from hd_protocol.brokers.relay import CloseConn, ToConn
from hd_protocol.effects import Send
from hd_protocol.limits import Limits

T0 = 1_000
WALL = 1_764_000_000_000
IDS = [Identity.from_seed(hashlib.sha256(f"dir-test/{i}".encode()).digest())
       for i in range(12)]
LOBBY = Identity.from_seed(hashlib.sha256(b"dir-test/lobby").digest())


def rng_for(seed: str) -> Callable[[int], bytes]:
    counter = iter(range(1 << 62))

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()
        return out[:n]

    return rng


class Lobby:
    """A ``LobbyServer`` and what each connection got, as decoded frames."""

    def __init__(self, push_max: int, seed: str = "s") -> None:
        self.server = LobbyServer(LOBBY, rng=rng_for(seed),
                                  limits=Limits(presence_push_max=push_max))
        self.got: dict[int, list[dict[str, Any]]] = {}
        self.log: list[tuple[int, str]] = []  # every output, in order, as the wire has it
        self.now = T0

    def run(self, outs: list[Any]) -> list[Any]:
        for o in outs:
            if isinstance(o, ToConn):
                self.got.setdefault(o.conn, []).append(json.loads(o.frame))
                self.log.append((o.conn, o.frame))
            elif isinstance(o, CloseConn):
                self.log.append((o.conn, f"close {o.code}"))
        return outs

    def register(self, conn: int, who: Identity) -> dict[str, Any]:
        client = LobbyClient(who, node_name=f"n{conn}", addresses=[], capabilities=[])
        (chal,) = self.server.connect(conn, self.now)
        assert isinstance(chal, ToConn)
        (reg,) = client.receive(chal.frame, self.now)
        assert isinstance(reg, Send)
        start = len(self.got.get(conn, []))
        self.run(self.server.receive(conn, reg.wire, self.now, WALL))
        (answer,) = [f for f in self.got[conn][start:] if f["type"] == "registered"]
        return answer

    def send(self, conn: int, type_: str, **body: Any) -> list[dict[str, Any]]:
        start = len(self.got.get(conn, []))
        self.run(self.server.receive(conn, encode_frame(type_, body), self.now, WALL))
        return self.got.get(conn, [])[start:]

    def leave(self, conn: int) -> None:
        self.run(self.server.disconnect(conn, self.now))

    def tick(self) -> list[Any]:
        """Past every batch window: everything queued goes out now."""
        self.now += PRESENCE_BATCH_MS + 1
        return self.run(self.server.on_timer(self.now, WALL))

    def presence_to(self, conn: int) -> list[str]:
        return [f["node"]["node_id"] for f in self.got.get(conn, []) if f["type"] == "presence"]


# --- the directory and its schedule, alone --------------------------------------------------


def entry(i: int, status: str = "online") -> dict[str, Any]:
    return {"node_id": IDS[i].node_id, "public_key": IDS[i].public_key, "node_name": f"n{i}",
            "capabilities": [], "status": status, "listed": False}


def test_a_presence_frame_built_from_the_encoded_entry_is_the_frame_encode_frame_writes(
) -> None:
    e = {**entry(0), "node_name": "zoë \u202e \"quoted\"", "capabilities": ["chat"]}
    assert presence_frame(encode_entry(e)) == encode_frame("presence", {"node": e})


def test_an_offline_entry_leaves_the_directory_and_pages_follow_node_id_order() -> None:
    d = Directory()
    for i in range(5):
        d.put(entry(i))
    d.put(entry(2, "offline"))
    page, cursor = d.page(None, 10)
    assert [json.loads(w) for w in page] == [d.entries[json.loads(w)["node_id"]] for w in page]
    assert [json.loads(w)["node_id"] for w in page] == sorted(IDS[i].node_id for i in (0, 1, 3, 4))
    assert cursor is None and len(d) == 4 and IDS[2].node_id not in d


def test_the_schedule_moves_a_deadline_that_moved_later_and_drops_one_that_went() -> None:
    deadlines: dict[int, int | None] = {1: 10, 2: 20}
    s = Schedule(lambda k: deadlines.get(k))
    s.add(1, 10)
    s.add(2, 20)
    deadlines[1] = 30  # its connection spoke: expires later
    assert s.earliest() == 20
    deadlines[2] = None  # gone
    assert s.earliest() == 30 and s.due(29) == [] and s.due(30) == [1]


@settings(max_examples=60, deadline=None)
@given(present=st.sets(st.integers(0, 11), min_size=1), limit=st.integers(1, 5),
       churn=st.lists(st.tuples(st.integers(0, 11), st.booleans()), max_size=12))
def test_paging_visits_every_node_that_stays_exactly_once_whatever_changes_meanwhile(
    present: set[int], limit: int, churn: list[tuple[int, bool]],
) -> None:
    d = Directory()
    for i in present:
        d.put(entry(i))
    stays = {IDS[i].node_id for i in present} - {IDS[i].node_id for i, _ in churn}
    seen: list[str] = []
    cursor: str | None = None
    changes = iter(churn)
    while True:
        page, cursor = d.page(cursor, limit)
        assert len(page) <= limit
        seen += [json.loads(w)["node_id"] for w in page]
        i, online = next(changes, (None, False))  # a node comes or goes between pages
        if i is not None:
            d.put(entry(i, "online" if online else "offline"))
        if cursor is None:
            break
    assert len(seen) == len(set(seen))  # nothing twice
    assert stays <= set(seen)  # every node there all along, once


# --- the lobby below and above the limit -----------------------------------------------------

# One step of a run: (op, node, other node). Ops: register, leave, room (host a room),
# join (the node joins the other's first room), status (a presence change).
Step = tuple[str, int, int]
steps = st.builds(  # a few nodes registered first (a crowd past the limit), then anything
    lambda first, rest: [("register", i, 0) for i in range(first)] + rest,
    st.integers(0, 8),
    st.lists(st.tuples(st.sampled_from(["register", "leave", "room", "join", "status"]),
                       st.integers(0, 7), st.integers(0, 7)), max_size=30))


Check = Callable[[Lobby, int, dict[str, Any], int], None]


def play(lobby: Lobby, run: list[Step], check: Check | None = None) -> None:
    """Each step, then a tick past the batch window; ``check(lobby, conn, frame,
    size)`` sees every presence frame the step caused, with the directory's size before
    the step."""
    online: set[int] = set()
    rooms: dict[int, str] = {}
    for op, a, b in run:
        before = len(lobby.server.dir)
        marks = {c: len(fs) for c, fs in lobby.got.items()}
        if check is not None:
            check(lobby, 0, {}, before)  # before the step: the rooms as they are
        if op == "register" and a not in online:
            lobby.register(a + 1, IDS[a])
            online.add(a)
        elif op == "leave" and a in online:
            lobby.leave(a + 1)
            online.discard(a)
            rooms.pop(a, None)
        elif op == "room" and a in online and a not in rooms:
            (made,) = lobby.send(a + 1, "create_room", name="r", visibility="public",
                                 joinPolicy="open")
            rooms[a] = made["room"]["id"]
        elif op == "join" and a in online and b in rooms and a != b:
            lobby.send(a + 1, "join_room", roomId=rooms[b])
        elif op == "status" and a in online:
            lobby.send(a + 1, "presence", status=f"s{len(lobby.log)}", capabilities=[])
        lobby.tick()
        if check is not None:
            for conn, fs in lobby.got.items():
                for f in fs[marks.get(conn, 0):]:
                    if f["type"] == "presence":
                        check(lobby, conn, f, before)


@settings(max_examples=80, deadline=None)
@given(run=steps)
def test_below_the_limit_every_frame_is_what_an_unbounded_lobby_sends(run: list[Step]) -> None:
    bounded, unbounded = Lobby(push_max=8), Lobby(push_max=10**9)  # 8 nodes at most
    play(bounded, run)
    play(unbounded, run)
    assert bounded.log == unbounded.log


@settings(max_examples=80, deadline=None)
@given(run=steps)
def test_above_the_limit_no_node_gets_presence_of_a_node_it_shares_no_room_with(
    run: list[Step],
) -> None:
    limit = 2
    shared: set[frozenset[str]] = set()  # pairs that shared a room before or after a step

    def check(lobby: Lobby, conn: int, frame: dict[str, Any], before: int) -> None:
        for r in lobby.server._rooms.values():
            ids = r.members | {r.host}
            shared.update(frozenset((x, y)) for x in ids for y in ids if x != y)
        if conn and before > limit:  # every announce of this step was past the limit
            pair = frozenset((IDS[conn - 1].node_id, frame["node"]["node_id"]))
            assert pair in shared, (conn, frame)

    play(Lobby(push_max=limit), run, check)


def test_past_the_limit_registered_carries_a_first_page_with_the_size_and_a_cursor() -> None:
    lobby = Lobby(push_max=3)
    for i in range(3):
        reg = lobby.register(i + 1, IDS[i])
        assert "more" not in reg and len(reg["presence"]) == i  # 3 nodes counting itself
    reg = lobby.register(4, IDS[3])  # the fourth: past the limit
    assert reg["more"] is True and reg["directory_size"] == 3
    assert len(reg["presence"]) == 3 and reg["cursor"] is None  # one page holds them
    client = LobbyClient(IDS[3], node_name="n", addresses=[], capabilities=[])
    client.server_key = LOBBY.public_key
    (ev,) = client.receive(encode_frame("registered", reg), T0)
    assert isinstance(ev, Registered) and ev.more and ev.directory_size == 3
    assert len(ev.directory) == 3


def test_past_the_limit_a_new_node_is_pushed_to_no_one_and_a_join_introduces_host_and_guest(
) -> None:
    lobby = Lobby(push_max=3)
    for i in range(4):
        lobby.register(i + 1, IDS[i])
    (made,) = lobby.send(1, "create_room", name="r", visibility="public", joinPolicy="open")
    lobby.tick()
    before = {c: len(lobby.presence_to(c)) for c in range(1, 5)}
    lobby.register(6, IDS[5])
    lobby.tick()
    assert {c: len(lobby.presence_to(c)) for c in range(1, 5)} == before
    lobby.send(6, "join_room", roomId=made["room"]["id"])
    lobby.tick()
    assert lobby.presence_to(1)[before[1]:] == [IDS[5].node_id]  # the host hears the guest
    assert IDS[0].node_id in lobby.presence_to(6)  # and the guest the host
    lobby.leave(6)
    lobby.tick()
    assert lobby.got[1][-1]["type"] == "presence"
    assert lobby.got[1][-1]["node"] == {**lobby.got[1][-2]["node"], "status": "offline"}


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), limit=st.one_of(st.none(), st.integers(1, 5)))
def test_list_nodes_pages_the_whole_directory_each_node_exactly_once(
    n: int, limit: int | None,
) -> None:
    lobby = Lobby(push_max=2)
    for i in range(n):
        lobby.register(i + 1, IDS[i])
    client = LobbyClient(IDS[0], node_name="n", addresses=[], capabilities=[])
    client.server_key = LOBBY.public_key
    client.receive(encode_frame("registered", {"session": "s", "heartbeat_s": 15,
                                               "presence": [], "rooms": []}), T0)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        body = {k: v for k, v in (("cursor", cursor), ("limit", limit)) if v is not None}
        (page,) = lobby.send(1, "list_nodes", **body)
        assert page["type"] == "nodes" and len(page["nodes"]) <= (limit or NODES_PAGE)
        (ev,) = client.receive(json.dumps(page), T0)
        assert isinstance(ev, NodesPage)
        seen += [e["node_id"] for e in ev.nodes]
        cursor = ev.cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(IDS[i].node_id for i in range(n))
    assert set(client.directory) == set(seen)


def test_a_list_nodes_with_a_bad_limit_or_cursor_is_a_bad_request() -> None:
    lobby = Lobby(push_max=2)
    lobby.register(1, IDS[0])
    for body in ({"limit": 0}, {"limit": NODES_PAGE + 1}, {"limit": "5"}, {"cursor": 7},
                 {"cursor": "x" * 200}, {"other": 1}):
        (err,) = lobby.send(1, "list_nodes", **body)
        assert err["type"] == "error" and err["code"] in ("bad_request", "bad_frame"), body


# --- entries as big as the register rules allow ------------------------------------------

FAT_NAME = "\U0001f600" * 64  # 64 chars of 4 UTF-8 bytes
FAT_CAPS = ["\x01" * 64] * 32  # escaped in JSON: 6 bytes a char


def register_fat(lobby: Lobby, conn: int, who: Identity) -> list[dict[str, Any]]:
    """Registers ``who`` with the biggest entry a node may have; the raw frames it got."""
    client = LobbyClient(who, node_name=FAT_NAME, addresses=[], capabilities=FAT_CAPS)
    (chal,) = lobby.server.connect(conn, lobby.now)
    assert isinstance(chal, ToConn)
    (reg,) = client.receive(chal.frame, lobby.now)
    assert isinstance(reg, Send)
    return lobby.run(lobby.server.receive(conn, reg.wire, lobby.now, WALL))


def test_what_a_registration_gets_fits_a_node_s_frame_however_big_the_entries() -> None:
    """Fat entries from sybils must not make the directory a newcomer gets (or a page
    of it) bigger than the 1 MiB a node reads: past FULL_BYTES it goes by pages, each
    within PAGE_BYTES, and the walk still visits everyone."""
    limits = Limits()
    lobby = Lobby(push_max=limits.presence_push_max)
    fat = [Identity.from_seed(hashlib.sha256(f"fat/{i}".encode()).digest())
           for i in range(limits.presence_push_max - 1)]
    for i, who in enumerate(fat):
        register_fat(lobby, 100 + i, who)
    assert lobby.server.dir.bytes > 2 * limits.max_envelope_bytes  # would not fit
    newcomer = IDS[0]
    client = LobbyClient(newcomer, node_name="new", addresses=[], capabilities=[])
    (chal,) = lobby.server.connect(1, lobby.now)
    assert isinstance(chal, ToConn)
    (reg,) = client.receive(chal.frame, lobby.now)
    assert isinstance(reg, Send)
    frames = [o.frame for o in lobby.server.receive(1, reg.wire, lobby.now, WALL)
              if isinstance(o, ToConn) and o.conn == 1]
    (registered,) = [f for f in frames if '"type":"registered"' in f]
    assert len(registered.encode()) <= limits.max_envelope_bytes
    (got,) = [o for o in client.receive(registered, lobby.now) if isinstance(o, Registered)]
    assert got.more and got.cursor is not None
    seen = [e["node_id"] for e in got.directory]
    cursor: str | None = got.cursor
    while cursor is not None:
        (page,) = [f for f in lobby.run(lobby.server.receive(
            1, encode_frame("list_nodes", {"cursor": cursor}), lobby.now, WALL))
            if isinstance(f, ToConn)]
        assert len(page.frame.encode()) <= limits.max_envelope_bytes
        (np,) = [o for o in client.receive(page.frame, lobby.now) if isinstance(o, NodesPage)]
        seen += [e["node_id"] for e in np.nodes]
        cursor = np.cursor
    assert sorted(seen) == sorted({w.node_id for w in fat} | {newcomer.node_id})


def test_a_page_holds_one_entry_at_least_whatever_its_size() -> None:
    d = Directory()
    for i in range(3):
        d.put({**entry(i), "node_name": FAT_NAME, "capabilities": FAT_CAPS})
    page, cursor = d.page(None, NODES_PAGE, max_bytes=10)
    assert len(page) == 1 and cursor == json.loads(page[0])["node_id"]
    walked = [json.loads(w)["node_id"] for w in page]
    while cursor is not None:
        page, cursor = d.page(cursor, NODES_PAGE, max_bytes=10)
        walked += [json.loads(w)["node_id"] for w in page]
    assert walked == sorted(IDS[i].node_id for i in range(3))
