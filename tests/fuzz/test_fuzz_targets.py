"""A short hypothesis-driven run of the fuzz targets in ``fuzz/targets.py``.

The same targets run for minutes under atheris (``make fuzz``); here each gets a few
hundred inputs per test run: random bytes and text, valid frames with one field replaced
by random JSON (in and out of the canonical domain), random byte flips of valid frames,
and frames a hostile peer signed and sealed with fuzzed content. A target raises for
anything but ``ProtocolError`` from hd_protocol, or when one of its invariants breaks.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hd_protocol import ProtocolError, canonical_json
from hd_protocol.envelope import FIELDS


def _load_targets() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "fuzz" / "targets.py"
    spec = importlib.util.spec_from_file_location("hd_fuzz_targets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


targets = _load_targets()
SEEDS: dict[str, list[bytes]] = targets.seeds()
NAMES = sorted(targets.TARGETS)

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Values inside the canonical domain (what a hostile but well-formed peer can sign).
canonical_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text(max_size=24),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=8), inner, max_size=4),
    max_leaves=10,
)
# Anything JSON can spell, and more: floats, NaN, huge integers, non-ASCII keys, lone
# surrogates (escaped or raw).
wide_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=24)
    | st.integers(min_value=2**53 - 2, max_value=2**70),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _dumps(value: Any, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")


def _run(name: str, data: bytes) -> str:
    label = targets.TARGETS[name](data)
    assert isinstance(label, str)
    return label


# --- unstructured -----------------------------------------------------------------------


@FUZZ
@given(name=st.sampled_from(NAMES), data=st.binary(max_size=1500))
def test_random_bytes_only_raise_protocol_errors(name: str, data: bytes) -> None:
    _run(name, data)


@FUZZ
@given(
    name=st.sampled_from(["envelope", "ws", "invite"]),
    prefix=st.sampled_from(["", "hd1:", "{", '{"v":1,', '{"channel":"network","event":']),
    text=st.text(max_size=300),
)
def test_random_text_only_raises_protocol_errors(name: str, prefix: str, text: str) -> None:
    _run(name, (prefix + text).encode("utf-8", "surrogatepass"))


NASTY = [
    b"",
    b"\xef\xbb\xbf{}",
    b"[" * 50_000 + b"]" * 50_000,
    b'{"a":' * 40 + b"1" + b"}" * 40,
    b'{"v":1,"ts":' + b"9" * 5000 + b"}",
    b'{"v":NaN}',
    b'{"v":1e3}',
    b'{"v":1,"v":1}',
    b'{"\\ud800":1}',
    b'{"channel":"\\udfff","event":"x"}',
    b'"\\u0000"',
    b"\x00\xff\xfe",
    b"hd1:" + b"A" * 9000,
    b"hd1:e30",
    b"hd1:" + base64.urlsafe_b64encode(b'{"a":1e999}').rstrip(b"="),
]


@pytest.mark.parametrize("data", NASTY, ids=range(len(NASTY)))
@pytest.mark.parametrize("name", NAMES)
def test_nasty_inputs_are_refused_cleanly(name: str, data: bytes) -> None:
    # Raw-frame selectors of the stateful targets: every waiting point of the handshake
    # machines (admit or refuse), a trusted and a guest session.
    modes = {"handshake": range(8), "session": (0, 32)}.get(name)
    inputs = [data] if modes is None else [bytes([m]) + data for m in modes]
    for frame in inputs:
        label = _run(name, frame)
        if name != "handshake_state":  # its input is no frame: the peer builds one from it
            assert not label.startswith(("ok", "established", "message", "reply", "pong"))


# --- structured mutations of valid frames -----------------------------------------------


def _seed_object(name: str, index: int) -> dict[str, Any]:
    seed = SEEDS[name][index]
    obj = json.loads(seed.decode())
    assert isinstance(obj, dict)
    return obj


@FUZZ
@given(
    index=st.integers(0, len(SEEDS["envelope"]) - 1),
    field=st.sampled_from([*FIELDS, "extra"]),
    action=st.sampled_from(["replace", "delete", "replace_in_data"]),
    value=wide_values,
    ascii_only=st.booleans(),
)
def test_envelope_with_a_field_replaced_by_random_json(
    index: int, field: str, action: str, value: Any, ascii_only: bool
) -> None:
    env = _seed_object("envelope", index)
    if action == "replace":
        env[field] = value
    elif action == "delete":
        env.pop(field, None)
    else:
        env["data"] = {**env["data"], field: value}
    _run("envelope", _dumps(env, ascii_only))


@FUZZ
@given(
    index=st.integers(0, len(SEEDS["ws"]) - 1),
    field=st.sampled_from(["channel", "event", "data", "extra"]),
    value=wide_values,
    ascii_only=st.booleans(),
)
def test_ws_frame_with_a_field_replaced_by_random_json(
    index: int, field: str, value: Any, ascii_only: bool
) -> None:
    frame = _seed_object("ws", index)
    frame[field] = value
    _run("ws", _dumps(frame, ascii_only))


def _invite_body() -> dict[str, Any]:
    text = SEEDS["invite"][0].decode()
    b64 = text[len("hd1:"):]
    body = json.loads(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))
    assert isinstance(body, dict)
    return body


@FUZZ
@given(
    field=st.sampled_from(["addrs", "exp", "node_id", "public_key", "token", "extra"]),
    nested=st.booleans(),
    value=wide_values,
)
def test_invite_with_a_field_replaced_by_random_json(
    field: str, nested: bool, value: Any
) -> None:
    body = _invite_body()
    if nested:
        body["addrs"] = [{**body["addrs"][0], field: value}]
    else:
        body[field] = value
    raw = _dumps(body, True)
    _run("invite", b"hd1:" + base64.urlsafe_b64encode(raw).rstrip(b"="))


@FUZZ
@given(
    name=st.sampled_from(NAMES),
    pick=st.integers(0, 1000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1,
                   max_size=4),
    cut=st.none() | st.integers(0, 10_000),
)
def test_byte_flips_of_valid_frames(
    name: str, pick: int, flips: list[tuple[int, int]], cut: int | None
) -> None:
    seeds = SEEDS[name]
    data = bytearray(seeds[pick % len(seeds)])
    for pos, mask in flips:
        i = 1 + pos % (len(data) - 1)  # keep the mode byte of the stateful targets
        data[i] ^= mask
    if cut is not None:
        del data[cut % len(data):]
    _run(name, bytes(data))


@FUZZ
@given(
    which=st.integers(0, 3),
    slot=st.integers(0, 15),
    accept=st.booleans(),
    value=canonical_values,
)
def test_hostile_peer_signing_fuzzed_handshake_content(
    which: int, slot: int, accept: bool, value: Any
) -> None:
    _run("handshake", bytes([128 | which | slot << 2 | accept << 6]) + canonical_json(value))


@FUZZ
@given(selector=st.integers(0, 127), value=canonical_values)
def test_hostile_peer_sealing_fuzzed_session_messages(selector: int, value: Any) -> None:
    _run("session", bytes([selector | 1]) + canonical_json(value))


@FUZZ
@given(
    state=st.integers(0, len(targets.HS_STATES) - 1),
    type_=st.integers(0, len(targets.HS_STATE_TYPES) - 1),
    flags=st.sampled_from([0, 8, 16, 32, 24, 56]),
    slot=st.integers(0, 255),
    value=canonical_values,
)
def test_hostile_peer_sending_any_type_in_any_handshake_state(
    state: int, type_: int, flags: int, slot: int, value: Any
) -> None:
    _run("handshake_state", bytes([state, type_ | flags, slot]) + canonical_json(value))


@FUZZ
@given(index=st.integers(0, len(SEEDS["invite"]) - 1), seeds=st.lists(
    st.integers(0, 2**32 - 1), min_size=1, max_size=6))
def test_structural_invite_mutations_only_raise_protocol_errors(
    index: int, seeds: list[int]
) -> None:
    data = SEEDS["invite"][index]
    for seed in seeds:  # as libFuzzer does: each mutation starts from the last one
        data = targets.mutate_invite(data, seed)
        _run("invite", data)


# --- the targets themselves -------------------------------------------------------------


def test_seeds_reach_the_states_behind_the_signature_checks() -> None:
    labels = {name: [_run(name, s) for s in SEEDS[name]] for name in NAMES}
    assert "ok:verified" in labels["envelope"]
    assert set(labels["ws"]) == {"ok"}
    assert set(labels["invite"]) == {"ok"}
    # raw seeds: acceptor after a valid hello and dialer after a valid hello_ack
    assert labels["handshake"][1] == "failed:blocked"  # we refused an admissible peer
    assert labels["handshake"][3] == "established"
    assert labels["handshake"][4] == "established"  # acceptor admitted the auth seed
    assert labels["handshake"].count("established") >= 5  # the hostile signer's keeps too
    assert {"message", "reply", "pong", "closed", "peererror"} <= set(labels["session"])
    assert {"open", "message", "closed"} <= set(labels["connection"])
    assert "message" in labels["preauth_ws"]
    assert {"closed:1009", "closed:1008", "closed:1000"} <= set(labels["preauth_ws"])
    assert {"ignored", "established", "send", "failed:bad_handshake", "failed:blocked"} <= set(
        labels["handshake_state"])


def test_every_waiting_handshake_state_moves_on_for_the_honest_frame_only() -> None:
    for i, name in enumerate(targets.HS_STATES):
        stage = targets.hs_stage(name)
        keep = len(stage.content) + 3
        for t, type_ in enumerate(targets.HS_STATE_TYPES):
            label = _run("handshake_state", bytes([i, t, keep]) + b"null")
            if name.endswith((":done", ":refused")):
                assert label == "ignored", (name, type_)
            elif type_ == stage.expected:
                assert not label.startswith("failed:bad"), (name, type_, label)
            else:
                assert label == "failed:bad_handshake", (name, type_, label)


def test_a_machine_that_takes_a_frame_of_another_type_would_be_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hd_protocol.peer.handshake as hs

    strict = hs._Machine._open_sealed

    def lax(self: Any, env: Any, expected_type: str, peer: Any) -> Any:
        return strict(self, env, env.type, peer)  # the type check, taken out

    monkeypatch.setattr(hs._Machine, "_open_sealed", lax)
    state = targets.HS_STATES.index("acceptor:wait_auth")
    other = targets.HS_STATE_TYPES.index("auth_result")
    with pytest.raises(targets.InvariantError, match="took a auth_result"):
        _run("handshake_state", bytes([state, other, 6]) + b"null")


def test_a_dialer_that_listens_after_a_refusal_would_be_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hd_protocol.peer.handshake as hs

    original = hs.Dialer._on_auth_result

    def forgetful(self: Any, env: Any) -> Any:
        out = original(self, env)
        if self.state is hs.State.FAILED:
            self.state = hs.State.WAIT_AUTH_RESULT  # the refusal, forgotten
        return out

    monkeypatch.setattr(hs.Dialer, "_on_auth_result", forgetful)
    state = targets.HS_STATES.index("dialer:refused")
    natural = targets.HS_STATE_TYPES.index("auth_result")
    with pytest.raises(targets.InvariantError):
        _run("handshake_state", bytes([state, natural, 6]) + b"null")


def test_structural_invite_mutations_reach_the_field_checks() -> None:
    """Unlike byte flips of base64 text, nearly every structural mutation decodes to a
    JSON object, and between them they reach every rule of SPEC 4.2."""
    from hd_protocol import ProtocolError, decode_invite

    data, objects, reasons = SEEDS["invite"][0], 0, set()
    for seed in range(400):
        data = targets.mutate_invite(data, seed)
        if isinstance(targets._loose_invite_body(data), dict):
            objects += 1
        try:
            decode_invite(data.decode("utf-8", "surrogateescape"))
            reasons.add("ok")
        except ProtocolError as exc:
            reasons.add(exc.message.split(":")[0])
    assert objects >= 300
    assert {"ok", "not an hd1", "invite fields are addrs, exp, node_id, public_key, token",
            "exp must be a timestamp in ms", "token must be a string of 16..256 chars",
            "node_id does not match public_key", "addrs"} <= reasons, reasons


def test_an_invite_decoder_that_skips_the_length_check_would_be_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hd_protocol.peer.admission as admission

    body = targets._invite_seed_body()
    body["addrs"] = [targets.make_candidate("host", targets._long_url(512))] * 16
    text = targets.encode_invite(**body)
    assert len(text) > 8192 and _run("invite", text.encode()) == "err:bad_invite"
    monkeypatch.setattr(admission, "MAX_INVITE_CHARS", 10**6)
    with pytest.raises(targets.InvariantError, match="accepted"):
        _run("invite", text.encode())


def test_a_forged_admission_would_be_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # The handshake checker must notice an admission under a key that did not sign.
    monkeypatch.setattr(targets, "DIALER", targets.ACCEPTOR)
    with pytest.raises(targets.InvariantError, match="forged"):
        _run("handshake", SEEDS["handshake"][1])


@pytest.mark.parametrize(
    ("name", "attr"),
    [("envelope", "decode_envelope"), ("ws", "decode_ws_frame"), ("invite", "decode_invite")],
)
def test_targets_let_anything_but_protocol_error_escape(
    monkeypatch: pytest.MonkeyPatch, name: str, attr: str
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise KeyError("not a ProtocolError")

    monkeypatch.setattr(targets, attr, boom)
    with pytest.raises(KeyError):
        _run(name, SEEDS[name][0])

    def refuse(*args: object, **kwargs: object) -> None:
        raise ProtocolError("bad_json", "refused")

    monkeypatch.setattr(targets, attr, refuse)
    # (An invite SPEC 4.2 accepts may not be refused: a body that is no object is.)
    data = b"hd1:NQ" if name == "invite" else SEEDS[name][0]
    assert _run(name, data) == "err:bad_json"
    if name == "invite":
        with pytest.raises(targets.InvariantError, match="refused"):
            _run(name, SEEDS[name][0])


def test_an_unstable_round_trip_would_be_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    other = SEEDS["envelope"][1].decode()
    monkeypatch.setattr(targets, "encode_envelope", lambda env: other)
    with pytest.raises(targets.InvariantError, match="encode"):
        _run("envelope", SEEDS["envelope"][0])


def test_hand_built_bytes_that_differ_from_the_reference_would_be_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(targets, "signing_bytes", lambda env: b"hd1-env\n{}")
    with pytest.raises(targets.InvariantError, match="signing bytes"):
        _run("envelope", SEEDS["envelope"][1])


def test_non_string_public_keys_are_protocol_errors_not_crashes() -> None:
    # Regression: node_id_for was lru_cached on its argument, so a list or object
    # public_key from a peer raised TypeError (unhashable) out of decode_invite and
    # out of Acceptor.receive.
    body = _invite_body()
    body["public_key"] = []
    raw = base64.urlsafe_b64encode(canonical_json(body)).rstrip(b"=")
    assert _run("invite", b"hd1:" + raw) == "err:bad_invite"
    # Hostile hello (which 0) with field 5 of the sorted hello data (public_key) replaced.
    label = _run("handshake", bytes([128 | 0 | 5 << 2]) + b'{"k":[1]}')
    assert label == "failed:bad_handshake"


@pytest.mark.parametrize(
    "change",
    [{"addrs": [{"type": ["host"], "url": "ws://h:1/peer-ws", "priority": 1}]},
     {"node_id": None, "public_key": "vtyn2hvp36w6p4d2"}],
    ids=["address type a list", "no key and a null node id"],
)
def test_invites_the_structural_fuzzer_found_are_refused_by_decoder_and_reference(
    change: dict[str, Any],
) -> None:
    # The first raised TypeError out of decode_invite; the second was accepted by the
    # reference (None == None) while the decoder rightly refused it.
    body = {**_invite_body(), **change}
    raw = base64.urlsafe_b64encode(canonical_json(body)).rstrip(b"=")
    assert _run("invite", b"hd1:" + raw) == "err:bad_invite"
