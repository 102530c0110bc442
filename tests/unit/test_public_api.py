"""The stable names of SPEC 12 (all bullets but the state-machine one; stun comes later).

Each documented function must take the documented parameters, by those names and in
that order; anything extra must be optional so the documented call keeps working.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest

import hd_protocol
from hd_protocol import Envelope, Identity

# name -> (documented parameter names, documented return type or None)
FUNCTIONS: dict[str, tuple[tuple[str, ...], Any]] = {
    "canonical_json": (("value",), bytes),
    "node_id_for": (("public_key",), str),
    "verify_signature": (("public_key", "data", "sig"), bool),
    "signing_bytes": (("env",), bytes),
    "sign_envelope": (("env", "identity"), Envelope),
    "verify_envelope": (("env", "public_key"), bool),
    "encode_envelope": (("env",), str),
    "decode_envelope": (("text",), Envelope),
    "seal_envelope": (("env", "key", "payload"), Envelope),
    "open_envelope": (("env", "key"), dict),
    "derive_session_keys": (("own_eph_seed", "peer_eph", "hello", "hello_ack"),
                            tuple[bytes, bytes]),
    # SPEC 12 writes encode_invite(...): its parameters are the SPEC 4.2 invite fields.
    "encode_invite": (("addrs", "exp", "node_id", "public_key", "token"), str),
    "decode_invite": (("text",), dict),
}
ENVELOPE_FIELDS = {"v", "type", "msg_id", "re", "src", "dst", "ts", "ttl", "seq", "data",
                   "box", "sig"}


def check_signature(func: Callable[..., Any], documented: tuple[str, ...]) -> None:
    params = list(inspect.signature(func).parameters.values())
    leading = params[: len(documented)]
    assert [p.name for p in leading] == list(documented)
    assert all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               for p in leading)
    for extra in params[len(documented):]:
        # Anything beyond the documented parameters must be optional.
        assert extra.default is not inspect.Parameter.empty or extra.kind in (
            extra.VAR_POSITIONAL, extra.VAR_KEYWORD
        ), f"{func.__name__}: extra parameter {extra.name} is required"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_is_exported_with_the_documented_signature(name: str) -> None:
    assert name in hd_protocol.__all__
    func = getattr(hd_protocol, name)
    documented, returns = FUNCTIONS[name]
    check_signature(func, documented)
    hint = typing.get_type_hints(func)["return"]
    assert hint == returns or typing.get_origin(hint) is returns


@pytest.mark.parametrize("name", ["CanonicalError", "ProtocolError"])
def test_errors_are_exported_and_carry_a_code(name: str) -> None:
    assert name in hd_protocol.__all__
    cls = getattr(hd_protocol, name)
    assert issubclass(cls, hd_protocol.ProtocolError) and issubclass(cls, Exception)
    assert cls("some_code").code == "some_code"
    assert isinstance(cls().code, str) and cls().code


def test_identity_constructors_and_members() -> None:
    assert "Identity" in hd_protocol.__all__
    check_signature(Identity.from_seed, ("seed",))
    check_signature(Identity.generate, ())  # Identity.generate() with no argument
    ident = Identity.generate()
    assert isinstance(ident.node_id, str) and isinstance(ident.public_key, str)
    check_signature(ident.sign, ("data",))
    assert typing.get_type_hints(Identity.sign)["return"] is str
    assert typing.get_type_hints(Identity.from_seed)["seed"] is bytes


def test_envelope_is_an_immutable_record_of_the_spec_fields() -> None:
    assert "Envelope" in hd_protocol.__all__
    assert dataclasses.is_dataclass(Envelope)
    assert {f.name for f in dataclasses.fields(Envelope)} == ENVELOPE_FIELDS
    assert Envelope.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_documented_calls_work_with_keyword_arguments(alice: Identity, bob: Identity) -> None:
    """Calling by the documented names proves the names, not just their count."""
    env = hd_protocol.make_envelope("ping", msg_id="0" * 32, src=alice.node_id,
                                    dst=bob.node_id, ts=1, seq=1)
    sealed = hd_protocol.seal_envelope(env=env, key=bytes(32), payload={"a": 1})
    signed = hd_protocol.sign_envelope(env=sealed, identity=alice)
    assert hd_protocol.verify_envelope(env=signed, public_key=alice.public_key)
    text = hd_protocol.encode_envelope(env=signed)
    assert hd_protocol.decode_envelope(text=text) == signed
    assert hd_protocol.open_envelope(env=signed, key=bytes(32)) == {"a": 1}
    assert hd_protocol.signing_bytes(env=signed).startswith(b"hd1-env\n")
    assert hd_protocol.canonical_json(value={"b": 1, "a": 2}) == b'{"a":2,"b":1}'
    assert hd_protocol.node_id_for(public_key=alice.public_key) == alice.node_id
    sig = alice.sign(data=b"x")
    assert hd_protocol.verify_signature(public_key=alice.public_key, data=b"x", sig=sig)
    assert Identity.from_seed(seed=bytes(32)).node_id


def test_every_machine_emits_the_one_send_type() -> None:
    from hd_protocol import effects, handshake, session

    assert handshake.Send is session.Send is effects.Send is hd_protocol.Send


def test_remote_and_local_errors_are_apart_and_both_carry_a_code() -> None:
    from hd_protocol import HandshakeError, LocalProtocolError, ProtocolError, RemoteProtocolError

    with pytest.raises(RemoteProtocolError) as remote:
        hd_protocol.decode_envelope("{")
    assert remote.value.code == "bad_json"
    assert issubclass(HandshakeError, RemoteProtocolError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)
    assert issubclass(RemoteProtocolError, ProtocolError)
    with pytest.raises(LocalProtocolError):
        hd_protocol.make_envelope("BAD", msg_id="0" * 32, src="a" * 16, dst=None, ts=0)
