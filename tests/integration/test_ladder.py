"""Pairing dials the invite's candidates as a ladder (SPEC 8.2): a candidate that
swallows connections does not hold up the one that works."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import trio

from hd_protocol import decode_invite, encode_invite, make_candidate

from .conftest import Cluster, connected


@pytest.fixture
def tarpit() -> Iterator[str]:
    """A TCP port that accepts and then never says a word (a black hole)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def run() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except (TimeoutError, OSError):
                continue

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield f"ws://127.0.0.1:{srv.getsockname()[1]}/peer-ws"
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        srv.close()


async def test_pairing_wins_through_the_second_candidate_when_the_first_is_a_black_hole(
    cluster: Cluster, tarpit: str
) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    r = await alice.http("POST", "/api/invites", json={})
    inv = decode_invite(r.json()["invite"])
    # The black hole gets the best priority, so a one-at-a-time dialler would wait
    # out its whole handshake timeout (10 s) before trying alice's real address.
    addrs = [make_candidate("host", tarpit, 65535)] + [
        make_candidate("host", c["url"], 100) for c in inv["addrs"]
    ]
    crafted = encode_invite(addrs=addrs, exp=inv["exp"], node_id=inv["node_id"],
                            public_key=inv["public_key"], token=inv["token"])
    t0 = trio.current_time()
    r = await bob.http("POST", "/api/pair", json={"invite": crafted})
    elapsed = trio.current_time() - t0
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    assert elapsed < 5.0, elapsed
    assert await connected(bob, alice)
    log = bob.log_text()
    assert f"ladder step kind=direct addr={tarpit}" in log
    assert "ladder won kind=direct addr=ws://127.0.0.1:" in log
