"""Fuzz targets shared by the atheris harnesses (``fuzz/fuzz_*.py``) and the hypothesis
test (``tests/fuzz/test_fuzz_targets.py``).

Every target is a pure function of one ``bytes`` input. The invariant under test: bytes
from a peer can only ever make hd_protocol raise ``ProtocolError`` (the codecs) or return
``Failed`` / ``Dropped`` (the state machines). Any other exception escapes the target and
is a crash. On top of that each target checks properties that must hold for every input:
a decoded value re-encodes to itself, a machine only sends frames it signed itself, a
handshake never reaches admission with a key that did not sign, a replayed frame is never
delivered twice.

Everything is deterministic: identities come from fixed seeds, randomness from a counter
(``det_rng``), time is a fixed ``NOW``. So an honest exchange is the same in every run and
its frames are valid seeds: the fuzzer mutates them and reaches the states behind the
signature checks. The ``signed_*`` targets go further and play an honest-but-hostile
peer: they sign (and seal) frames whose *contents* come from the input, which is the only
way to exercise the code after a signature check.

Each target returns a short label of what happened (``"err:bad_json"``,
``"established"``...) so tests can check that the seeds reach the deep states.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, TextMessage
from wsproto.events import Request as WsRequest

from hd_node.transports.direct import PREAUTH
from hd_protocol import (
    Acceptor,
    CanonicalError,
    Decision,
    Dialer,
    Envelope,
    Identity,
    ProtocolError,
    Rng,
    Session,
    decode_envelope,
    decode_invite,
    decode_ws_frame,
    derive_session_keys,
    encode_envelope,
    encode_invite,
    encode_ws_frame,
    loads_strict,
    make_candidate,
    make_envelope,
    open_envelope,
    seal_envelope,
    sign_envelope,
    signing_bytes,
    verify_envelope,
)
from hd_protocol.envelope import FIELDS
from hd_protocol.peer.connection import Connection, HandshakeFailed
from hd_protocol.peer.handshake import (
    REASONS,
    Established,
    Failed,
    HandshakeResult,
    NeedAdmission,
    State,
)
from hd_protocol.peer.handshake import Send as HsSend
from hd_protocol.peer.session import (
    KNOWN_TYPES,
    Closed,
    Dropped,
    Message,
    PeerError,
    Pong,
    Reply,
    Timeout,
)
from hd_protocol.peer.session import Send as SessionSend
from hd_protocol.seal import box_aad
from hd_protocol.stun import StunClient, decode_message, encode_binding_request
from hd_shell.ws.inbound import Inbound

NOW = 1_764_000_000_000
TOKEN = "fuzz-invite-token-0123456789abcdef"


def det_rng(label: bytes) -> Rng:
    """A deterministic ``rng(n)``: SHA-256 in counter mode over ``label``."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(label + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


def _seed(label: bytes) -> bytes:
    return hashlib.sha256(b"hd-fuzz " + label).digest()


DIALER = Identity.from_seed(_seed(b"dialer"))
ACCEPTOR = Identity.from_seed(_seed(b"acceptor"))
_PEER_EPH_SEED = _seed(b"hostile peer eph")
_PEER_EPH = X25519PrivateKey.from_private_bytes(_PEER_EPH_SEED)
_PEER_EPH_PUB = base64.b64encode(
    _PEER_EPH.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
).decode("ascii")


class InvariantError(AssertionError):
    """A target found a property violation (a crash, just like any other exception)."""


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise InvariantError(what)


def _attempt(fn: Callable[[Any], Any], arg: Any) -> tuple[bool, Any]:
    """(True, result) or (False, error code); only ``ProtocolError`` is absorbed."""
    try:
        return True, fn(arg)
    except ProtocolError as exc:
        _require(type(exc.code) is str and exc.code != "", "error without a code")
        _require(type(exc.message) is str, "error message is not a string")
        return False, exc.code


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _texts(data: bytes) -> str:
    # surrogateescape turns invalid UTF-8 into lone surrogates: a str no honest
    # transport delivers, which the codecs must still refuse cleanly.
    return data.decode("utf-8", "surrogateescape")


def json_value(raw: bytes) -> Any:
    """The input as a canonical-domain JSON value (or, failing that, as a string)."""
    try:
        return loads_strict(raw)
    except CanonicalError:
        return raw.decode("utf-8", "replace")


def mutate(base: dict[str, Any], slot: int, value: Any) -> Any:
    """One structural change of ``base`` chosen by ``slot``: replace one field, replace
    the whole object, add a field, drop a field, or keep it as it is."""
    keys = sorted(base)
    n = len(keys)
    slot %= n + 4
    if slot < n:
        out = dict(base)
        out[keys[slot]] = value
        return out
    if slot == n:
        return value
    if slot == n + 1:
        out = dict(base)
        out["extra"] = value
        return out
    if slot == n + 2:
        out = dict(base)
        del out[keys[len(repr(value)) % n]]
        return out
    return dict(base)


# --- codecs -----------------------------------------------------------------------


def _reference_cjson(value: Any) -> bytes:
    # SPEC 1.1 by the letter, through the stdlib only: hd_protocol's hot paths build
    # these bytes by hand and must agree byte for byte.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _reference_wire(env: Envelope) -> str:
    return json.dumps({f: getattr(env, f) for f in FIELDS}, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)


def envelope(data: bytes) -> str:
    """``decode_envelope`` on bytes and on text: total, consistent, re-encodable, and the
    hand-built wire text, signing bytes and box AAD equal their reference JSON."""
    ok_b, res_b = _attempt(decode_envelope, data)
    ok_s, res_s = _attempt(decode_envelope, _texts(data))
    if _is_utf8(data):
        _require((ok_b, res_b) == (ok_s, res_s), "bytes and text decode differently")
    else:
        _require(not ok_s, "text with lone surrogates decoded")
    if not ok_b:
        return f"err:{res_b}"
    env: Envelope = res_b
    wire = encode_envelope(env)
    _require(wire == _reference_wire(env), "encode_envelope differs from the reference JSON")
    _require(decode_envelope(wire) == env, "decode(encode(env)) != env")
    header = {f: getattr(env, f) for f in FIELDS if f not in ("sig", "ttl")}
    _require(signing_bytes(env) == b"hd1-env\n" + _reference_cjson(header),
             "signing bytes differ from the reference canonical JSON")
    aad = {f: header[f] for f in ("type", "msg_id", "re", "src", "dst", "ts", "seq")}
    _require(box_aad(env) == b"hd1-box\n" + _reference_cjson(aad),
             "box AAD differs from the reference canonical JSON")
    verified = verify_envelope(env, DIALER.public_key)
    _require(type(verified) is bool, "verify_envelope returned a non-bool")
    if env.box is not None:
        ok, opened = _attempt(lambda e: open_envelope(e, _seed(b"box key")), env)
        _require(not ok or type(opened) is dict, "open_envelope returned a non-object")
    return "ok:verified" if verified else "ok"


def ws_frame(data: bytes) -> str:
    """``decode_ws_frame`` (strict and permissive) on bytes and text; re-encodable."""
    ok_b, res_b = _attempt(decode_ws_frame, data)
    ok_s, res_s = _attempt(decode_ws_frame, _texts(data))
    ok_any, res_any = _attempt(lambda d: decode_ws_frame(d, allowed=None), data)
    if _is_utf8(data):
        _require((ok_b, res_b) == (ok_s, res_s), "bytes and text decode differently")
    else:
        _require(not ok_s, "text with lone surrogates decoded")
    _require(not ok_b or ok_any, "the permissive decoder refused a frame the strict took")
    if ok_any:
        wire = encode_ws_frame(res_any.channel, res_any.event, res_any.data)
        _require(decode_ws_frame(wire, allowed=None) == res_any, "ws frame does not round-trip")
    return "ok" if ok_b else f"err:{res_b}"


def invite(data: bytes) -> str:
    """``decode_invite``: total on any text, in exact agreement with an independent
    reading of SPEC 4.2 (``reference_invite``) on what it accepts and what it returns;
    a decoded invite re-encodes to itself."""
    ok_raw, _ = _attempt(decode_invite, data)
    _require(not ok_raw, "decode_invite accepted bytes")
    text = _texts(data)
    ok, res = _attempt(decode_invite, text)
    expected = reference_invite(text)
    _require(ok == (expected is not None),
             f"decode_invite {'accepted' if ok else 'refused'} what SPEC 4.2 "
             f"{'refuses' if ok else 'accepts'}")
    if not ok:
        return f"err:{res}"
    _require(res == expected, "decode_invite returned another body than SPEC 4.2 reads")
    _require(decode_invite(encode_invite(**res)) == res, "invite does not round-trip")
    return "ok"


# SPEC 4.2 read independently of hd_protocol: the fuzz oracle for ``invite``.
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_MAX_SAFE = 2**53 - 1


class _NotCanonical(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise _NotCanonical("duplicate key")
    return dict(pairs)


def _refuse(text: str) -> Any:
    raise _NotCanonical(text)


def _canonical_domain(value: Any) -> bool:
    """SPEC 1.1: integers within +-(2**53 - 1), UTF-8 strings, ASCII keys."""
    if type(value) is int:
        return -_MAX_SAFE <= value <= _MAX_SAFE
    if type(value) is str:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace") == value
    if type(value) is list:
        return all(_canonical_domain(v) for v in value)
    if type(value) is dict:
        return all(k.isascii() and _canonical_domain(v) for k, v in value.items())
    return value is None or type(value) is bool


def _reference_node_id(public_key: Any) -> str | None:
    if type(public_key) is not str or not public_key.isascii():
        return None
    try:
        raw = base64.b64decode(public_key, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 32 or base64.b64encode(raw).decode() != public_key:
        return None
    return base64.b32encode(hashlib.sha256(raw).digest()).decode().lower()[:16]


def _reference_candidate(c: Any) -> bool:
    return (
        type(c) is dict and set(c) == {"type", "url", "priority"}
        and c["type"] in ("host", "srflx", "relay")
        and type(c["url"]) is str and len(c["url"]) <= 512
        and c["url"].startswith(("ws://", "wss://"))
        and type(c["priority"]) is int and 0 <= c["priority"] < 2**32
    )


def reference_invite(text: str) -> dict[str, Any] | None:
    """The invite body ``text`` carries by SPEC 4.2 (and docs/protocol.md section 8),
    or None if it is no invite."""
    text = text.strip()
    if len(text) > 8192 or not text.startswith("hd1:"):
        return None
    b64 = text[4:]
    if _B64URL.fullmatch(b64) is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        body = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                          parse_float=_refuse, parse_constant=_refuse)
    except (binascii.Error, ValueError, RecursionError):
        return None
    if type(body) is not dict or not _canonical_domain(body):
        return None
    if set(body) != {"addrs", "exp", "node_id", "public_key", "token"}:
        return None
    token, addrs = body["token"], body["addrs"]
    node_id = _reference_node_id(body["public_key"])
    if (
        type(body["exp"]) is not int or body["exp"] < 0
        or type(token) is not str or not 16 <= len(token) <= 256
        or node_id is None or node_id != body["node_id"]
        or type(addrs) is not list or len(addrs) > 16
        or not all(_reference_candidate(c) for c in addrs)
    ):
        return None
    return body


# The invite harness mutates the *decoded* invite and encodes it again (libFuzzer's own
# mutations of base64 text almost never decode): ``mutate_invite`` is its custom mutator.
_OTHER = Identity.from_seed(_seed(b"other"))


def _long_url(n: int) -> str:
    return "ws://" + "h" * (n - len("ws://:1/peer-ws")) + ":1/peer-ws"


_EDGES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**32 - 1, 2**32, _MAX_SAFE, _MAX_SAFE + 1, 1.5, "", "x",
    "t" * 15, "t" * 16, "t" * 256, "t" * 257, "\ud800" * 16, "\u00e9" * 20, [], {}, [1],
    {"a": 1}, "ws://h:1/peer-ws", _long_url(512), _long_url(513), "host", "relay",
    DIALER.node_id, DIALER.public_key, _OTHER.node_id, _OTHER.public_key,
)
_INVITE_KEYS = ("addrs", "exp", "node_id", "public_key", "token", "extra")


def _invite_seed_body() -> dict[str, Any]:
    return {"addrs": [make_candidate("host", "ws://127.0.0.1:8766/peer-ws")], "exp": NOW,
            "node_id": DIALER.node_id, "public_key": DIALER.public_key, "token": TOKEN}


def _loose_invite_body(data: bytes) -> Any:
    """What the input invite decodes to, read leniently (None if it does not)."""
    text = data.decode("utf-8", "replace").strip()
    if not text.startswith("hd1:"):
        return None
    b64 = "".join(ch for ch in text[4:] if ch.isalnum() or ch in "-_")
    try:
        return json.loads(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return None


def _mutate_address(addrs: list[Any], rnd: random.Random) -> list[Any]:
    op = rnd.randrange(5)
    if op == 0 or not addrs:
        url = rnd.choice(("ws://10.0.0.1:1/peer-ws", _long_url(512), _long_url(513)))
        addrs.insert(rnd.randrange(len(addrs) + 1), make_candidate("srflx", url))
    elif op == 1:
        del addrs[rnd.randrange(len(addrs))]
    elif op == 2:
        i = rnd.randrange(len(addrs))
        if type(addrs[i]) is dict:
            key = rnd.choice(("type", "url", "priority", "extra"))
            addrs[i] = {**addrs[i], key: rnd.choice(_EDGES)}
        else:
            addrs[i] = make_candidate("relay", "wss://relay.example/relay-ws")
    elif op == 3:
        n = rnd.choice((15, 16, 17))
        addrs = (addrs * n)[:n]
    else:
        addrs[rnd.randrange(len(addrs))] = rnd.choice(_EDGES)
    return addrs


def _mutate_invite_body(body: Any, rnd: random.Random) -> Any:
    if type(body) is not dict:
        return _invite_seed_body() if rnd.random() < 0.8 else body
    if rnd.random() < 0.02:
        return rnd.choice(_EDGES)
    op = rnd.randrange(6)
    key = rnd.choice(_INVITE_KEYS)
    if op == 0:
        body[key] = rnd.choice(_EDGES)
    elif op == 1:
        body.pop(key, None)
    elif op == 2:
        body["token"] = rnd.choice("t~-\u00e9") * rnd.choice((0, 15, 16, 17, 255, 256, 257))
    elif op == 3:
        body["exp"] = rnd.choice((-1, 0, 1, NOW, _MAX_SAFE, _MAX_SAFE + 1, True, "1"))
    elif op == 4:
        who = rnd.choice((DIALER, _OTHER))
        body[rnd.choice(("node_id", "public_key"))] = (
            who.node_id if rnd.random() < 0.5 else who.public_key)
    else:
        addrs = body.get("addrs")
        body["addrs"] = _mutate_address(list(addrs) if type(addrs) is list else [], rnd)
    return body


def _mutate_invite_text(text: str, rnd: random.Random) -> str:
    op = rnd.randrange(6)
    if op == 0:
        return rnd.choice(("hd2:", "HD1:", "hd1", " hd1:", "", "hd1:hd1:")) + text[4:]
    if op == 1:
        return text + "=" * rnd.randrange(1, 4)
    if op == 2:
        return text.replace("-", "+").replace("_", "/")
    if op == 3:
        i = rnd.randrange(4, len(text) + 1)
        return text[:i] + rnd.choice(" .=\n\u00e9!") + text[i:]
    if op == 4:
        return rnd.choice(("", " ", "\n", "\t ")) + text + rnd.choice(("", "\n", "  "))
    return text[:rnd.randrange(4, len(text) + 1)]


def mutate_invite(data: bytes, seed: int,
                  byte_mutate: Callable[[bytes], bytes] | None = None) -> bytes:
    """A new invite from ``data``: the decoded body changed in one to three ways (a field
    set to an edge value or dropped, an address added, changed or dropped, the shape
    replaced), spelled as JSON in some valid way and encoded again; now and then the
    text itself is changed (prefix, padding, alphabet, a stray character, whitespace,
    a cut), and with ``byte_mutate`` (libFuzzer's own mutator) the raw bytes."""
    rnd = random.Random(seed)
    if byte_mutate is not None and rnd.random() < 0.1:
        return byte_mutate(data)
    body = _loose_invite_body(data)
    for _ in range(1 + rnd.randrange(3)):
        body = _mutate_invite_body(body, rnd)
    try:
        spelled = json.dumps(body, sort_keys=rnd.random() < 0.7,
                             ensure_ascii=rnd.random() < 0.5,
                             separators=(",", ":") if rnd.random() < 0.8 else (", ", ": "))
    except (TypeError, ValueError, RecursionError):  # keys of mixed types, deep nesting
        spelled = json.dumps(_invite_seed_body())
    raw = spelled.encode("utf-8", "surrogatepass")
    text = "hd1:" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if rnd.random() < 0.15:
        text = _mutate_invite_text(text, rnd)
    return text.encode("utf-8", "surrogatepass")


# --- the handshake machines -----------------------------------------------------------


def _dialer(**kw: Any) -> Dialer:
    return Dialer(
        DIALER, rng=det_rng(b"dialer"), now=NOW, expected_node_id=ACCEPTOR.node_id,
        token=TOKEN, node_name="dialer", capabilities=("collab", "chat"), **kw,
    )


def _acceptor() -> Acceptor:
    return Acceptor(
        ACCEPTOR, rng=det_rng(b"acceptor"), now=NOW, node_name="acceptor",
        capabilities=("collab",),
    )


def _only(outs: list[Any], kind: type) -> Any:
    found = [o for o in outs if isinstance(o, kind)]
    _require(len(found) == 1, f"expected one {kind.__name__}, got {outs!r}")
    return found[0]


@lru_cache(maxsize=4)
def honest_run(level: str = "trusted") -> tuple[tuple[str, str, str, str], HandshakeResult,
                                                  HandshakeResult]:
    """The four wire frames of an honest handshake and both results (deterministic)."""
    d, a = _dialer(), _acceptor()
    hello = _only(d.start(NOW), HsSend).wire
    ack = _only(a.receive(hello, NOW + 1), HsSend).wire
    _only(d.receive(ack, NOW + 2), NeedAdmission)
    auth = _only(d.admit(Decision(level="trusted"), NOW + 3), HsSend).wire
    _only(a.receive(auth, NOW + 4), NeedAdmission)
    outs = a.admit(Decision(level=level), NOW + 5)  # type: ignore[arg-type]
    result_wire = _only(outs, HsSend).wire
    acceptor_result = _only(outs, Established).result
    dialer_result = _only(d.receive(result_wire, NOW + 6), Established).result
    return (hello, ack, auth, result_wire), dialer_result, acceptor_result


def _check_handshake(
    machine: Dialer | Acceptor, outs: list[Any], partner: Identity
) -> str:
    """What every output list of a handshake machine must satisfy; returns a label."""
    label = "none"
    for o in outs:
        if isinstance(o, HsSend):
            env = decode_envelope(o.wire)
            _require(env.src == machine.identity.node_id, "sent a frame with a foreign src")
            _require(verify_envelope(env, machine.identity.public_key), "sent an unsigned frame")
            label = "send" if label == "none" else label
        elif isinstance(o, NeedAdmission):
            # Only the partner's key signed anything the fuzzer can have seen.
            _require(o.peer.node_id == partner.node_id, "admission for a forged node id")
            _require(o.peer.public_key == partner.public_key, "admission for a forged key")
            label = "need_admission"
        elif isinstance(o, Established):
            r = o.result
            _require(r.peer.public_key == partner.public_key, "established with a forged key")
            _require(len(r.key_tx) == 32 and len(r.key_rx) == 32, "bad key length")
            _require(r.key_tx != r.key_rx, "both directions share a key")
            _require(machine.done and machine.failure is None, "established but not done")
            label = "established"
        elif isinstance(o, Failed):
            _require(o.reason in REASONS or o.reason == "timeout", f"odd reason {o.reason}")
            _require(machine.done and machine.failure is o, "failed but still running")
            label = f"failed:{o.reason}"
        else:
            raise InvariantError(f"unexpected handshake output {o!r}")
    if machine.done:
        _require(machine.receive(b"{}", NOW + 9) == [], "a finished machine reacted")
    return label


def _admit_after(
    machine: Dialer | Acceptor, label: str, accept: bool, partner: Identity
) -> str:
    if label != "need_admission":
        return label
    decision = Decision(level="trusted") if accept else Decision(level=None, reason="blocked")
    return _check_handshake(machine, machine.admit(decision, NOW + 7), partner)


def handshake(data: bytes) -> str:
    """Raw frames into a handshake machine at each of its four waiting points.

    ``data[0] % 4``: 0 Acceptor's first frame, 1 Acceptor's second frame after a valid
    hello, 2 Dialer's first frame after start, 3 Dialer's second frame after a valid
    hello_ack and its own admission. ``data[0] & 4``: admit (else refuse) if asked.
    """
    if not data:
        return "empty"
    mode, accept, frame = data[0] % 4, bool(data[0] & 4), data[1:]
    (hello, ack, _, _), _, _ = honest_run()
    machine: Dialer | Acceptor
    if mode in (0, 1):
        machine, partner = _acceptor(), DIALER
        if mode == 1:
            _only(machine.receive(hello, NOW + 1), HsSend)
    else:
        machine, partner = _dialer(), ACCEPTOR
        machine.start(NOW)
        if mode == 3:
            _only(machine.receive(ack, NOW + 2), NeedAdmission)
            _only(machine.admit(Decision(level="trusted"), NOW + 3), HsSend)
    label = _check_handshake(machine, machine.receive(frame, NOW + 4), partner)
    return _admit_after(machine, label, accept, partner)


def _hello_data(identity: Identity, nonce_label: bytes) -> dict[str, Any]:
    return {
        "proto": "hd/1", "node_name": "hostile", "public_key": identity.public_key,
        "capabilities": ["collab"], "nonce": base64.b64encode(_seed(nonce_label)).decode(),
        "eph": _PEER_EPH_PUB,
    }


def _signed(env_args: dict[str, Any], identity: Identity, *, key: bytes | None = None,
            payload: Any = None) -> str:
    env = make_envelope(**env_args)
    if key is not None:
        env = seal_envelope(env, key, payload)
    return encode_envelope(sign_envelope(env, identity))


def signed_handshake(data: bytes) -> str:
    """A peer that signs (and seals) whatever the input says, at each handshake step.

    ``data[0] % 4`` picks the frame whose content is fuzzed: 0 hello data (to an
    Acceptor), 1 hello_ack data (to a Dialer), 2 auth payload (to an Acceptor), 3
    auth_result payload (to a Dialer); ``(data[0] >> 2) & 15`` picks the mutation
    (``mutate``); bit 6 admits (else refuses) when asked; the rest is a JSON value.
    """
    if not data:
        return "empty"
    which, slot, accept = data[0] % 4, (data[0] >> 2) & 15, bool(data[0] & 64)
    value = json_value(data[1:])
    try:
        if which == 0:
            return _hostile_hello(slot, value, accept)
        if which == 1:
            return _hostile_hello_ack(slot, value, accept)
        if which == 2:
            return _hostile_auth(slot, value, accept)
        return _hostile_auth_result(slot, value)
    except _Unbuildable:
        return "unbuildable"


class _Unbuildable(Exception):
    """The input describes a frame our own encoder refuses to build (not a finding)."""


def _build(env_args: dict[str, Any], identity: Identity, **kw: Any) -> str:
    try:
        return _signed(env_args, identity, **kw)
    except ProtocolError:
        raise _Unbuildable from None


def _hostile_hello(slot: int, value: Any, accept: bool) -> str:
    a = _acceptor()
    data = mutate(_hello_data(DIALER, b"hello nonce"), slot, value)
    wire = _build(dict(type="hello", msg_id="1" * 32, src=DIALER.node_id,
                       dst=ACCEPTOR.node_id, ts=NOW, data=data), DIALER)
    label = _check_handshake(a, a.receive(wire, NOW + 1), DIALER)
    if label == "send":
        _require(a.peer is not None and a.peer.public_key == DIALER.public_key,
                 "accepted a hello under another key")
    return _admit_after(a, label, accept, DIALER)


def _hello_ack(hello: Envelope, mutated: Callable[[dict[str, Any]], Any] = lambda d: d) -> str:
    """The acceptor's hello_ack to ``hello``, its data passed through ``mutated``."""
    data = _hello_data(ACCEPTOR, b"ack nonce")
    data["echo"] = hello.data["nonce"]
    return _build(dict(type="hello_ack", msg_id="2" * 32, re=hello.msg_id,
                       src=ACCEPTOR.node_id, dst=DIALER.node_id, ts=NOW + 1,
                       data=mutated(data)), ACCEPTOR)


def _hostile_hello_ack(slot: int, value: Any, accept: bool) -> str:
    d = _dialer()
    hello = decode_envelope(_only(d.start(NOW), HsSend).wire)
    wire = _hello_ack(hello, lambda base: mutate(base, slot, value))
    label = _check_handshake(d, d.receive(wire, NOW + 2), ACCEPTOR)
    return _admit_after(d, label, accept, ACCEPTOR)


def _hostile_auth(slot: int, value: Any, accept: bool) -> str:
    a = _acceptor()
    hello_wire = _build(dict(type="hello", msg_id="1" * 32, src=DIALER.node_id,
                             dst=ACCEPTOR.node_id, ts=NOW,
                             data=_hello_data(DIALER, b"hello nonce")), DIALER)
    hello = decode_envelope(hello_wire)
    ack = decode_envelope(_only(a.receive(hello_wire, NOW + 1), HsSend).wire)
    d2a, a2d = derive_session_keys(_PEER_EPH_SEED, ack.data["eph"], hello, ack)
    base = {"echo": ack.data["nonce"], "token": TOKEN, "attest": None}
    payload = mutate(base, slot, value)
    if type(payload) is not dict:
        raise _Unbuildable
    wire = _build(dict(type="auth", msg_id="3" * 32, re=ack.msg_id, src=DIALER.node_id,
                       dst=ACCEPTOR.node_id, ts=NOW + 2, seq=0), DIALER,
                  key=d2a, payload=payload)
    outs = a.receive(wire, NOW + 3)
    label = _check_handshake(a, outs, DIALER)
    if label == "need_admission":
        need = _only(outs, NeedAdmission)
        _require(need.token == payload["token"] and need.attest == payload["attest"],
                 "admission asked with something the dialer did not present")
        decision = Decision(level="guest") if accept else Decision(level=None,
                                                                    reason="pairing_required")
        outs = a.admit(decision, NOW + 4)
        label = _check_handshake(a, outs, DIALER)
        answer = decode_envelope(_only(outs, HsSend).wire)
        result = open_envelope(answer, a2d)
        _require(result == {"ok": accept, "level": "guest" if accept else None,
                            "reason": None if accept else "pairing_required"},
                 f"auth_result does not tell the decision: {result!r}")
    return label


def _hostile_auth_result(slot: int, value: Any) -> str:
    d = _dialer()
    hello = decode_envelope(_only(d.start(NOW), HsSend).wire)
    ack_wire = _hello_ack(hello)
    ack = decode_envelope(ack_wire)
    _only(d.receive(ack_wire, NOW + 2), NeedAdmission)
    auth = decode_envelope(_only(d.admit(Decision(level="trusted"), NOW + 3), HsSend).wire)
    d2a, a2d = derive_session_keys(_PEER_EPH_SEED, hello.data["eph"], hello, ack)
    _require(open_envelope(auth, d2a)["token"] == TOKEN, "auth does not carry the token")
    payload = mutate({"ok": True, "level": "trusted", "reason": None}, slot, value)
    if type(payload) is not dict:
        raise _Unbuildable
    wire = _build(dict(type="auth_result", msg_id="4" * 32, re=auth.msg_id,
                       src=ACCEPTOR.node_id, dst=DIALER.node_id, ts=NOW + 4, seq=0),
                  ACCEPTOR, key=a2d, payload=payload)
    outs = d.receive(wire, NOW + 5)
    label = _check_handshake(d, outs, ACCEPTOR)
    if label == "established":
        # SPEC 4: a dialer never treats anything but a verified ok as success.
        _require(payload.get("ok") is True, "established without ok: true")
        _require(_only(outs, Established).result.peer_level == payload["level"],
                 "peer level is not what the acceptor said")
    return label


# --- every handshake state, fed frames of every type ------------------------------

# What a hostile but authentic peer can put in front of a handshake machine: frames
# signed by the peer's real key (and sealed with the real direction key where the
# step is sealed), under any type, in any state. The machine must take only the type
# its state waits for, answering the right frame; in a state that waits for no frame
# (admission pending, before ``start()``) anything fails; once finished, it ignores all.
HS_STATE_TYPES = ("hello", "hello_ack", "auth", "auth_result", "presence", "peer_chat",
                  "bye", "zz_unknown")
HS_STATES = ("acceptor:wait_hello", "acceptor:wait_auth", "acceptor:admission",
             "acceptor:done", "acceptor:refused", "dialer:start", "dialer:wait_hello_ack",
             "dialer:admission", "dialer:wait_auth_result", "dialer:done", "dialer:refused")
_WRONG_RE = "9" * 32


class _Stage:
    """A machine brought to one state, and the next frame its peer would send: the
    ``natural`` type with ``head`` fields and ``content`` (data, or the sealed payload
    when ``key`` is set). ``expected`` is the type the state waits for, if any."""

    def __init__(self, machine: Dialer | Acceptor, partner: Identity, expected: str | None,
                 natural: str, head: dict[str, Any], content: dict[str, Any],
                 key: bytes | None) -> None:
        self.machine, self.partner, self.expected = machine, partner, expected
        self.natural, self.head, self.content, self.key = natural, head, content, key


def _acceptor_stage(step: str) -> _Stage:
    a = _acceptor()
    hello_head = dict(msg_id="1" * 32, src=DIALER.node_id, dst=ACCEPTOR.node_id, ts=NOW)
    hello_data = _hello_data(DIALER, b"hello nonce")
    if step == "wait_hello":
        return _Stage(a, DIALER, "hello", "hello", hello_head, hello_data, None)
    hello_wire = _signed(dict(type="hello", data=hello_data, **hello_head), DIALER)
    ack = decode_envelope(_only(a.receive(hello_wire, NOW + 1), HsSend).wire)
    d2a, _ = derive_session_keys(_PEER_EPH_SEED, ack.data["eph"], decode_envelope(hello_wire),
                                 ack)
    head = dict(msg_id="3" * 32, re=ack.msg_id, src=DIALER.node_id, dst=ACCEPTOR.node_id,
                ts=NOW + 2, seq=0)
    payload = {"echo": ack.data["nonce"], "token": TOKEN, "attest": None}
    if step == "wait_auth":
        return _Stage(a, DIALER, "auth", "auth", head, payload, d2a)
    _only(a.receive(_signed(dict(type="auth", **head), DIALER, key=d2a, payload=payload),
                    NOW + 3), NeedAdmission)
    if step == "done":
        _only(a.admit(Decision(level="trusted"), NOW + 4), Established)
    elif step == "refused":
        _only(a.admit(Decision(level=None, reason="blocked"), NOW + 4), Failed)
    return _Stage(a, DIALER, None, "auth", {**head, "msg_id": "5" * 32}, payload, d2a)


def _dialer_stage(step: str) -> _Stage:
    d = _dialer()
    ack_data = _hello_data(ACCEPTOR, b"ack nonce")
    ack_head = dict(msg_id="2" * 32, re="7" * 32, src=ACCEPTOR.node_id, dst=DIALER.node_id,
                    ts=NOW + 1)
    if step == "start":  # a hello_ack answering a hello that was never sent
        return _Stage(d, ACCEPTOR, None, "hello_ack", ack_head,
                      {**ack_data, "echo": ack_data["nonce"]}, None)
    hello = decode_envelope(_only(d.start(NOW), HsSend).wire)
    ack_head["re"] = hello.msg_id
    ack_data["echo"] = hello.data["nonce"]
    if step == "wait_hello_ack":
        return _Stage(d, ACCEPTOR, "hello_ack", "hello_ack", ack_head, ack_data, None)
    ack_wire = _signed(dict(type="hello_ack", data=ack_data, **ack_head), ACCEPTOR)
    _only(d.receive(ack_wire, NOW + 2), NeedAdmission)
    _, a2d = derive_session_keys(_PEER_EPH_SEED, hello.data["eph"], hello,
                                 decode_envelope(ack_wire))
    head = dict(msg_id="4" * 32, re="8" * 32, src=ACCEPTOR.node_id, dst=DIALER.node_id,
                ts=NOW + 4, seq=0)
    ok = {"ok": True, "level": "trusted", "reason": None}
    if step == "admission":  # an auth_result answering an auth that was never sent
        return _Stage(d, ACCEPTOR, None, "auth_result", head, ok, a2d)
    head["re"] = decode_envelope(_only(d.admit(Decision(level="trusted"), NOW + 3),
                                       HsSend).wire).msg_id
    if step == "wait_auth_result":
        return _Stage(d, ACCEPTOR, "auth_result", "auth_result", head, ok, a2d)
    first = ok if step == "done" else {"ok": False, "level": None, "reason": "blocked"}
    _only(d.receive(_signed(dict(type="auth_result", **head), ACCEPTOR, key=a2d,
                            payload=first), NOW + 5), Established if step == "done" else Failed)
    return _Stage(d, ACCEPTOR, None, "auth_result", {**head, "msg_id": "6" * 32}, ok, a2d)


def hs_stage(name: str) -> _Stage:
    side, step = name.split(":")
    return _acceptor_stage(step) if side == "acceptor" else _dialer_stage(step)


def handshake_state(data: bytes) -> str:
    """A frame signed by the real peer, under any type, into a handshake machine in any
    state.

    ``data[0]`` picks the state (``HS_STATES``); ``data[1]``: bits 0-2 the type
    (``HS_STATE_TYPES``), bit 3 seals a plain step (or sends a sealed step plain),
    bit 4 puts a wrong ``re`` (a non-null one on ``hello``), bit 5 admits (else
    refuses) if asked; ``data[2]`` the ``mutate`` slot of the content; the rest is a
    JSON value. The honest frame (the expected type, nothing changed) must move the
    machine on; anything else must fail it, and a finished machine must ignore it.
    """
    if len(data) < 3:
        return "short"
    name = HS_STATES[data[0] % len(HS_STATES)]
    type_ = HS_STATE_TYPES[data[1] & 7]
    flip, wrong_re, accept = bool(data[1] & 8), bool(data[1] & 16), bool(data[1] & 32)
    stage = hs_stage(name)
    n = len(stage.content)
    kept = data[2] % (n + 4) == n + 3
    content = mutate(stage.content, data[2], json_value(data[3:]))
    head = dict(stage.head, re=_WRONG_RE) if wrong_re else dict(stage.head)
    sealed = (stage.key is not None) != flip
    try:
        if sealed:
            if type(content) is not dict:
                return "unbuildable"
            wire = _build(dict(type=type_, **{"seq": 0, **head}), stage.partner,
                          key=stage.key or _seed(b"box key"), payload=content)
        else:
            head.pop("seq", None)
            wire = _build(dict(type=type_, data=content, **head), stage.partner)
    except _Unbuildable:
        return "unbuildable"
    m = stage.machine
    before = m.state
    outs = m.receive(wire, NOW + 8)
    _require(type(outs) is list, f"receive() in {name} returned {outs!r}")
    if before in (State.DONE, State.FAILED):
        _require(outs == [] and m.state is before, f"{name} reacted to a {type_}")
        return "ignored"
    label = _check_handshake(m, outs, stage.partner)
    honest = type_ == stage.expected and not (flip or wrong_re)
    if not honest:
        _require(label.startswith("failed:"), f"{name} took a {type_} ({label})")
    elif kept:
        _require(not label.startswith("failed:"), f"{name} refused the honest {type_}")
    return _admit_after(m, label, accept, stage.partner)


# --- sessions -------------------------------------------------------------------------

SESSION_OUTPUTS = (SessionSend, Message, Reply, Timeout, Pong, PeerError, Dropped, Closed)
SESSION_TYPES = (*sorted(KNOWN_TYPES), "zz_unknown")


def _sessions(level: str) -> tuple[Session, Session]:
    """(local, peer): local is the dialer's session, peer the acceptor's (fresh each call)."""
    _, dialer_result, acceptor_result = honest_run(level)
    local = Session(DIALER, dialer_result, rng=det_rng(b"local"), now=NOW)
    peer = Session(ACCEPTOR, acceptor_result, rng=det_rng(b"peer"), now=NOW)
    return local, peer


def _check_session(local: Session, outs: list[Any]) -> str:
    label = "none"
    for o in outs:
        _require(isinstance(o, SESSION_OUTPUTS), f"unexpected session output {o!r}")
        if isinstance(o, SessionSend):
            env = decode_envelope(o.wire)
            _require(verify_envelope(env, local.identity.public_key), "sent an unsigned frame")
            _require(env.dst == local.peer_id and env.box is not None, "sent an unsealed frame")
            label = "send" if label == "none" else label
            continue
        if isinstance(o, Dropped):
            label = f"dropped:{o.code}"
        elif label in ("none", "send"):
            label = type(o).__name__.lower()
    return label


def _deliver_twice(local: Session, frame: str | bytes) -> str:
    """Feed ``frame``; whatever got through the first time must not get through again."""
    before = local.stats.msgs_in
    label = _check_session(local, local.receive(frame, NOW + 10))
    accepted = local.stats.msgs_in > before
    if accepted and local.closed is None:
        again = local.receive(frame, NOW + 11)
        _check_session(local, again)
        _require(local.stats.msgs_in == before + 1, "a replayed envelope was accepted")
        _require(not any(isinstance(o, Message | Reply | Pong) for o in again),
                 "a replayed envelope was delivered")
    return label


def session(data: bytes) -> str:
    """Frames into an established Session.

    ``data[0] & 1``: 0 the rest is a raw frame; 1 the peer seals and signs a message of
    type ``SESSION_TYPES[(data[0] >> 1) & 15]`` whose payload is the JSON rest (a
    non-object is spread over the usual fields). ``data[0] & 32``: guest level;
    ``data[0] & 64``: the message answers a pending request of ours.
    """
    if not data:
        return "empty"
    sel = data[0]
    local, peer = _sessions("guest" if sel & 32 else "trusted")
    if not sel & 1:
        return _deliver_twice(local, data[1:])
    type_ = SESSION_TYPES[((sel >> 1) & 15) % len(SESSION_TYPES)]
    value = json_value(data[1:])
    payload = value if type(value) is dict else {
        "reason": value, "code": value, "message": value, "text": value,
    }
    re = local.request("agent_request", {}, NOW)[0] if sel & 64 else None
    try:
        _, outs = peer.send(type_, payload, NOW + 1, re=re)
    except ProtocolError:
        return "unbuildable"
    return _deliver_twice(local, _only(outs, SessionSend).wire)


# --- the connection machine (handshake -> session -> keepalive) ---------------------

CONN_EVENTS = (NeedAdmission, Established, HandshakeFailed, Message, Reply, Timeout, Pong,
               PeerError, Dropped, Closed)


def _open_pair() -> tuple[Connection, Connection]:
    """(local, peer): two honest Connections with an open session (local dialled)."""
    local = Connection.dial(DIALER, rng=det_rng(b"conn-local"), now=0, wall=NOW,
                            expected_node_id=ACCEPTOR.node_id)
    peer = Connection.accept(ACCEPTOR, rng=det_rng(b"conn-peer"), now=0, wall=NOW)
    for _ in range(4):
        for src, dst in ((local, peer), (peer, local)):
            for f in src.frames_to_send():
                dst.receive(f, 0, NOW)
            for ev in dst.events():
                if isinstance(ev, NeedAdmission):
                    dst.admit(Decision("trusted"), 0, NOW)
    _require(local.is_open and peer.is_open, "the honest handshake did not open")
    return local, peer


def connection(data: bytes) -> str:
    """Frames and the passage of time into an open ``Connection``.

    ``data`` is cut at ``\\n\\n`` into steps. A step starting with ``T`` moves the
    monotonic clock by (its length) seconds and fires the timer; ``P`` has the real peer
    seal the rest (as JSON) as a ``peer_chat``/``ping``/``bye``/unknown message; anything
    else is a raw frame. Invariants: only the documented events come out, every frame
    we write is signed by us, sealed and in ``seq`` order, a message is never delivered
    twice, and the machine's next deadline never lies in the past after a timer.
    """
    local, peer = _open_pair()
    now, seqs, seen = 0, [], set()
    label = "open"
    for step in data.split(b"\n\n")[:32]:
        if step[:1] == b"T":
            now += 1000 * max(1, len(step))
            local.handle_timer(now, NOW + now)
            dl = local.next_deadline()
            _require(dl is None or dl > now, "a deadline was left in the past")
        elif step[:1] == b"P" and len(step) > 1:
            kind = ("peer_chat", "ping", "bye", "zz_unknown")[step[1] % 4]
            value = json_value(step[2:])
            payload = value if type(value) is dict else {"text": value, "reason": value}
            try:
                peer.send(kind, payload, now, NOW)
            except ProtocolError:
                continue
            for f in peer.frames_to_send():
                local.receive(f, now, NOW)
                local.receive(f, now, NOW)  # a replay must never be delivered again
        else:
            local.receive(step, now, NOW)
        for ev in local.events():
            _require(isinstance(ev, CONN_EVENTS), f"unexpected event {ev!r}")
            if isinstance(ev, Message):
                _require(ev.msg_id not in seen, "a message was delivered twice")
                seen.add(ev.msg_id)
                label = "message"
            elif isinstance(ev, Closed):
                label = "closed"
        for f in local.frames_to_send():
            env = decode_envelope(f)
            _require(verify_envelope(env, DIALER.public_key), "wrote an unsigned frame")
            _require(env.box is not None and env.seq is not None, "wrote an unsealed frame")
            _require(not seqs or env.seq > seqs[-1], "seq went backwards")
            seqs.append(env.seq)
    return label


# --- the pre-authentication WebSocket path (hd_node) -----------------------------------


def _open_ws_pair() -> tuple[WSConnection, Any]:
    """(client, server connection) of a WebSocket already past its upgrade."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(WsRequest(host="node", target="/peer-ws")))
    for _ in server.events():
        pass
    client.receive_data(server.send(AcceptConnection()))
    for _ in client.events():
        pass
    return client, server.connection


def preauth_ws(data: bytes) -> str:
    """What a client sends right after the upgrade, read by a peer listener that has
    not yet seen a handshake (``hd_shell.ws.inbound.Inbound`` with the peer listener's
    pre-authentication budget). ``data[0]`` sets the read size; the rest is the bytes.

    Invariants: parsing never raises; no message over the budget's size comes out; no
    message comes out of a pass after the one that ended reading; more bytes than the
    budget allows always end reading."""
    if not data:
        return "empty"
    _, conn = _open_ws_pair()
    inbound = Inbound(conn, "192.0.2.1", "direct", max_message_size=1 << 20,
                      max_fragments=1024, max_pings=20, preauth=PREAUTH,
                      clock=time.monotonic)
    step = 1 + data[0] * 7
    label = "open"
    for i in range(1, len(data), step):
        if inbound.failure is not None:
            break
        chunk = data[i:i + step]
        inbound.note_bytes(len(chunk))
        try:
            conn.receive_data(chunk)
        except Exception:
            label = "refused_by_wsproto"
            break
        for _ in range(64):
            inbound.process(False)
            if not inbound.more_buffered:
                break
        for m in inbound.take_ready():
            _require(len(m) <= PREAUTH.max_message_size, "a message over the budget came out")
            label = "message"
    if inbound.bytes_in > PREAUTH.max_bytes:
        inbound.process(False)
        _require(inbound.failure is not None, "the byte budget did not end reading")
    if inbound.failure is not None:
        inbound.take_ready()  # what completed before the end was handed out
        inbound.process(False)
        _require(inbound.take_ready() == [], "a message came out after reading ended")
        label = f"closed:{inbound.failure[0]}"
    return label


# --- seeds --------------------------------------------------------------------------


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs per target (generated, deterministic): what the fuzzer starts from."""
    (hello, ack, auth, result), _, _ = honest_run()
    local, peer = _sessions("trusted")
    chat = _only(peer.send("peer_chat", {"text": "hi", "from_name": "p"}, NOW)[1],
                 SessionSend).wire
    ping = _only(peer.send("ping", {}, NOW)[1], SessionSend).wire
    plain = encode_envelope(sign_envelope(make_envelope(
        "presence", msg_id="5" * 32, src=DIALER.node_id, dst=ACCEPTOR.node_id, ts=NOW,
        data={"node_name": "d ☕", "capabilities": ["collab"], "n": [1, None, True]},
    ), DIALER))
    inv = encode_invite(
        addrs=[make_candidate("host", "ws://127.0.0.1:8766/peer-ws")], exp=NOW,
        node_id=DIALER.node_id, public_key=DIALER.public_key, token=TOKEN,
    )
    ws = [
        encode_ws_frame("network", "list_peers"),
        encode_ws_frame("collab", "op", {"paneKey": "p", "baseRev": 3, "text": "x\n"}),
        encode_ws_frame("peerchat", "send", {"node_id": DIALER.node_id, "text": "é"}),
        '{"channel":"agent","event":"ask","data":null}',
    ]
    hs = [bytes([m]) + w.encode() for m, w in ((0, hello), (1, auth), (2, ack), (3, result))]
    hs += [bytes([m | 4]) + w.encode() for m, w in ((1, auth), (2, ack))]
    # slot n + 3 keeps the honest content (n = number of fields): hello 6, hello_ack
    # 7, auth 3, auth_result 3.
    signed = [
        bytes([128 | which | slot << 2 | accept << 6]) + b"null"
        for which, keep in ((0, 9), (1, 10), (2, 6), (3, 6))
        for slot in (0, 1, keep) for accept in (0, 1)
    ]
    sess = [b"\x00" + chat.encode(), b"\x00" + ping.encode(), b"\x00" + chat.encode()[:-9]]
    sess += [bytes([1 + 2 * i]) + b'{"text":"t","code":"c","reason":"r"}' for i in range(16)]
    sess += [bytes([1 + 2 * i + 64]) + b'"x"' for i in range(16)]
    return {
        "envelope": [plain.encode(), chat.encode(), hello.encode(), ack.encode()],
        "ws": [w.encode() for w in ws],
        "invite": [inv.encode(), (inv + "\n").encode()],
        "handshake": hs + signed,
        "session": sess,
        "preauth_ws": _preauth_seeds(),
        "handshake_state": _handshake_state_seeds(),
        "stun": [encode_binding_request(STUN_TXID, software="hd"),
                 encode_binding_request(STUN_TXID, key=b"k", username="u"),
                 bytes.fromhex("0101003c2112a442b7e7a701bc34d686fa87dfae8022000b74657374"
                               "20766563746f722000200008" "0001a147e112a643000800142b91f5"
                               "99fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96")],
        "connection": [b"T\n\nTT", b'P\x00{"text":"hi","from_name":"p"}', b"T\n\nT\n\nT\n\nT\n\nT",
                       b'P\x01{}\n\nP\x02"bye"', chat.encode(), b"\x00" * 40],
    }


def _handshake_state_seeds() -> list[bytes]:
    """Each state with each type under the honest content (the ``mutate`` slot that
    keeps it), and the honest frame with a wrong ``re`` and with its sealing flipped."""
    out = []
    for i, name in enumerate(HS_STATES):
        keep = len(hs_stage(name).content) + 3
        out += [bytes([i, t, keep]) + b"null" for t in range(len(HS_STATE_TYPES))]
        natural = HS_STATE_TYPES.index(hs_stage(name).natural)
        out += [bytes([i, natural | flag, keep]) + b"null" for flag in (8, 16, 32)]
    return out


def _preauth_seeds() -> list[bytes]:
    client, _ = _open_ws_pair()
    hello = encode_envelope(sign_envelope(make_envelope(
        "hello", msg_id="6" * 32, src=DIALER.node_id, dst=None, ts=NOW,
        data={"x": "y"}), DIALER))
    frames = [client.send(TextMessage(data=hello)),
              b"".join(client.send(TextMessage(data="ab", message_finished=False))
                       for _ in range(6)),
              b"".join(client.send(Ping(payload=b"p")) for _ in range(4)),
              client.send(CloseConnection(code=1000))]
    return [bytes([3]) + f for f in frames] + [bytes([0]) + frames[0]]


STUN_TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")  # RFC 5769's


def stun(data: bytes) -> str:
    """``decode_message`` on any datagram: a ``StunMessage`` or ``StunError``, with or
    without a key; a client waiting on that txid takes it, ignores it, or ends — and
    never raises."""
    ok, msg = _attempt(decode_message, data)
    keyed, _ = _attempt(lambda d: decode_message(d, key=b"VOkJxbRl1RmTxUk/WvJxBt"), data)
    _require(ok == keyed, "a key changed whether the message decodes")
    client = StunClient(STUN_TXID, rto_ms=10, max_sends=2)
    client.start(0)
    res = client.receive(data, 1)
    _require(res is None or not ok or msg.txid == STUN_TXID, "took another txid's answer")
    _require(res is None or client.result == res, "a result the client did not keep")
    return "ok" if ok else str(msg)


def handshake_any(data: bytes) -> str:
    """Harness entry: the first byte's top bit picks raw frames or the hostile signer."""
    if not data:
        return "empty"
    if data[0] & 128:
        return signed_handshake(bytes([data[0] & 127]) + data[1:])
    return handshake(data)


TARGETS: dict[str, Callable[[bytes], str]] = {
    "envelope": envelope,
    "ws": ws_frame,
    "invite": invite,
    "handshake": handshake_any,
    "handshake_state": handshake_state,
    "session": session,
    "connection": connection,
    "preauth_ws": preauth_ws,
    "stun": stun,
}
