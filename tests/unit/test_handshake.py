"""The four-frame handshake (SPEC 4): every check, with the reason it aborts with.

Frames are forged with the public API only: the session keys of a run are recovered
by finding which 32 bytes of the injected rng became the dialer's X25519 seed, then
``derive_session_keys`` does the rest. Each forging helper is first shown to produce
an accepted frame, so a rejection in a negative test is caused by the one change.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hd_protocol import (
    Acceptor,
    Decision,
    Dialer,
    Envelope,
    Established,
    Failed,
    Identity,
    LocalProtocolError,
    NeedAdmission,
    decode_envelope,
    derive_session_keys,
    encode_envelope,
    make_envelope,
    open_envelope,
    seal_envelope,
    sign_envelope,
    signing_bytes,
)
from hd_protocol.peer.handshake import Send

T0 = 1_764_000_000_000
AUTH_ID = "a" * 32
RESULT_ID = "b" * 32


def eph_seed(rng: Any, eph: str) -> bytes:
    """The 32 rng bytes whose X25519 public key is ``eph``."""
    for out in rng.outputs:
        if len(out) == 32:
            pub = X25519PrivateKey.from_private_bytes(out).public_key()
            if base64.b64encode(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode() == eph:
                return bytes(out)
    raise AssertionError("eph was not drawn from this rng")


class Flow:
    """alice dials bob; each step runs the steps before it once."""

    def __init__(
        self, rng_factory: Any, dialer: Identity, acceptor: Identity, **dialer_kw: Any
    ) -> None:
        self.dialer_identity, self.acceptor_identity = dialer, acceptor
        self.drng, self.arng = rng_factory("flow/dialer"), rng_factory("flow/acceptor")
        self.d = Dialer(dialer, rng=self.drng, now=T0, node_name="alice", **dialer_kw)
        self.a = Acceptor(
            acceptor, rng=self.arng, now=T0, node_name="bob", capabilities=["collab"]
        )

    # Each step runs once; asking for a later frame runs the earlier steps first.
    hello_wire = ack_wire = auth_wire = ""
    need: NeedAdmission | None = None

    def hello(self) -> str:
        if not self.hello_wire:
            (out,) = self.d.start(T0)
            assert isinstance(out, Send)
            self.hello_wire = out.wire
        return self.hello_wire

    def ack(self) -> str:
        if not self.ack_wire:
            (out,) = self.a.receive(self.hello(), T0 + 1)
            assert isinstance(out, Send)
            self.ack_wire = out.wire
        return self.ack_wire

    def auth(self, level: str = "trusted") -> str:
        if not self.auth_wire:
            (need,) = self.d.receive(self.ack(), T0 + 2)
            assert isinstance(need, NeedAdmission)
            (out,) = self.d.admit(Decision(level), T0 + 3)  # type: ignore[arg-type]
            assert isinstance(out, Send)
            self.auth_wire = out.wire
        return self.auth_wire

    def acceptor_admission(self) -> NeedAdmission:
        if self.need is None:
            (need,) = self.a.receive(self.auth(), T0 + 4)
            assert isinstance(need, NeedAdmission)
            self.need = need
        return self.need

    def keys(self) -> tuple[bytes, bytes]:
        """(dialer->acceptor, acceptor->dialer) of this run."""
        hello, ack = decode_envelope(self.hello_wire), decode_envelope(self.ack_wire)
        return derive_session_keys(eph_seed(self.drng, hello.data["eph"]), ack.data["eph"],
                                   hello, ack)

    # forging --------------------------------------------------------------------------

    def forge_auth(
        self, *, signer: Identity | None = None, key: bytes | None = None,
        payload: dict[str, Any] | None = None, **fields: Any,
    ) -> str:
        """An auth as the real dialer would send it, with the given changes."""
        ack = decode_envelope(self.ack_wire)
        signer = signer or self.dialer_identity
        head: dict[str, Any] = {"msg_id": AUTH_ID, "re": ack.msg_id, "src": signer.node_id,
                                "dst": ack.src, "ts": T0 + 3, "seq": 0}
        head.update(fields)
        body = {"echo": ack.data["nonce"], "token": None, "attest": None}
        body.update(payload or {})
        env = seal_envelope(make_envelope("auth", **head), key or self.keys()[0], body)
        return encode_envelope(sign_envelope(env, signer))

    def forge_result(
        self, *, signer: Identity | None = None, key: bytes | None = None,
        payload: dict[str, Any] | None = None, **fields: Any,
    ) -> str:
        """An auth_result as the real acceptor would send it, with the given changes."""
        auth = decode_envelope(self.auth_wire)
        signer = signer or self.acceptor_identity
        head: dict[str, Any] = {"msg_id": RESULT_ID, "re": auth.msg_id, "src": signer.node_id,
                                "dst": auth.src, "ts": T0 + 4, "seq": 0}
        head.update(fields)
        body: dict[str, Any] = {"ok": True, "level": "trusted", "reason": None}
        body.update(payload or {})
        env = seal_envelope(make_envelope("auth_result", **head), key or self.keys()[1], body)
        return encode_envelope(sign_envelope(env, signer))


def resign(wire: str, signer: Identity, data: dict[str, Any] | None = None, **fields: Any) -> str:
    """Change fields (and data members) of a frame and sign it again with ``signer``."""
    env = decode_envelope(wire)
    env = dataclasses.replace(env, data={**env.data, **(data or {})}, sig="", **fields)
    return encode_envelope(sign_envelope(env, signer))


def sign_as(env: Envelope, signer: Identity) -> str:
    """Sign with any key, whatever ``src`` says (what a forger would do)."""
    return encode_envelope(dataclasses.replace(env, sig=signer.sign(signing_bytes(env))))


def failed(outputs: list[Any]) -> Failed:
    assert outputs and isinstance(outputs[-1], Failed), outputs
    assert not any(isinstance(o, Established | NeedAdmission) for o in outputs)
    return outputs[-1]


def sends(outputs: list[Any]) -> list[str]:
    return [o.wire for o in outputs if isinstance(o, Send)]


@pytest.fixture
def flow(rng_factory: Any, alice: Identity, bob: Identity) -> Flow:
    return Flow(rng_factory, alice, bob)


# --- the happy path ---------------------------------------------------------------------


def test_handshake_establishes_crossed_keys_and_both_levels(flow: Flow, bob: Identity) -> None:
    need = flow.acceptor_admission()
    assert need.peer.node_id == flow.dialer_identity.node_id and need.peer.node_name == "alice"
    out = flow.a.admit(Decision("guest"), T0 + 5)
    (wire,) = sends(out)
    (est_a,) = [o for o in out if isinstance(o, Established)]
    (est_d,) = flow.d.receive(wire, T0 + 6)
    assert isinstance(est_d, Established)
    d, a = est_d.result, est_a.result
    assert (d.role, a.role) == ("dialer", "acceptor")
    assert d.key_tx == a.key_rx and d.key_rx == a.key_tx and d.key_tx != d.key_rx
    assert (d.key_tx, d.key_rx) == flow.keys()
    assert d.transcript_hash == a.transcript_hash
    assert d.level == "trusted" and d.peer_level == "guest" and a.level == "guest"
    assert d.peer.node_id == bob.node_id and d.peer.public_key == bob.public_key
    assert d.peer.capabilities == ("collab",) and d.peer.node_name == "bob"
    # seq 0 was used by auth/auth_result in each direction (SPEC 3.1).
    assert (d.tx_seq, d.rx_seq, a.tx_seq, a.rx_seq) == (1, 0, 1, 0)
    assert flow.d.done and flow.a.done and flow.d.next_deadline() is None


def test_forged_frames_are_accepted_when_nothing_is_changed(
    flow: Flow, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    """The forging helpers are faithful: the negative tests below change one thing."""
    flow.ack()
    (need,) = flow.a.receive(flow.forge_auth(), T0 + 4)
    assert isinstance(need, NeedAdmission)
    flow2 = Flow(rng_factory, alice, bob)
    flow2.auth()
    (est,) = flow2.d.receive(flow2.forge_result(), T0 + 5)
    assert isinstance(est, Established)


def test_dialer_addresses_hello_to_the_expected_node_or_to_null(
    rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    assert decode_envelope(Flow(rng_factory, alice, bob).hello()).dst is None
    pinned = Flow(rng_factory, alice, bob, expected_node_id=bob.node_id)
    assert decode_envelope(pinned.hello()).dst == bob.node_id
    assert isinstance(pinned.d.receive(pinned.ack(), T0 + 2)[0], NeedAdmission)


def test_auth_carries_the_token_and_attestation_the_dialer_was_given(
    rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    attest = {"cert": {"x": 1}, "sig": "s"}
    f = Flow(rng_factory, alice, bob, token="tok-" + "x" * 20, attest=attest)
    need = f.acceptor_admission()
    assert need.token == "tok-" + "x" * 20 and need.attest == attest


# --- wrong_node -------------------------------------------------------------------------


def test_acceptor_refuses_hello_addressed_to_another_node(
    rng_factory: Any, alice: Identity, bob: Identity, carol: Identity
) -> None:
    f = Flow(rng_factory, alice, bob, expected_node_id=carol.node_id)
    out = f.a.receive(f.hello(), T0)
    assert failed(out).reason == "wrong_node" and not sends(out)


def test_dialer_refuses_hello_ack_from_another_node_than_it_dialled(
    rng_factory: Any, alice: Identity, bob: Identity, carol: Identity
) -> None:
    f = Flow(rng_factory, alice, bob, expected_node_id=carol.node_id)
    hello = f.hello()
    (ack,) = sends(f.a.receive(resign(hello, alice, dst=None), T0))  # bob does answer
    out = f.d.receive(ack, T0 + 1)
    assert failed(out).reason == "wrong_node" and not sends(out)


def test_a_node_cannot_dial_itself(rng_factory: Any, alice: Identity) -> None:
    with pytest.raises(LocalProtocolError) as info:
        Dialer(alice, rng=rng_factory("x"), now=T0, expected_node_id=alice.node_id)
    assert info.value.code == "wrong_node"


def test_acceptor_refuses_a_hello_from_its_own_node_id(
    rng_factory: Any, alice: Identity
) -> None:
    f = Flow(rng_factory, alice, alice)  # we dialled our own listener
    assert failed(f.a.receive(f.hello(), T0)).reason == "wrong_node"


def test_dialer_refuses_a_hello_ack_from_its_own_node_id(
    flow: Flow, alice: Identity
) -> None:
    hello = decode_envelope(flow.hello())
    data = {**hello.data, "echo": hello.data["nonce"],
            "nonce": base64.b64encode(b"\x05" * 32).decode()}
    ack = make_envelope("hello_ack", msg_id="c" * 32, re=hello.msg_id, src=alice.node_id,
                        dst=alice.node_id, ts=T0 + 1, data=data)
    out = flow.d.receive(encode_envelope(sign_envelope(ack, alice)), T0 + 1)
    assert failed(out).reason == "wrong_node"


def test_dialer_refuses_hello_ack_addressed_to_another_node(
    flow: Flow, bob: Identity, carol: Identity
) -> None:
    out = flow.d.receive(resign(flow.ack(), bob, dst=carol.node_id), T0 + 2)
    assert failed(out).reason == "wrong_node"


def test_acceptor_refuses_auth_addressed_to_another_node(flow: Flow, carol: Identity) -> None:
    flow.ack()
    out = flow.a.receive(flow.forge_auth(dst=carol.node_id), T0 + 4)
    assert failed(out).reason == "wrong_node"


# --- version ----------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["hd/2", "HD/1", "", "hd/1 "])
def test_hello_with_another_proto_fails_with_version(
    flow: Flow, alice: Identity, proto: str
) -> None:
    out = flow.a.receive(resign(flow.hello(), alice, data={"proto": proto}), T0)
    assert failed(out).reason == "version"


def test_hello_ack_with_another_proto_fails_with_version(flow: Flow, bob: Identity) -> None:
    out = flow.d.receive(resign(flow.ack(), bob, data={"proto": "hd/2"}), T0 + 2)
    assert failed(out).reason == "version"


def test_hello_with_envelope_version_2_fails_with_version(flow: Flow, alice: Identity) -> None:
    hello = dataclasses.replace(decode_envelope(flow.hello()), v=2)
    assert failed(flow.a.receive(sign_as(hello, alice), T0)).reason == "version"


# --- bad_handshake: hello / hello_ack ---------------------------------------------------


def test_hello_whose_src_is_not_the_node_id_of_its_key_fails(
    flow: Flow, alice: Identity, carol: Identity
) -> None:
    # Signed by alice and claiming alice's id, but presenting carol's key.
    out = flow.a.receive(resign(flow.hello(), alice, data={"public_key": carol.public_key}), T0)
    assert failed(out).reason == "bad_handshake"


def test_hello_claiming_another_nodes_id_with_its_own_key_fails(
    flow: Flow, carol: Identity
) -> None:
    # carol signs with her own key and presents it, but claims alice's node id:
    # the signature verifies, only src == node_id(public_key) catches the lie.
    hello = decode_envelope(flow.hello())
    forged = dataclasses.replace(hello, data={**hello.data, "public_key": carol.public_key})
    assert failed(flow.a.receive(sign_as(forged, carol), T0)).reason == "bad_handshake"


def test_hello_ack_claiming_another_nodes_id_with_its_own_key_fails(
    flow: Flow, carol: Identity
) -> None:
    ack = decode_envelope(flow.ack())
    forged = dataclasses.replace(ack, data={**ack.data, "public_key": carol.public_key})
    assert failed(flow.d.receive(sign_as(forged, carol), T0 + 2)).reason == "bad_handshake"


def test_hello_signed_by_another_key_fails(flow: Flow, carol: Identity) -> None:
    out = flow.a.receive(sign_as(decode_envelope(flow.hello()), carol), T0)
    assert failed(out).reason == "bad_handshake"


def test_hello_with_a_changed_field_after_signing_fails(flow: Flow) -> None:
    hello = decode_envelope(flow.hello())
    forged = dataclasses.replace(hello, data={**hello.data, "node_name": "mallory"})
    assert failed(flow.a.receive(encode_envelope(forged), T0)).reason == "bad_handshake"


def test_hello_ack_whose_src_is_not_the_node_id_of_its_key_fails(
    flow: Flow, bob: Identity, carol: Identity
) -> None:
    out = flow.d.receive(resign(flow.ack(), bob, data={"public_key": carol.public_key}), T0 + 2)
    assert failed(out).reason == "bad_handshake"


def test_hello_ack_signed_by_another_key_fails(flow: Flow, carol: Identity) -> None:
    out = flow.d.receive(sign_as(decode_envelope(flow.ack()), carol), T0 + 2)
    assert failed(out).reason == "bad_handshake"


def test_hello_ack_with_a_wrong_echo_fails(flow: Flow, bob: Identity) -> None:
    echo = base64.b64encode(b"\x09" * 32).decode()
    out = flow.d.receive(resign(flow.ack(), bob, data={"echo": echo}), T0 + 2)
    assert failed(out).reason == "bad_handshake"


def test_hello_ack_answering_another_hello_fails(flow: Flow, bob: Identity) -> None:
    out = flow.d.receive(resign(flow.ack(), bob, re="d" * 32), T0 + 2)
    assert failed(out).reason == "bad_handshake"


B64_31 = base64.b64encode(b"\x01" * 31).decode()


@pytest.mark.parametrize(
    "data",
    [
        {"capabilities": ["c"] * 33},
        {"capabilities": ["ok", 5]},
        {"capabilities": [""]},
        {"capabilities": "collab"},
        {"node_name": "n" * 65},
        {"node_name": None},
        {"nonce": B64_31},
        {"nonce": "not base64"},
        {"eph": B64_31},
        {"public_key": "not a key"},
        {"extra": 1},
    ],
    ids=lambda d: next(iter(d)) + "=" + repr(next(iter(d.values())))[:12],
)
def test_malformed_hello_fails_with_bad_handshake(
    flow: Flow, alice: Identity, data: dict[str, Any]
) -> None:
    out = flow.a.receive(resign(flow.hello(), alice, data=data), T0)
    assert failed(out).reason == "bad_handshake"


@pytest.mark.parametrize("missing", ["proto", "node_name", "public_key", "capabilities",
                                     "nonce", "eph"])
def test_hello_missing_a_field_fails_with_bad_handshake(
    flow: Flow, alice: Identity, missing: str
) -> None:
    hello = decode_envelope(flow.hello())
    data = {k: v for k, v in hello.data.items() if k != missing}
    forged = dataclasses.replace(hello, data=data, sig="")
    out = flow.a.receive(encode_envelope(sign_envelope(forged, alice)), T0)
    assert failed(out).reason == "bad_handshake"


def test_hello_carrying_a_seq_or_a_box_fails(
    flow: Flow, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    hello = flow.hello()
    assert failed(flow.a.receive(resign(hello, alice, seq=0), T0)).reason == "bad_handshake"
    f2 = Flow(rng_factory, alice, bob)
    boxed = resign(f2.hello(), alice, data={}, seq=0, box="QQ==")
    assert failed(f2.a.receive(boxed, T0)).reason == "bad_handshake"


def test_hello_ack_without_echo_fails(flow: Flow, bob: Identity) -> None:
    ack = decode_envelope(flow.ack())
    data = {k: v for k, v in ack.data.items() if k != "echo"}
    forged = encode_envelope(sign_envelope(dataclasses.replace(ack, data=data, sig=""), bob))
    assert failed(flow.d.receive(forged, T0 + 2)).reason == "bad_handshake"


def test_all_zero_x25519_result_aborts_the_handshake(
    flow: Flow, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    zero = base64.b64encode(bytes(32)).decode()  # a low-order point: the shared secret is 0
    out = flow.a.receive(resign(flow.hello(), alice, data={"eph": zero}), T0)
    assert failed(out).reason == "bad_handshake"
    f2 = Flow(rng_factory, alice, bob)
    out = f2.d.receive(resign(f2.ack(), bob, data={"eph": zero}), T0 + 2)
    assert failed(out).reason == "bad_handshake"


# --- bad_handshake: auth ----------------------------------------------------------------


def test_auth_from_another_src_fails(flow: Flow, carol: Identity) -> None:
    flow.ack()
    out = flow.a.receive(flow.forge_auth(signer=carol), T0 + 4)
    assert failed(out).reason == "bad_handshake" and not sends(out)


def test_auth_whose_src_is_not_the_hello_src_fails_even_with_the_hello_key(
    flow: Flow, alice: Identity, carol: Identity
) -> None:
    # Signed and sealed correctly by the dialer, but claiming to come from carol.
    flow.ack()
    auth = decode_envelope(flow.forge_auth())
    moved = dataclasses.replace(auth, src=carol.node_id, box=None, sig="")
    resealed = seal_envelope(moved, flow.keys()[0], open_envelope(auth, flow.keys()[0]))
    out = flow.a.receive(sign_as(resealed, alice), T0 + 4)
    assert failed(out).reason == "bad_handshake" and not sends(out)


def test_auth_signed_by_another_key_fails(flow: Flow, carol: Identity) -> None:
    flow.ack()
    auth = decode_envelope(flow.forge_auth())
    out = flow.a.receive(sign_as(auth, carol), T0 + 4)
    assert failed(out).reason == "bad_handshake" and not sends(out)


def test_auth_whose_box_does_not_open_fails(flow: Flow) -> None:
    flow.ack()
    out = flow.a.receive(flow.forge_auth(key=bytes(32)), T0 + 4)
    assert failed(out).reason == "bad_handshake" and not sends(out)


def test_auth_sealed_with_the_acceptors_own_direction_key_fails(flow: Flow) -> None:
    flow.ack()
    out = flow.a.receive(flow.forge_auth(key=flow.keys()[1]), T0 + 4)
    assert failed(out).reason == "bad_handshake"


def test_auth_with_seq_other_than_0_fails(flow: Flow) -> None:
    flow.ack()
    assert failed(flow.a.receive(flow.forge_auth(seq=1), T0 + 4)).reason == "bad_handshake"


def test_auth_that_is_not_sealed_fails(flow: Flow, alice: Identity) -> None:
    ack = decode_envelope(flow.ack())
    plain = make_envelope("auth", msg_id=AUTH_ID, re=ack.msg_id, src=alice.node_id,
                          dst=ack.src, ts=T0 + 3, seq=0,
                          data={"echo": ack.data["nonce"], "token": None, "attest": None})
    out = flow.a.receive(encode_envelope(sign_envelope(plain, alice)), T0 + 4)
    assert failed(out).reason == "bad_handshake"


def test_auth_with_a_wrong_echo_fails_and_the_dialer_is_told(flow: Flow) -> None:
    flow.ack()
    echo = base64.b64encode(b"\x0a" * 32).decode()
    out = flow.a.receive(flow.forge_auth(payload={"echo": echo}), T0 + 4)
    assert failed(out).reason == "bad_handshake"
    # The auth itself was authentic, so keys exist and the refusal can be sent (SPEC 4).
    (wire,) = sends(out)
    result = decode_envelope(wire)
    assert result.type == "auth_result" and result.re == AUTH_ID
    assert open_envelope(result, flow.keys()[1]) == {
        "ok": False, "level": None, "reason": "bad_handshake"
    }


@pytest.mark.parametrize(
    "payload",
    [{"token": 5}, {"token": "t" * 257}, {"attest": "cert"}, {"attest": [1]}, {"extra": 1}],
    ids=repr,
)
def test_auth_with_a_malformed_payload_fails(flow: Flow, payload: dict[str, Any]) -> None:
    flow.ack()
    out = flow.a.receive(flow.forge_auth(payload=payload), T0 + 4)
    assert failed(out).reason == "bad_handshake"


def test_auth_answering_another_hello_ack_fails(flow: Flow) -> None:
    flow.ack()
    assert failed(flow.a.receive(flow.forge_auth(re="e" * 32), T0 + 4)).reason == "bad_handshake"


# --- bad_handshake: auth_result (a dialer never trusts an unverified ok) ----------------


def test_auth_result_signed_by_another_key_is_not_success(flow: Flow, carol: Identity) -> None:
    flow.auth()
    forged = sign_as(decode_envelope(flow.forge_result()), carol)
    out = flow.d.receive(forged, T0 + 5)
    assert failed(out).reason == "bad_handshake" and flow.d.result is None


def test_auth_result_from_another_node_is_not_success(flow: Flow, carol: Identity) -> None:
    flow.auth()
    out = flow.d.receive(flow.forge_result(signer=carol), T0 + 5)
    assert failed(out).reason == "bad_handshake" and flow.d.result is None


@pytest.mark.parametrize("which", ["random key", "dialer's own direction key"])
def test_auth_result_whose_box_does_not_open_is_not_success(flow: Flow, which: str) -> None:
    flow.auth()
    key = bytes(32) if which == "random key" else flow.keys()[0]
    out = flow.d.receive(flow.forge_result(key=key), T0 + 5)
    assert failed(out).reason == "bad_handshake" and flow.d.result is None


@pytest.mark.parametrize(
    "payload",
    [{"ok": "true"}, {"ok": 1}, {"ok": None}, {"level": "admin"}, {"level": None},
     {"extra": 1}],
    ids=repr,
)
def test_auth_result_with_a_malformed_payload_is_not_success(
    flow: Flow, payload: dict[str, Any]
) -> None:
    flow.auth()
    out = flow.d.receive(flow.forge_result(payload=payload), T0 + 5)
    assert failed(out).reason == "bad_handshake" and flow.d.result is None


def test_auth_result_answering_another_auth_is_not_success(flow: Flow) -> None:
    flow.auth()
    out = flow.d.receive(flow.forge_result(re="f" * 32), T0 + 5)
    assert failed(out).reason == "bad_handshake"


def test_unsealed_auth_result_is_not_success(flow: Flow, bob: Identity) -> None:
    auth = decode_envelope(flow.auth())
    plain = make_envelope("auth_result", msg_id=RESULT_ID, re=auth.msg_id, src=bob.node_id,
                          dst=auth.src, ts=T0 + 4, seq=0,
                          data={"ok": True, "level": "trusted", "reason": None})
    out = flow.d.receive(encode_envelope(sign_envelope(plain, bob)), T0 + 5)
    assert failed(out).reason == "bad_handshake" and flow.d.result is None


def test_refusal_with_an_unknown_reason_is_reported_as_bad_handshake(flow: Flow) -> None:
    flow.auth()
    out = flow.d.receive(flow.forge_result(payload={"ok": False, "level": None,
                                                    "reason": "because"}), T0 + 5)
    f = failed(out)
    assert f.reason == "bad_handshake" and f.remote


# --- refusal via admit() ----------------------------------------------------------------


@pytest.mark.parametrize("reason", ["pairing_required", "blocked", "key_mismatch", "busy"])
def test_acceptor_refusal_reaches_the_dialer_as_a_remote_failure(flow: Flow, reason: str) -> None:
    flow.acceptor_admission()
    out = flow.a.admit(Decision(None, reason), T0 + 5)
    assert failed(out).reason == reason and not failed(out).remote
    (wire,) = sends(out)
    assert open_envelope(decode_envelope(wire), flow.keys()[1]) == {
        "ok": False, "level": None, "reason": reason
    }
    (d_failed,) = flow.d.receive(wire, T0 + 6)
    assert isinstance(d_failed, Failed) and (d_failed.reason, d_failed.remote) == (reason, True)
    assert flow.d.result is None and flow.a.result is None


def test_dialer_refusal_fails_locally_and_sends_nothing(flow: Flow) -> None:
    flow.d.receive(flow.ack(), T0 + 2)
    out = flow.d.admit(Decision(None, "key_mismatch"), T0 + 3)
    assert failed(out).reason == "key_mismatch" and not failed(out).remote
    assert not sends(out) and flow.d.done


# --- time -------------------------------------------------------------------------------


def test_both_sides_time_out_after_10_seconds(flow: Flow) -> None:
    flow.hello()
    for m in (flow.d, flow.a):
        assert m.next_deadline() == T0 + 10_000
        assert m.on_timer(T0 + 9_999) == []
        assert failed(m.on_timer(T0 + 10_000)).reason == "timeout"
        assert m.done and m.next_deadline() is None
        assert m.on_timer(T0 + 20_000) == []


def test_timeout_is_configurable(rng_factory: Any, alice: Identity) -> None:
    d = Dialer(alice, rng=rng_factory("t"), now=T0, timeout_ms=500)
    d.start(T0)
    assert d.next_deadline() == T0 + 500
    assert failed(d.on_timer(T0 + 500)).reason == "timeout"


def test_a_frame_arriving_after_the_deadline_fails_with_timeout(flow: Flow) -> None:
    hello = flow.hello()
    out = flow.a.receive(hello, T0 + 10_000)
    assert failed(out).reason == "timeout" and not sends(out)


def test_the_deadline_holds_across_a_slow_but_timely_exchange(flow: Flow) -> None:
    (ack,) = sends(flow.a.receive(flow.hello(), T0 + 9_000))
    assert flow.d.on_timer(T0 + 9_500) == []
    assert isinstance(flow.d.receive(ack, T0 + 9_999)[0], NeedAdmission)


# --- state discipline -------------------------------------------------------------------


def test_machines_ignore_frames_once_finished(flow: Flow) -> None:
    flow.acceptor_admission()
    out = flow.a.admit(Decision("trusted"), T0 + 5)
    (wire,) = sends(out)
    assert isinstance(flow.d.receive(wire, T0 + 6)[0], Established)
    assert flow.d.receive(wire, T0 + 7) == []
    assert flow.a.receive(flow.auth_wire, T0 + 7) == []


def test_acceptor_refuses_auth_before_hello(flow: Flow, rng_factory: Any, bob: Identity) -> None:
    wire = flow.auth()
    fresh = Acceptor(bob, rng=rng_factory("fresh"), now=T0)
    assert failed(fresh.receive(wire, T0 + 1)).reason == "bad_handshake"


def test_dialer_refuses_a_hello_in_place_of_hello_ack(flow: Flow) -> None:
    assert failed(flow.d.receive(flow.hello(), T0 + 1)).reason == "bad_handshake"


@pytest.mark.parametrize("frame", ["", "{}", "not json", b"\xff", '{"v":1}', "[]"])
def test_garbage_frame_fails_with_bad_handshake(flow: Flow, frame: str | bytes) -> None:
    flow.hello()
    assert failed(flow.a.receive(frame, T0)).reason == "bad_handshake"


def test_start_twice_and_admit_without_a_pending_admission_are_local_errors(flow: Flow) -> None:
    flow.hello()
    with pytest.raises(LocalProtocolError):
        flow.d.start(T0)
    with pytest.raises(LocalProtocolError):
        flow.d.admit(Decision("trusted"), T0)
    with pytest.raises(LocalProtocolError):
        flow.a.admit(Decision("trusted"), T0)


def test_machines_accept_decoded_envelopes_as_well_as_text(flow: Flow) -> None:
    out = flow.a.receive(decode_envelope(flow.hello()), T0)
    assert isinstance(out[0], Send)
