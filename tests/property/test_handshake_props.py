"""Handshake properties (SPEC 4): any schedule completes with matching keys; any
tampered frame aborts with the reason of the check it breaks."""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol import (
    Acceptor,
    Decision,
    Dialer,
    Established,
    Failed,
    Identity,
    NeedAdmission,
    ProtocolError,
    Session,
    decode_envelope,
)
from hd_protocol.peer.handshake import Send
from hd_protocol.peer.session import Message

T0 = 1_764_000_000_000
TIMEOUT = 10_000
IDENTITIES = [Identity.from_seed(hashlib.sha256(b"handshake-props/%d" % i).digest())
              for i in range(4)]
names = st.text("abcdefghijklmnopqrstuvwxyz0123456789 -", max_size=12)
caps = st.lists(st.sampled_from(["collab", "chat", "agent", "bench"]), max_size=4, unique=True)
levels = st.sampled_from(["trusted", "guest"])


def make_rng(seed: bytes) -> Any:
    counter = [0]

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter[0].to_bytes(8, "big")).digest()
            counter[0] += 1
        return out[:n]

    return rng


@st.composite
def setups(draw: Any) -> dict[str, Any]:
    d_id, a_id = draw(st.lists(st.sampled_from(IDENTITIES), min_size=2, max_size=2,
                               unique_by=lambda i: i.node_id))
    seed = draw(st.binary(min_size=4, max_size=4))
    return {
        "dialer": Dialer(d_id, rng=make_rng(b"d" + seed), now=T0, node_name=draw(names),
                         capabilities=draw(caps),
                         expected_node_id=a_id.node_id if draw(st.booleans()) else None),
        "acceptor": Acceptor(a_id, rng=make_rng(b"a" + seed), now=T0, node_name=draw(names),
                             capabilities=draw(caps)),
        "d_id": d_id, "a_id": a_id, "d_level": draw(levels), "a_level": draw(levels),
    }


@settings(max_examples=100, deadline=None)
@given(setups(), st.data())
def test_any_interleaving_with_delays_ends_with_matching_keys(setup: Any, data: Any) -> None:
    d, a = setup["dialer"], setup["acceptor"]
    to_a: deque[str] = deque()
    to_d: deque[str] = deque()
    pending: dict[str, bool] = {"d": False, "a": False}
    done: dict[str, Established] = {}
    now = T0

    def absorb(side: str, outputs: list[Any]) -> None:
        for o in outputs:
            if isinstance(o, Send):
                (to_a if side == "d" else to_d).append(o.wire)
            elif isinstance(o, NeedAdmission):
                pending[side] = True
            elif isinstance(o, Established):
                done[side] = o
            else:
                raise AssertionError(f"{side} failed: {o}")

    absorb("d", d.start(now))
    for _ in range(60):
        if len(done) == 2:
            break
        actions = ["wait", "timer_d", "timer_a"]
        actions += ["deliver_a"] * bool(to_a) + ["deliver_d"] * bool(to_d)
        actions += ["admit_d"] * pending["d"] + ["admit_a"] * pending["a"]
        action = data.draw(st.sampled_from(actions))
        if action == "wait":
            # Delays of any size, as long as the whole exchange beats the deadline.
            now = min(now + data.draw(st.integers(0, 3_000)), T0 + TIMEOUT - 1)
        elif action == "timer_d":
            absorb("d", d.on_timer(now))
        elif action == "timer_a":
            absorb("a", a.on_timer(now))
        elif action == "deliver_a":
            absorb("a", a.receive(to_a.popleft(), now))
        elif action == "deliver_d":
            absorb("d", d.receive(to_d.popleft(), now))
        elif action == "admit_d":
            pending["d"] = False
            absorb("d", d.admit(Decision(setup["d_level"]), now))
        else:
            pending["a"] = False
            absorb("a", a.admit(Decision(setup["a_level"]), now))
    # Whatever the schedule, a bounded tail of deliveries finishes the exchange.
    while len(done) < 2:
        if pending["d"]:
            pending["d"] = False
            absorb("d", d.admit(Decision(setup["d_level"]), now))
        elif pending["a"]:
            pending["a"] = False
            absorb("a", a.admit(Decision(setup["a_level"]), now))
        elif to_a:
            absorb("a", a.receive(to_a.popleft(), now))
        else:
            absorb("d", d.receive(to_d.popleft(), now))

    rd, ra = done["d"].result, done["a"].result
    assert rd.key_tx == ra.key_rx and rd.key_rx == ra.key_tx and rd.key_tx != rd.key_rx
    assert rd.transcript_hash == ra.transcript_hash
    assert rd.peer.node_id == setup["a_id"].node_id and ra.peer.node_id == setup["d_id"].node_id
    assert rd.level == setup["d_level"] and ra.level == setup["a_level"]
    assert rd.peer_level == setup["a_level"]
    # The keys work: a sealed message crosses in both directions.
    sd = Session(setup["d_id"], rd, rng=make_rng(b"sd"), now=now)
    sa = Session(setup["a_id"], ra, rng=make_rng(b"sa"), now=now)
    assert isinstance(sa.receive(sd.send("peer_chat", {"n": 1}, now)[1][0].wire, now)[0],
                      Message)
    assert isinstance(sd.receive(sa.send("peer_chat", {"n": 2}, now)[1][0].wire, now)[0],
                      Message)


def run_to_frame(setup: dict[str, Any], index: int) -> tuple[str, Any]:
    """Run the honest exchange up to frame ``index`` (0 hello .. 3 auth_result);
    return that frame and the machine that is about to receive it."""
    d, a = setup["dialer"], setup["acceptor"]
    frames: list[str] = []
    (hello,) = d.start(T0)
    frames.append(hello.wire)
    if index > 0:
        (ack,) = a.receive(hello.wire, T0)
        frames.append(ack.wire)
    if index > 1:
        d.receive(frames[1], T0)
        (auth,) = d.admit(Decision(setup["d_level"]), T0)
        frames.append(auth.wire)
    if index > 2:
        a.receive(frames[2], T0)
        result, _ = a.admit(Decision(setup["a_level"]), T0)
        frames.append(result.wire)
    return frames[index], (a if index in (0, 2) else d)


def expected_reason(index: int, original: str, tampered: bytes) -> str | None:
    """The reason the receiver must give, from which rule the change breaks (SPEC 4).
    None: the change only touched ttl, which is unsigned and may change in transit."""
    try:
        got = decode_envelope(tampered)
    except ProtocolError as exc:
        return "version" if exc.code == "version" else "bad_handshake"
    orig = decode_envelope(original)
    changed = {f for f in ("type", "msg_id", "re", "src", "dst", "ts", "seq", "box", "sig")
               if getattr(got, f) != getattr(orig, f)}
    changed |= {f"data.{k}" for k in set(got.data) | set(orig.data)
                if got.data.get(k) != orig.data.get(k)}
    if not changed:
        assert got.ttl != orig.ttl
        return None
    if changed == {"data.proto"} and index in (0, 1):
        return "version"  # the protocol version is read before the signature
    # The acceptor checks hello.dst, and both sides check a sealed frame's dst, before
    # the signature; a hello_ack's signature is checked first.
    if changed == {"dst"} and index != 1:
        return "wrong_node"
    return "bad_handshake"


@settings(max_examples=250, deadline=None)
@given(setups(), st.integers(0, 3), st.data())
def test_a_tampered_frame_aborts_with_the_reason_of_the_broken_check(
    setup: Any, index: int, data: Any
) -> None:
    frame, receiver = run_to_frame(setup, index)
    raw = bytearray(frame.encode("utf-8"))
    pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
    raw[pos] ^= data.draw(st.integers(1, 255), label="mask")
    reason = expected_reason(index, frame, bytes(raw))
    out = receiver.receive(bytes(raw), T0 + 1)
    if reason is None:  # only ttl moved: the frame is still the authentic one
        assert not any(isinstance(o, Failed) for o in out)
        return
    assert isinstance(out[-1], Failed), out
    assert out[-1].reason == reason and not out[-1].remote
    assert not any(isinstance(o, Established | NeedAdmission) for o in out)
    assert receiver.result is None
