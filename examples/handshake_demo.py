"""Two in-memory nodes pair with an invite, shake hands and exchange sealed envelopes.

This is the whole of SPEC 4 and SPEC 5 without a socket: ``alice`` makes an invite, ``bob``
redeems it by dialling her (``Dialer``/``Acceptor``), both decide admission with the pure
functions of ``hd_protocol.peer.admission``, and then they talk through ``Session`` objects.
The loop that carries frames between them here is what a transport does in a node.

It is a shell, not protocol code, so it reads the clock and ``os.urandom`` itself and
hands both to the machines. It prints what crosses the wire and what each side checked,
and never prints a key or a token in full. Exits 1 if anything does not go as the spec
says it must. Run: ``python examples/handshake_demo.py`` (``make run``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

from hd_protocol import (
    Acceptor,
    Decision,
    Dialer,
    Established,
    Identity,
    InviteRecord,
    NeedAdmission,
    Policy,
    Presented,
    Session,
    admit,
    decode_envelope,
    decode_invite,
    dialer_view,
    encode_invite,
    hash_token,
    invite_expired,
    make_candidate,
    new_token,
)
from hd_protocol.peer.handshake import Failed, Send
from hd_protocol.peer.session import Closed, Dropped, Message, Pong
from hd_protocol.peer.session import Send as SessionSend

INVITE_TTL_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def short(secret: str) -> str:
    """A fingerprint of a key or token: enough to compare by eye, useless to an attacker."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


def step(title: str) -> None:
    print(f"\n== {title}")


def say(who: str, text: str) -> None:
    print(f"  [{who:5}] {text}")


def fail(why: str) -> None:
    print(f"\nFAILED: {why}")
    raise SystemExit(1)


def expect(cond: bool, why: str) -> None:
    if not cond:
        fail(why)


def one(outs: list[Any], kind: type, who: str) -> Any:
    found = [o for o in outs if isinstance(o, kind)]
    if len(found) != 1:
        failed = [o for o in outs if isinstance(o, Failed)]
        fail(f"{who} expected one {kind.__name__}, got {failed or outs}")
    return found[0]


def wire_info(wire: str) -> str:
    env = decode_envelope(wire)  # what anyone on the path can read
    sealed = f"sealed seq={env.seq}, box {len(env.box)} chars" if env.box else "in clear"
    return f"{env.type} {len(wire.encode())} B, {sealed}, src={env.src} dst={env.dst}"


def carry(sender: str, receiver: str, wire: str) -> str:
    print(f"  {sender:>5} -> {receiver:<5} {wire_info(wire)}")
    return wire


def main() -> int:
    alice = Identity.generate()
    bob = Identity.generate()
    step("identities")
    say("alice", f"node_id {alice.node_id}  key #{short(alice.public_key)}")
    say("bob", f"node_id {bob.node_id}  key #{short(bob.public_key)}")

    # --- SPEC 4.2: alice makes an invite; only the token's hash is stored -----------
    step("invite (SPEC 4.2)")
    token = new_token(os.urandom)
    stored = InviteRecord(token_hash=hash_token(token), exp=now_ms() + INVITE_TTL_MS)
    invite = encode_invite(
        addrs=[make_candidate("host", "ws://127.0.0.1:8766/peer-ws")], exp=stored.exp,
        node_id=alice.node_id, public_key=alice.public_key, token=token,
    )
    say("alice", f"invite {invite[:12]}... ({len(invite)} chars), token #{short(token)}, "
                 f"stored as hash #{stored.token_hash[:8]}")
    redeemed = decode_invite(invite)
    expect(not invite_expired(redeemed, now_ms()), "fresh invite already expired")
    say("bob", f"decoded invite: node {redeemed['node_id']}, "
               f"{len(redeemed['addrs'])} address(es), pins key #{short(redeemed['public_key'])}")

    # --- SPEC 4: the four-frame handshake ---------------------------------------------
    step("handshake (SPEC 4)")
    t0 = now_ms()
    dialer = Dialer(bob, rng=os.urandom, now=t0, expected_node_id=redeemed["node_id"],
                    token=redeemed["token"], node_name="bob", capabilities=["chat"])
    acceptor = Acceptor(alice, rng=os.urandom, now=t0, node_name="alice",
                        capabilities=["chat", "collab"])

    hello = carry("bob", "alice", one(dialer.start(now_ms()), Send, "bob").wire)
    ack = carry("alice", "bob", one(acceptor.receive(hello, now_ms()), Send, "alice").wire)
    say("alice", "hello verified: src is the node id of its key, signature good, dst is us")

    need = one(dialer.receive(ack, now_ms()), NeedAdmission, "bob")
    say("bob", f"hello_ack verified: echo matches, signature good, answered by "
               f"{need.peer.node_id} (the invite's node), key #{short(need.peer.public_key)}")
    bob_view = dialer_view(
        Policy(), need.peer.node_id, need.peer.public_key, record=None,
        invite_pinned=need.peer.public_key == redeemed["public_key"],
    )
    expect(bob_view.level == "trusted", f"bob refused alice: {bob_view.reason}")
    say("bob", f"admission of alice: {bob_view.level} (invite pinned her id and key)")
    auth = carry("bob", "alice", one(dialer.admit(bob_view, now_ms()), Send, "bob").wire)

    asked = one(acceptor.receive(auth, now_ms()), NeedAdmission, "alice")
    say("alice", f"auth verified and opened: echo matches, presents token "
                 f"#{short(asked.token or '')}")
    presented = Presented(node_id=asked.peer.node_id, public_key=asked.peer.public_key,
                          token=asked.token, attest=asked.attest, link="direct",
                          remote_addr="127.0.0.1")
    invite_found = stored if asked.token and hash_token(asked.token) == stored.token_hash \
        else None
    decision: Decision = admit(Policy(), presented, record=None, invite=invite_found,
                               now=now_ms())
    expect(decision.level == "trusted" and decision.redeem_invite == stored.token_hash,
           f"alice refused bob: {decision.reason}")
    say("alice", f"admission of bob: {decision.level}; store him as trusted="
                 f"{decision.store_trusted}, mark invite #{stored.token_hash[:8]} redeemed")
    outs = acceptor.admit(decision, now_ms())
    result_wire = carry("alice", "bob", one(outs, Send, "alice").wire)
    alice_done = one(outs, Established, "alice").result

    bob_done = one(dialer.receive(result_wire, now_ms()), Established, "bob").result
    say("bob", f"auth_result verified and opened: ok, alice sees us as {bob_done.peer_level}")
    expect(alice_done.transcript_hash == bob_done.transcript_hash, "transcripts differ")
    expect(alice_done.key_tx == bob_done.key_rx and alice_done.key_rx == bob_done.key_tx,
           "session keys do not pair up")
    print(f"  handshake complete in {now_ms() - t0} ms: both sides hold the same "
          f"transcript #{alice_done.transcript_hash.hex()[:8]} and paired keys")

    # --- SPEC 5: sealed envelopes over the session -------------------------------------
    step("session (SPEC 3.1, SPEC 5)")
    a = Session(alice, alice_done, rng=os.urandom, now=now_ms())
    b = Session(bob, bob_done, rng=os.urandom, now=now_ms())

    text = "hi alice, bob here: the relay cannot read this"
    _, sent = b.send("peer_chat", {"text": text, "from_name": "bob"}, now_ms())
    chat = carry("bob", "alice", one(sent, SessionSend, "bob").wire)
    expect(text not in chat and "relay cannot read" not in chat, "plaintext on the wire")
    say("path", "sees type, src, dst and size; the text is not in the frame")
    got = one(a.receive(chat, now_ms()), Message, "alice")
    expect(got.data["text"] == text, "alice read something else")
    say("alice", f"peer_chat checked (src, dst, signature, seq, box): {got.data['text']!r}")

    _, sent = a.send("peer_chat_ack", {"id": got.msg_id}, now_ms(), re=got.msg_id)
    ack_wire = carry("alice", "bob", one(sent, SessionSend, "alice").wire)
    acked = one(b.receive(ack_wire, now_ms()), Message, "bob")
    say("bob", f"peer_chat_ack for {acked.data['id'][:8]}...: delivered")

    ping_id, sent = b.ping(now_ms())
    ping = carry("bob", "alice", one(sent, SessionSend, "bob").wire)
    pong = carry("alice", "bob", one(a.receive(ping, now_ms()), SessionSend, "alice").wire)
    rtt = one(b.receive(pong, now_ms()), Pong, "bob")
    expect(rtt.request_id == ping_id, "pong answered another ping")
    say("bob", f"pong matched our ping, rtt {rtt.rtt_ms} ms")

    step("what the checks refuse")
    replay = one(a.receive(chat, now_ms()), Dropped, "alice")
    expect(replay.code == "seq", f"replay dropped for {replay.code}, expected seq")
    say("alice", f"the same peer_chat again: dropped ({replay.code}: {replay.message})")
    _, sent = b.send("peer_chat", {"text": "pay 10", "from_name": "bob"}, now_ms())
    frame = one(sent, SessionSend, "bob").wire
    forged = frame.replace('"ts":', '"ts":1', 1)  # a relay edits a signed field
    dropped = one(a.receive(forged, now_ms()), Dropped, "alice")
    expect(dropped.code == "sig", f"forgery dropped for {dropped.code}, expected sig")
    say("alice", f"a frame with an edited timestamp: dropped ({dropped.code})")
    later = one(a.receive(frame, now_ms()), Message, "alice")
    say("alice", f"the untouched frame still arrives: {later.data['text']!r}")

    step("close")
    bye = carry("alice", "bob", one(a.close("demo over", now_ms()), SessionSend, "alice").wire)
    closed = one(b.receive(bye, now_ms()), Closed, "bob")
    expect(closed.remote and b.closed is closed, f"bob did not close: {closed}")
    say("bob", f"session closed by peer: {closed.reason!r}")
    say("alice", f"in {a.stats.msgs_in} msgs / {a.stats.bytes_in} B, out "
                 f"{a.stats.msgs_out} msgs / {a.stats.bytes_out} B, dropped {a.stats.dropped}")
    print("\ndemo ok: invite redeemed, handshake verified, sealed envelopes exchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
