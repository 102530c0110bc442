"""Handshake checks that only a correctly signed (and sealed) frame can reach (SPEC 4).

Each forged frame here passes every check but one: it is signed by the key it claims
and, where the step is sealed, sealed with the right direction's key, so the frame is
refused for the one thing it gets wrong — its type, its ``re``, the state it arrives
in, its size — and not because a signature or a box failed. Every forging helper is
first shown to be accepted when nothing is changed.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hd_protocol import (
    Acceptor,
    Decision,
    Dialer,
    Established,
    Failed,
    Identity,
    LocalProtocolError,
    NeedAdmission,
    ProtocolError,
    decode_envelope,
    derive_session_keys,
    encode_envelope,
    make_envelope,
    open_envelope,
    seal_envelope,
    sign_envelope,
    signing_bytes,
)
from hd_protocol.peer.handshake import Send, State
from hd_protocol.peer.hello import transcript_hash

T0 = 1_764_000_000_000


def _eph_seed(rng: Any, eph: str) -> bytes:
    """The 32 rng bytes whose X25519 public key is ``eph``."""
    for out in rng.outputs:
        if len(out) == 32:
            pub = X25519PrivateKey.from_private_bytes(out).public_key()
            if base64.b64encode(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode() == eph:
                return bytes(out)
    raise AssertionError("eph was not drawn from this rng")


class Run:
    """alice dials bob; each step runs the steps before it once, in order."""

    def __init__(self, rng_factory: Any, alice: Identity, bob: Identity, *,
                 dialer_kw: dict[str, Any] | None = None,
                 acceptor_kw: dict[str, Any] | None = None, seed: str = "neg") -> None:
        self.alice, self.bob = alice, bob
        self.drng, self.arng = rng_factory(seed + "/dialer"), rng_factory(seed + "/acceptor")
        self.d = Dialer(alice, rng=self.drng, now=T0, **{"node_name": "alice", **(dialer_kw or {})})
        self.a = Acceptor(bob, rng=self.arng, now=T0, **{"node_name": "bob", **(acceptor_kw or {})})
        self._hello = self._ack = self._auth = ""

    def hello(self) -> str:
        if not self._hello:
            (out,) = self.d.start(T0)
            assert isinstance(out, Send)
            self._hello = out.wire
        return self._hello

    def ack(self) -> str:
        if not self._ack:
            (out,) = self.a.receive(self.hello(), T0 + 1)
            assert isinstance(out, Send)
            self._ack = out.wire
        return self._ack

    def dialer_admission(self) -> NeedAdmission:
        (need,) = self.d.receive(self.ack(), T0 + 2)
        assert isinstance(need, NeedAdmission)
        return need

    def auth(self) -> str:
        if not self._auth:
            self.dialer_admission()
            (out,) = self.d.admit(Decision("trusted"), T0 + 3)
            assert isinstance(out, Send)
            self._auth = out.wire
        return self._auth

    def acceptor_admission(self) -> NeedAdmission:
        (need,) = self.a.receive(self.auth(), T0 + 4)
        assert isinstance(need, NeedAdmission)
        return need

    def keys(self) -> tuple[bytes, bytes]:
        """(dialer->acceptor, acceptor->dialer) of this run."""
        hello, ack = decode_envelope(self.hello()), decode_envelope(self.ack())
        seed = _eph_seed(self.drng, hello.data["eph"])
        return derive_session_keys(seed, ack.data["eph"], hello, ack)

    # forging ---------------------------------------------------------------------------

    def sealed_to_acceptor(self, type_: str, payload: dict[str, Any] | None = None,
                           **head: Any) -> str:
        """What the dialer would send as ``auth``, under ``type_``."""
        ack = decode_envelope(self.ack())
        fields: dict[str, Any] = {"msg_id": "a" * 32, "re": ack.msg_id,
                                  "src": self.alice.node_id, "dst": self.bob.node_id,
                                  "ts": T0 + 3, "seq": 0, **head}
        body = payload if payload is not None else {
            "echo": ack.data["nonce"], "token": None, "attest": None}
        env = seal_envelope(make_envelope(type_, **fields), self.keys()[0], body)
        return encode_envelope(sign_envelope(env, self.alice))

    def sealed_to_dialer(self, type_: str, payload: dict[str, Any] | None = None,
                         **head: Any) -> str:
        """What the acceptor would send as ``auth_result``, under ``type_``."""
        auth = decode_envelope(self.auth())
        fields: dict[str, Any] = {"msg_id": "b" * 32, "re": auth.msg_id,
                                  "src": self.bob.node_id, "dst": self.alice.node_id,
                                  "ts": T0 + 4, "seq": 0, **head}
        body = payload if payload is not None else {
            "ok": True, "level": "trusted", "reason": None}
        env = seal_envelope(make_envelope(type_, **fields), self.keys()[1], body)
        return encode_envelope(sign_envelope(env, self.bob))


def resign(wire: str, signer: Identity, data: dict[str, Any] | None = None,
           **fields: Any) -> str:
    """Change fields (and data members) of a frame and sign it again, correctly."""
    env = decode_envelope(wire)
    env = dataclasses.replace(env, data={**env.data, **(data or {})}, sig="", **fields)
    return encode_envelope(sign_envelope(env, signer))


def failed(outputs: list[Any], reason: str = "bad_handshake") -> Failed:
    assert isinstance(outputs, list), outputs
    assert outputs and isinstance(outputs[-1], Failed), outputs
    assert not any(isinstance(o, Established | NeedAdmission) for o in outputs)
    assert outputs[-1].reason == reason, outputs[-1]
    return outputs[-1]


def sends(outputs: list[Any]) -> list[str]:
    return [o.wire for o in outputs if isinstance(o, Send)]


@pytest.fixture
def run(rng_factory: Any, alice: Identity, bob: Identity) -> Run:
    return Run(rng_factory, alice, bob)


def test_the_forged_frames_are_accepted_when_their_type_is_the_expected_one(
    rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    r = Run(rng_factory, alice, bob)
    assert sends(Acceptor(bob, rng=rng_factory("x"), now=T0).receive(
        resign(r.hello(), alice), T0))
    r.ack()
    (need,) = r.a.receive(r.sealed_to_acceptor("auth"), T0 + 4)
    assert isinstance(need, NeedAdmission)
    r2 = Run(rng_factory, alice, bob, seed="neg2")
    r2.auth()
    (est,) = r2.d.receive(r2.sealed_to_dialer("auth_result"), T0 + 5)
    assert isinstance(est, Established)


# --- a correctly signed frame of the wrong type ------------------------------------------


@pytest.mark.parametrize("type_", ["hello_ack", "auth", "presence", "hellox"])
def test_acceptor_refuses_a_signed_frame_with_hello_fields_under_another_type(
    run: Run, alice: Identity, type_: str
) -> None:
    out = run.a.receive(resign(run.hello(), alice, type=type_), T0)
    failed(out)
    assert not sends(out) and run.a.peer is None


@pytest.mark.parametrize("type_", ["hello", "auth_result", "presence"])
def test_dialer_refuses_a_signed_frame_with_hello_ack_fields_under_another_type(
    run: Run, bob: Identity, type_: str
) -> None:
    out = run.d.receive(resign(run.ack(), bob, type=type_), T0 + 2)
    failed(out)
    assert run.d.peer is None and run.d.state is State.FAILED


@pytest.mark.parametrize("type_", ["auth_result", "hello", "peer_chat"])
def test_acceptor_refuses_a_sealed_auth_payload_under_another_type(
    run: Run, type_: str
) -> None:
    run.ack()
    out = run.a.receive(run.sealed_to_acceptor(type_), T0 + 4)
    failed(out)
    assert not sends(out)  # nothing authentic arrived: no auth_result to answer with


@pytest.mark.parametrize("type_", ["auth", "hello_ack", "peer_chat"])
def test_dialer_refuses_a_sealed_auth_result_payload_under_another_type(
    run: Run, type_: str
) -> None:
    run.auth()
    out = run.d.receive(run.sealed_to_dialer(type_), T0 + 5)
    failed(out)
    assert run.d.result is None


def test_acceptor_refuses_a_hello_that_answers_something(run: Run, alice: Identity) -> None:
    out = run.a.receive(resign(run.hello(), alice, re="e" * 32), T0)
    failed(out)
    assert not sends(out) and run.a.peer is None


# --- a frame the machine does not wait for --------------------------------------------


def test_acceptor_fails_on_a_frame_while_its_admission_is_pending_and_tells_the_dialer(
    run: Run,
) -> None:
    run.acceptor_admission()
    out = run.a.receive(run.sealed_to_acceptor("auth", msg_id="c" * 32), T0 + 5)
    failed(out)
    (wire,) = sends(out)  # the auth was authentic: the dialer is told, sealed
    assert open_envelope(decode_envelope(wire), run.keys()[1]) == {
        "ok": False, "level": None, "reason": "bad_handshake"}
    assert run.a.state is State.FAILED and run.a.done
    with pytest.raises(LocalProtocolError):
        run.a.admit(Decision("trusted"), T0 + 6)


def test_dialer_fails_on_a_frame_while_its_admission_is_pending(run: Run) -> None:
    run.dialer_admission()
    out = run.d.receive(run.ack(), T0 + 3)
    failed(out)
    assert not sends(out) and run.d.state is State.FAILED
    with pytest.raises(LocalProtocolError):
        run.d.admit(Decision("trusted"), T0 + 4)


def test_dialer_fails_on_a_frame_before_start(
    run: Run, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    other = Run(rng_factory, alice, bob, seed="other")
    out = run.d.receive(other.ack(), T0)
    failed(out)
    assert not sends(out) and run.d.state is State.FAILED
    with pytest.raises(LocalProtocolError):
        run.d.start(T0)


def test_dialer_ignores_every_frame_after_a_refusal(run: Run) -> None:
    run.acceptor_admission()
    (refusal, a_failed) = run.a.admit(Decision(None, "pairing_required"), T0 + 5)
    assert isinstance(refusal, Send) and isinstance(a_failed, Failed)
    out = run.d.receive(refusal.wire, T0 + 6)
    assert failed(out, "pairing_required").remote
    assert run.d.state is State.FAILED and run.d.done and run.d.next_deadline() is None
    # An ok answering the same auth, correctly sealed and signed, comes too late.
    assert run.d.receive(run.sealed_to_dialer("auth_result"), T0 + 7) == []
    assert run.d.result is None and run.d.failure is out[-1]
    assert run.d.on_timer(T0 + 60_000) == []


# --- what the machines were configured with -------------------------------------------


def test_acceptor_takes_a_hello_of_exactly_its_configured_size_and_not_one_byte_more(
    run: Run, rng_factory: Any, bob: Identity
) -> None:
    hello = run.hello()
    size = len(hello.encode())
    fits = Acceptor(bob, rng=rng_factory("fits"), now=T0, max_bytes=size)
    assert sends(fits.receive(hello, T0))
    small = Acceptor(bob, rng=rng_factory("small"), now=T0, max_bytes=size - 1)
    assert f"over {size - 1} bytes" in failed(small.receive(hello, T0)).message


def test_dialer_takes_a_hello_ack_of_exactly_its_configured_size_and_not_one_byte_more(
    rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    size = len(Run(rng_factory, alice, bob).ack().encode())
    fits = Run(rng_factory, alice, bob, dialer_kw={"max_bytes": size})
    fits.dialer_admission()
    small = Run(rng_factory, alice, bob, dialer_kw={"max_bytes": size - 1})
    out = small.d.receive(small.ack(), T0 + 2)
    assert f"over {size - 1} bytes" in failed(out).message


def test_a_node_name_of_64_chars_is_sent_and_accepted_and_65_is_refused(
    rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    r = Run(rng_factory, alice, bob, dialer_kw={"node_name": "n" * 64})
    assert r.acceptor_admission().peer.node_name == "n" * 64
    with pytest.raises(LocalProtocolError) as info:
        Dialer(alice, rng=rng_factory("long"), now=T0, node_name="n" * 65)
    assert info.value.code == "bad_field"
    with pytest.raises(LocalProtocolError):
        Acceptor(bob, rng=rng_factory("long"), now=T0, node_name="n" * 65)


def test_capabilities_up_to_the_configured_count_of_64_char_names_are_accepted(
    run: Run, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    caps = [f"{i:02d}" + "c" * 62 for i in range(32)]
    out = run.a.receive(resign(run.hello(), alice, data={"capabilities": caps}), T0)
    assert sends(out) and run.a.peer is not None and run.a.peer.capabilities == tuple(caps)
    for bad in (caps + ["c"], ["c" * 65]):
        a = Acceptor(bob, rng=rng_factory("caps"), now=T0)
        failed(a.receive(resign(run.hello(), alice, data={"capabilities": bad}), T0))
    few = Acceptor(bob, rng=rng_factory("few"), now=T0, max_capabilities=2)
    assert sends(few.receive(resign(run.hello(), alice, data={"capabilities": ["a", "b"]}),
                             T0))
    fewer = Acceptor(bob, rng=rng_factory("fewer"), now=T0, max_capabilities=2)
    failed(fewer.receive(resign(run.hello(), alice, data={"capabilities": ["a", "b", "c"]}),
                         T0))


def test_dialer_applies_the_capability_rules_to_the_hello_ack(
    rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    r = Run(rng_factory, alice, bob, dialer_kw={"max_capabilities": 1})
    out = r.d.receive(resign(r.ack(), bob, data={"capabilities": ["a", "b"]}), T0 + 2)
    failed(out)
    r2 = Run(rng_factory, alice, bob, dialer_kw={"max_capabilities": 1})
    (need,) = r2.d.receive(resign(r2.ack(), bob, data={"capabilities": ["a"]}), T0 + 2)
    assert isinstance(need, NeedAdmission) and need.peer.capabilities == ("a",)


@pytest.mark.parametrize(("token", "attest"), [("t" * 256, None), (None, {}),
                                                ("t", {"cert": 1})])
def test_auth_with_a_token_up_to_256_chars_and_an_object_attestation_needs_admission(
    run: Run, token: str | None, attest: dict[str, Any] | None
) -> None:
    ack = decode_envelope(run.ack())
    payload = {"echo": ack.data["nonce"], "token": token, "attest": attest}
    (need,) = run.a.receive(run.sealed_to_acceptor("auth", payload), T0 + 4)
    assert isinstance(need, NeedAdmission) and (need.token, need.attest) == (token, attest)


@pytest.mark.parametrize("token", ["t" * 257, 7, ["t"], True])
def test_auth_with_a_token_that_is_not_a_short_string_fails_and_the_dialer_is_told(
    run: Run, token: Any
) -> None:
    ack = decode_envelope(run.ack())
    payload = {"echo": ack.data["nonce"], "token": token, "attest": None}
    out = run.a.receive(run.sealed_to_acceptor("auth", payload), T0 + 4)
    failed(out)
    assert len(sends(out)) == 1


# --- the transcript ------------------------------------------------------------------------


def test_both_results_carry_the_sha256_of_the_signing_bytes_of_hello_and_hello_ack(
    run: Run, rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    run.acceptor_admission()
    result_wire, est_a = run.a.admit(Decision("trusted"), T0 + 5)
    assert isinstance(result_wire, Send) and isinstance(est_a, Established)
    (est_d,) = run.d.receive(result_wire.wire, T0 + 6)
    assert isinstance(est_d, Established)
    hello, ack = decode_envelope(run.hello()), decode_envelope(run.ack())
    expected = hashlib.sha256(signing_bytes(hello) + signing_bytes(ack)).digest()
    assert transcript_hash(hello, ack) == expected
    assert est_d.result.transcript_hash == est_a.result.transcript_hash == expected
    other = Run(rng_factory, alice, bob, seed="other")
    other_th = transcript_hash(decode_envelope(other.hello()), decode_envelope(other.ack()))
    assert other_th != expected


# --- local errors, refusals without a reason, time ------------------------------------------


def test_calls_out_of_turn_are_local_state_errors(run: Run) -> None:
    run.hello()
    for call in (lambda: run.d.start(T0), lambda: run.d.admit(Decision("trusted"), T0),
                 lambda: run.a.admit(Decision("trusted"), T0)):
        with pytest.raises(LocalProtocolError) as info:
            call()
        assert info.value.code == "state"


def test_a_refusal_without_a_reason_is_pairing_required_on_both_sides(
    rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    r = Run(rng_factory, alice, bob)
    r.dialer_admission()
    assert failed(r.d.admit(Decision(None), T0 + 3), "pairing_required").remote is False
    r2 = Run(rng_factory, alice, bob, seed="r2")
    r2.acceptor_admission()
    out = r2.a.admit(Decision(None), T0 + 5)
    failed(out, "pairing_required")
    (wire,) = sends(out)
    assert open_envelope(decode_envelope(wire), r2.keys()[1])["reason"] == "pairing_required"


def test_the_frames_after_hello_carry_the_wall_clock_of_their_step(run: Run) -> None:
    (ack,) = run.a.receive(run.hello(), T0 + 1, wall=42)
    assert isinstance(ack, Send) and decode_envelope(ack.wire).ts == 42
    run._ack = ack.wire
    run.d.receive(run.ack(), T0 + 2)
    (auth,) = run.d.admit(Decision("trusted"), T0 + 3, wall=43)
    assert isinstance(auth, Send) and decode_envelope(auth.wire).ts == 43
    run.a.receive(auth.wire, T0 + 4)
    result, _ = run.a.admit(Decision("trusted"), T0 + 5, wall=44)
    assert isinstance(result, Send) and decode_envelope(result.wire).ts == 44


def test_an_acceptor_whose_admission_times_out_tells_the_dialer_nothing(
    rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    r = Run(rng_factory, alice, bob)
    r.acceptor_admission()
    assert r.a.on_timer(T0 + 10_000) == [Failed("timeout", "handshake did not finish in time")]
    r2 = Run(rng_factory, alice, bob, seed="late")
    r2.acceptor_admission()
    late = r2.sealed_to_acceptor("auth", msg_id="c" * 32)
    assert r2.a.receive(late, T0 + 10_000) == [
        Failed("timeout", "handshake did not finish in time")]


def test_derive_session_keys_refuses_an_ephemeral_key_that_is_not_32_bytes(run: Run) -> None:
    hello, ack = decode_envelope(run.hello()), decode_envelope(run.ack())
    short = base64.b64encode(b"\x01" * 31).decode()
    with pytest.raises(ProtocolError) as info:
        derive_session_keys(b"\x02" * 32, short, hello, ack)
    assert info.value.code == "bad_field"


def test_a_malformed_hello_ack_is_refused_as_malformed_before_its_sender_is_judged(
    rng_factory: Any, alice: Identity, bob: Identity, carol: Identity
) -> None:
    r = Run(rng_factory, alice, bob, dialer_kw={"expected_node_id": carol.node_id})
    hello = r.hello()
    (ack,) = sends(r.a.receive(resign(hello, alice, dst=None), T0))
    short = base64.b64encode(b"\x01" * 31).decode()
    failed(r.d.receive(resign(ack, bob, data={"eph": short}), T0 + 2))  # not wrong_node


def test_a_machine_starts_unnamed_and_without_a_failure(
    rng_factory: Any, alice: Identity, bob: Identity
) -> None:
    d = Dialer(alice, rng=rng_factory("plain"), now=T0)
    assert d.failure is None and d.result is None
    (hello,) = d.start(T0)
    assert isinstance(hello, Send) and decode_envelope(hello.wire).data["node_name"] == ""
