"""Invites are single-use, expire and can be revoked; the redeemer pins the inviter's id
and key; a known node id with a new key is refused (SPEC 2, 4, 4.1, 4.2)."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from typing import Any

import pytest
import trio
import trio_websocket
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hd_protocol import (
    Identity,
    decode_envelope,
    decode_invite,
    encode_envelope,
    make_envelope,
    sign_envelope,
    signing_bytes,
)
from hd_protocol.identity import b64encode

from .conftest import (
    CliResult,
    Cluster,
    HandshakeRefused,
    NodeProcess,
    RawPeer,
    connected,
    eventually,
    free_port,
    now_ms,
)


def _one_line_error(res: CliResult) -> str:
    assert res.returncode != 0, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr should be one line: {res.stderr!r}"
    return lines[0]


async def _not_connected(node: NodeProcess, other_id: str) -> bool:
    p = await node.peer(other_id)
    return p is None or p["status"] != "connected"


async def test_invite_redeemed_by_one_node_is_refused_for_a_third_node(
    cluster: Cluster,
) -> None:
    alice, bob, carol = await cluster.spawn("alice", "bob", "carol")
    invite = await alice.invite()
    (await bob.cli("pair", invite)).check()
    res = await carol.cli("pair", invite)
    line = _one_line_error(res)
    assert "pairing_required" in line
    assert res.json()["ok"] is False
    # Alice neither connected nor stored carol; bob's session is untouched.
    assert await alice.peer(carol.node_id) is None
    assert await _not_connected(carol, alice.node_id)
    # ...and carol, refused, did not store alice as a trusted peer to reconnect to.
    seen = await carol.peer(alice.node_id)
    assert seen is None or seen["level"] != "trusted", seen
    assert await connected(alice, bob)
    invites = (await alice.http("GET", "/api/invites")).json()
    assert [i["redeemed_by"] for i in invites] == [bob.node_id]


async def test_expired_invite_is_refused(cluster: Cluster) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    invite = await alice.invite("--ttl", "1")
    exp = decode_invite(invite)["exp"]
    await trio.sleep(max(0.0, (exp - now_ms()) / 1000) + 0.1)  # wall-clock expiry
    res = await bob.cli("pair", invite)
    assert "expired" in _one_line_error(res)
    assert await _not_connected(bob, alice.node_id)
    assert await alice.peer(bob.node_id) is None


async def test_inviter_refuses_an_expired_token_even_from_a_redeemer_that_skips_the_check(
    cluster: Cluster,
) -> None:
    # The redeemer's own expiry check is a courtesy; the inviter enforces it (SPEC 4.2).
    (alice,) = await cluster.spawn("alice")
    r = await alice.http("POST", "/api/invites", json={"ttl_s": 1})
    inv = decode_invite(r.json()["invite"])
    await trio.sleep(max(0.0, (inv["exp"] - now_ms()) / 1000) + 0.1)

    def dial() -> HandshakeRefused:
        with RawPeer(alice.peer_url, expected_node_id=alice.node_id,
                     token=inv["token"]) as peer, pytest.raises(HandshakeRefused) as exc:
            peer.handshake()
        return exc.value

    refused = await trio.to_thread.run_sync(dial)
    assert (refused.reason, refused.remote) == ("pairing_required", True)
    assert await alice.peers() == []


async def test_revoked_invite_is_refused(cluster: Cluster) -> None:
    alice, bob = await cluster.spawn("alice", "bob")
    async with alice.client() as tab:
        inv = await tab.request("network", "invite_create")
        listed = await tab.request("network", "invite_revoke", {"token_id": inv["token_id"]})
        assert [(i["token_id"], i["revoked"]) for i in listed["invites"]] == [
            (inv["token_id"], True)]
    res = await bob.cli("pair", inv["invite"])
    assert "pairing_required" in _one_line_error(res)
    assert await alice.peer(bob.node_id) is None


async def test_bad_invite_string_fails_with_one_line(cluster: Cluster) -> None:
    (bob,) = await cluster.spawn("bob")
    res = await bob.cli("pair", "hd1:not-base64!")
    assert "bad_invite" in _one_line_error(res)
    for bad in ("hello", "hd1:" + b64encode(b"{}").rstrip("="), "hd1:", "x" * 10_000):
        r = await bob.http("POST", "/api/pair", json={"invite": bad})
        assert (r.status_code, r.json()["error"]) == (400, "bad_invite"), bad


# --- someone else answers at the inviter's address -----------------------------------


async def _invite_then_stop(cluster: Cluster) -> tuple[NodeProcess, NodeProcess, str]:
    alice, bob = await cluster.spawn("alice", "bob")
    invite = await alice.invite()
    assert await alice.astop() == 0
    return alice, bob, invite


async def _redeem_in_tab(bob: NodeProcess, invite: str) -> dict[str, Any]:
    async with bob.client() as tab:
        return await tab.request("network", "pair_redeem", {"invite": invite}, timeout=20)


async def test_redeemer_refuses_another_hd_node_listening_at_the_inviters_address(
    cluster: Cluster,
) -> None:
    alice, bob, invite = await _invite_then_stop(cluster)
    dave = cluster.new("dave", peer_port=alice.peer_port)
    await dave.astart()
    result = await _redeem_in_tab(bob, invite)
    assert result["ok"] is False
    assert alice.node_id in result["message"] and "answered as" in result["message"], result
    # Bob's hello names alice; dave refuses to answer for another node (SPEC 4).
    await eventually(lambda: trio.to_thread.run_sync(
        lambda: "reason=wrong_node" in dave.log_text()), timeout=5, what="dave's refusal")
    assert await bob.peers() == []
    assert await dave.peers() == []


async def _serve_impostor(port: int, mode: str, alice_id: str, alice_key: str,
                          seen: list[str], *, task_status: Any) -> None:
    """A hostile listener: answers every hello with a hello_ack of its own making."""
    impostor = Identity.generate()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            hello = decode_envelope(await ws.get_message())
            if mode == "own_key":  # honest about who it is
                src, key = impostor.node_id, impostor.public_key
            else:  # "claims_id": alice's id and key, but it can only sign with its own
                src, key = alice_id, alice_key
            eph = X25519PrivateKey.generate().public_key().public_bytes_raw()
            ack = make_envelope(
                "hello_ack", msg_id=os.urandom(16).hex(), re=hello.msg_id, src=src,
                dst=hello.src, ts=now_ms(),
                data={"proto": "hd/1", "node_name": "alice", "public_key": key,
                      "capabilities": [], "nonce": b64encode(os.urandom(32)),
                      "eph": b64encode(eph), "echo": hello.data["nonce"]},
            )
            if mode == "own_key":
                signed = sign_envelope(ack, impostor)
            else:
                signed = replace(ack, sig=impostor.sign(signing_bytes(ack)))
            await ws.send_message(encode_envelope(signed))
            seen.append(hello.type)
            with trio.move_on_after(10):
                while True:
                    msg = await ws.get_message()
                    seen.append(decode_envelope(msg).type)
        except trio_websocket.ConnectionClosed:
            seen.append("closed")

    await trio_websocket.serve_websocket(handler, "127.0.0.1", port, None,
                                         task_status=task_status)


@pytest.mark.parametrize(("mode", "reason"), [("own_key", "wrong_node"),
                                              ("claims_id", "bad_handshake")])
async def test_redeemer_refuses_an_impostor_answering_at_the_inviters_address(
    cluster: Cluster, mode: str, reason: str
) -> None:
    alice, bob, invite = await _invite_then_stop(cluster)
    seen: list[str] = []
    async with trio.open_nursery() as n:
        await n.start(_serve_impostor, alice.peer_port, mode, alice.node_id,
                      decode_invite(invite)["public_key"], seen)
        result = await _redeem_in_tab(bob, invite)
        await eventually(lambda: trio.to_thread.run_sync(lambda: "closed" in seen),
                         timeout=5, what="bob to hang up on the impostor")
        n.cancel_scope.cancel()
    assert result == {"ok": False, "error": reason, "message": result["message"],
                      "req": result["req"]}
    # Bob hung up after the impostor's hello_ack: no auth (no token) ever reached it.
    assert seen == ["hello", "closed"]
    assert await bob.peers() == []


# --- a known node id with a new key ---------------------------------------------------


async def test_known_node_id_presenting_another_key_is_refused_with_key_mismatch(
    cluster: Cluster,
) -> None:
    alice = cluster.new("alice", ui_port=free_port(), peer_port=free_port())
    bob = cluster.new("bob")
    await cluster.start(alice, bob)
    await cluster.pair(alice, bob)
    assert await alice.astop() == 0

    # Alice's store now pins another (valid) key for bob's node id.
    other_key = Identity.generate().public_key
    db = sqlite3.connect(alice.data_dir / "node.db")
    try:
        with db:
            n = db.execute("UPDATE peers SET public_key = ? WHERE node_id = ?",
                           (other_key, bob.node_id)).rowcount
        assert n == 1
    finally:
        db.close()

    await alice.astart()
    # Alice reconnects to bob at start-up; bob's real key does not match her pin.
    await eventually(
        lambda: trio.to_thread.run_sync(lambda: "reason=key_mismatch" in alice.log_text()),
        timeout=10, what="alice to refuse bob's key")
    # Bob dialling alice is refused by alice's admission, and told why.
    async with bob.client() as tab:
        err = None
        try:
            await tab.request("network", "connect", {"address": alice.peer_url}, timeout=15)
        except Exception as exc:  # NodeError
            err = exc
    assert getattr(err, "code", None) == "key_mismatch", err
    log = alice.log_text()
    assert f"admission role=acceptor peer={bob.node_id}" in log
    assert "level=None reason=key_mismatch" in log
    assert await _not_connected(alice, bob.node_id)
    assert await _not_connected(bob, alice.node_id)
    assert await alice.metric("hd_sessions") == 0.0
    # Refusals never re-pin: alice still holds the key she had.
    peer = await alice.peer(bob.node_id)
    assert peer is not None and peer["public_key"] == other_key
