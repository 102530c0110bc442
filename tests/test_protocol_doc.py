"""docs/protocol.md must not drift from hd_protocol or from the conformance vectors.

The document marks what can be checked:

- fenced blocks ```` ```vector FILE ```` hold ``path: value`` lines quoted from one case
  of ``tests/vectors/FILE`` (``path`` is the key path inside the case, e.g.
  ``decoded.addrs[0].url``); every line must be found verbatim in one and the same case;
- fenced blocks ```` ```derived FILE WHAT ```` show a value computed from a case (hex as
  text, the AEAD inputs, ...); the test recomputes it and demands the same text;
- an HTML comment ``<!-- check: NAME -->`` before a table ties the table's first column
  (or its values) to a name set or constant in ``hd_protocol``;
- prose statements of constants (prefixes, timers, limits) are matched against text
  built from the code's values.

So a change of a constant in the code, an edit of a value in the document, or a change
of a vector each fails here until the other side is updated.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hd_protocol import (
    Acceptor,
    Decision,
    Dialer,
    Identity,
    admission,
    candidates,
    canonical_json,
    chat,
    connection,
    decode_envelope,
    decode_invite,
    envelope,
    handshake,
    hello,
    make_candidate,
    open_envelope,
    records,
    seal,
    session,
    signing_bytes,
)
from hd_protocol.limits import DEFAULT_LIMITS, Limits
from hd_protocol.peer.connection import RttEstimator
from hd_protocol.peer.presence import presence_data

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "docs" / "protocol.md"
VECTORS = ROOT / "tests" / "vectors"
DOC = DOC_PATH.read_text("utf-8")

_FENCE_RE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
_PATH_TOKEN_RE = re.compile(r"\.?([A-Za-z_]\w*)|\[(\d+)\]")
_MISSING = object()


# --- helpers ------------------------------------------------------------------------------


def fenced_blocks(kind: str) -> list[tuple[list[str], str]]:
    """(info words after ``kind``, body without its final newline) of every block."""
    out = []
    for m in _FENCE_RE.finditer(DOC):
        words = m.group(1).split()
        if words and words[0] == kind:
            out.append((words[1:], m.group(2).removesuffix("\n")))
    return out


def load_vector(name: str) -> dict[str, Any]:
    path = VECTORS / name
    assert path.is_file(), f"no vector file {name}"
    return json.loads(path.read_text("utf-8"))  # type: ignore[no-any-return]


def cases(name: str) -> list[dict[str, Any]]:
    """Every case of a vector file: the objects in its top-level lists."""
    out: list[dict[str, Any]] = []
    for value in load_vector(name).values():
        if isinstance(value, list):
            out.extend(c for c in value if isinstance(c, dict))
    assert out, f"{name} has no cases"
    return out


def parse_path(label: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    pos = 0
    while pos < len(label):
        m = _PATH_TOKEN_RE.match(label, pos)
        assert m is not None and (m.group(0)[0] != "." or pos > 0), f"bad path {label!r}"
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    assert parts, "empty path"
    return tuple(parts)


def lookup(case: Any, path: tuple[str | int, ...]) -> Any:
    value = case
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return _MISSING
        elif not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def render(value: Any) -> str:
    """A leaf as the document writes it: strings as themselves, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def table_after(marker: str) -> list[list[str]]:
    """The data rows (cells stripped) of the first table after ``<!-- check: marker -->``."""
    tag = f"<!-- check: {marker} -->"
    assert DOC.count(tag) == 1, f"the document needs exactly one {tag}"
    lines = DOC.split(tag, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert len(rows) >= 3, f"table after {tag} is empty"
    assert set(rows[1][0]) <= set("-: "), f"table after {tag} has no header separator"
    return rows[2:]


def code_name(cell: str) -> str:
    m = re.fullmatch(r"`([^`]+)`", cell)
    assert m is not None, f"first column must be one `name`, got {cell!r}"
    return m.group(1)


def first_column(marker: str) -> list[str]:
    return [code_name(row[0]) for row in table_after(marker)]


def resolve(ref: str) -> Any:
    """``module.NAME``, ``module.NAME["key"]``, ``module.NAME.attr`` in hd_protocol."""
    m = re.fullmatch(r"(\w+)((?:\.\w+|\[\"\w+\"\]|\[\d+\])*)", ref)
    assert m is not None, f"cannot resolve {ref!r}"
    value: Any = importlib.import_module(f"hd_protocol.{m.group(1)}")
    for attr, key, idx in re.findall(r"\.(\w+)|\[\"(\w+)\"\]|\[(\d+)\]", m.group(2)):
        value = getattr(value, attr) if attr else value[key] if key else value[int(idx)]
    return value


_UNITS = {"ms": 1, "s": 1000, "h": 3_600_000, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def parse_quantity(cell: str) -> int:
    """``250 ms`` -> 250, ``10 s`` -> 10000, ``1 MiB`` -> 1048576, ``64`` -> 64; text in
    parentheses after the quantity is a remark."""
    m = re.fullmatch(r"(\d+)(?:\s*(ms|s|h|KiB|MiB|GiB))?(?:\s*\(.*\))?", cell)
    assert m is not None, f"not a quantity: {cell!r}"
    return int(m.group(1)) * _UNITS[m.group(2)] if m.group(2) else int(m.group(1))


def shown(value: bytes | str) -> str:
    """A prefix as the document writes it inside backticks (a line feed as ``\\n``)."""
    text = value.decode("ascii") if isinstance(value, bytes) else value
    return text.replace("\n", "\\n")


# --- derived values: how each ``derived FILE WHAT`` block is recomputed ----------------


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _seal_env(c: dict[str, Any]) -> Any:
    return decode_envelope(c["wire"])


def _raw_key(c: dict[str, Any]) -> bytes:
    return base64.b64decode(c["public_key"], validate=True)


DERIVED: dict[tuple[str, str], Callable[[dict[str, Any]], str | None]] = {
    ("cjson.json", "canonical_text"):
        lambda c: bytes.fromhex(c["canonical_hex"]).decode() if "canonical_hex" in c else None,
    ("identity.json", "public_key_raw_hex"): lambda c: _raw_key(c).hex(),
    ("identity.json", "sha256_hex"): lambda c: hashlib.sha256(_raw_key(c)).hexdigest(),
    ("identity.json", "base32_lower"):
        lambda c: base64.b32encode(hashlib.sha256(_raw_key(c)).digest()).decode().lower(),
    ("envelope.json", "signing_bytes_text"):
        lambda c: (bytes.fromhex(c["signing_bytes_hex"]).decode()
                   if "signing_bytes_hex" in c else None),
    ("seal.json", "box_nonce_hex"): lambda c: seal.box_nonce(_seal_env(c).seq).hex(),
    ("seal.json", "box_aad_text"): lambda c: seal.box_aad(_seal_env(c)).decode(),
    ("seal.json", "plaintext_text"): lambda c: canonical_json(
        open_envelope(_seal_env(c), bytes.fromhex(c["key_hex"]))).decode(),
    ("seal.json", "signing_bytes_text"): lambda c: signing_bytes(_seal_env(c)).decode(),
    ("handshake.json", "auth_payload_text"): lambda c: canonical_json(open_envelope(
        decode_envelope(c["auth"]), bytes.fromhex(c["key_dialer_to_acceptor_hex"]))).decode(),
    ("invite.json", "body_text"):
        lambda c: _b64url(c["invite"].removeprefix(admission.INVITE_PREFIX)).decode(),
}

VECTOR_BLOCKS = fenced_blocks("vector")
DERIVED_BLOCKS = fenced_blocks("derived")


# --- the document stands alone -------------------------------------------------------------


def test_doc_stands_alone_and_has_its_sections() -> None:
    for forbidden in ("../shared", "SPEC.md", "/work/"):
        assert forbidden not in DOC, f"docs/protocol.md mentions {forbidden!r}"
    assert "\n## 18. Notes for implementers\n" in DOC
    # Every internal link points at a heading that exists (GitHub-style anchors).
    anchors = set()
    for title in re.findall(r"^#{2,3} (.+)$", DOC, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        anchors.add(slug)
    for target in re.findall(r"\]\(#([^)]+)\)", DOC):
        assert target in anchors, f"broken link #{target}"


# --- quoted vectors ------------------------------------------------------------------------


def test_every_vector_file_has_a_worked_example() -> None:
    quoted = {words[0] for words, _ in VECTOR_BLOCKS if words}
    assert quoted == {p.name for p in VECTORS.glob("*.json")}


@pytest.mark.parametrize("words, body", VECTOR_BLOCKS,
                         ids=[f"{w[0] if w else '?'}-{i}" for i, (w, _) in
                              enumerate(VECTOR_BLOCKS)])
def test_vector_block_is_quoted_verbatim_from_one_case(words: list[str], body: str) -> None:
    assert len(words) == 1, "a vector block names exactly one file"
    lines = [line for line in body.splitlines() if line.strip()]
    assert lines, "empty vector block"
    pairs = []
    for line in lines:
        label, sep, value = line.partition(": ")
        assert sep, f"vector line is not 'path: value': {line!r}"
        pairs.append((parse_path(label), value))

    def matches(case: dict[str, Any]) -> bool:
        for path, value in pairs:
            leaf = lookup(case, path)
            if leaf is _MISSING or isinstance(leaf, dict | list) or render(leaf) != value:
                return False
        return True

    if not any(matches(c) for c in cases(words[0])):
        # Say which line is the problem: one found in no case at all.
        for path, value in pairs:
            found = any(
                (leaf := lookup(c, path)) is not _MISSING and render(leaf) == value
                for c in cases(words[0])
            )
            assert found, f"{words[0]}: {'.'.join(map(str, path))} is not {value!r}"
        pytest.fail(f"{words[0]}: the lines of this block come from different cases")


def test_derived_blocks_cover_what_the_test_knows() -> None:
    assert DERIVED_BLOCKS, "the document shows derived values"
    for words, _ in DERIVED_BLOCKS:
        assert len(words) == 2 and tuple(words) in DERIVED, f"unknown derived block {words}"


@pytest.mark.parametrize("words, body", DERIVED_BLOCKS,
                         ids=[" ".join(w) for w, _ in DERIVED_BLOCKS])
def test_derived_block_is_recomputed_from_the_vector(words: list[str], body: str) -> None:
    derive = DERIVED[(words[0], words[1])]
    values = {v for c in cases(words[0]) if (v := derive(c)) is not None}
    assert body in values, f"{' '.join(words)}: expected one of {sorted(values)!r}"


# --- tables tied to the code ---------------------------------------------------------------


MARKERS = {
    "envelope-fields", "hello-fields", "auth-payload", "auth-result-payload",
    "handshake-reasons", "invite-fields", "session-types", "presence-fields",
    "collab-op-fields", "chat-fields", "chat-ack-fields", "candidate-fields", "limits",
    "constants",
}


def test_every_check_marker_is_known() -> None:
    assert set(re.findall(r"<!-- check: ([\w-]+) -->", DOC)) == MARKERS


def test_envelope_fields_in_wire_order() -> None:
    assert tuple(first_column("envelope-fields")) == envelope.FIELDS


def test_hello_fields() -> None:
    assert set(first_column("hello-fields")) == hello.HELLO_ACK_FIELDS
    assert {"echo"} == hello.HELLO_ACK_FIELDS - hello.HELLO_FIELDS


def _handshake_frames() -> tuple[dict[str, Any], dict[str, Any]]:
    """An in-memory handshake; the opened payloads of auth and auth_result."""
    counter = iter(range(10_000))

    def rng(n: int) -> bytes:
        return hashlib.sha256(b"doc-%d" % next(counter)).digest()[:n]

    a = Identity.from_seed(rng(32))
    b = Identity.from_seed(rng(32))
    dialer = Dialer(a, rng=rng, now=0, expected_node_id=b.node_id)
    acceptor = Acceptor(b, rng=rng, now=0)
    (hello_frame,) = dialer.start(0)
    (ack,) = acceptor.receive(hello_frame.wire, 1)  # type: ignore[union-attr]
    dialer.receive(ack.wire, 2)  # type: ignore[union-attr]
    (auth,) = dialer.admit(Decision(level="trusted"), 3)
    acceptor.receive(auth.wire, 4)  # type: ignore[union-attr]
    result, done = acceptor.admit(Decision(level="guest"), 5)
    keys = done.result  # type: ignore[union-attr]
    auth_payload = open_envelope(decode_envelope(auth.wire), keys.key_rx)  # type: ignore[union-attr]
    result_payload = open_envelope(decode_envelope(result.wire), keys.key_tx)  # type: ignore[union-attr]
    return auth_payload, result_payload


def test_auth_and_auth_result_payloads() -> None:
    auth_payload, result_payload = _handshake_frames()
    assert set(first_column("auth-payload")) == set(auth_payload)
    assert set(first_column("auth-result-payload")) == set(result_payload)
    assert result_payload == {"ok": True, "level": "guest", "reason": None}


def test_handshake_reasons() -> None:
    assert set(first_column("handshake-reasons")) == set(handshake.REASONS)


def test_invite_fields() -> None:
    (case,) = cases("invite.json")
    assert set(first_column("invite-fields")) == set(decode_invite(case["invite"]))


def test_session_types_and_guest_permissions() -> None:
    rows = table_after("session-types")
    assert {code_name(r[0]) for r in rows} == session.KNOWN_TYPES
    assert all(r[-1] in ("yes", "no") for r in rows)
    assert {code_name(r[0]) for r in rows if r[-1] == "yes"} == session.GUEST_TYPES
    assert not session.KNOWN_TYPES & session.HANDSHAKE_TYPES


def test_presence_fields() -> None:
    assert set(first_column("presence-fields")) == set(presence_data("", [], []))


def test_collab_and_chat_fields() -> None:
    assert set(first_column("collab-op-fields")) == records.OP_FIELDS
    assert set(first_column("chat-fields")) == chat.CHAT_FIELDS
    assert set(first_column("chat-ack-fields")) == chat.ACK_FIELDS


def test_candidate_fields() -> None:
    assert set(first_column("candidate-fields")) == set(
        make_candidate("host", "ws://192.0.2.1:8766/peer-ws"))


def test_limits_table_matches_limits() -> None:
    rows = table_after("limits")
    names = [code_name(r[2]) for r in rows]
    fields = [f.name for f in dataclasses.fields(Limits)]
    assert sorted(names) == sorted(fields), "every Limits field appears exactly once"
    for row, name in zip(rows, names, strict=True):
        assert parse_quantity(row[1]) == getattr(DEFAULT_LIMITS, name), row


def test_constants_table_matches_the_code() -> None:
    rows = table_after("constants")
    for row in rows:
        value = resolve(code_name(row[2]))
        m = re.fullmatch(r"`([^`]+)`", row[1])
        if m is not None:
            assert isinstance(value, bytes | str), row
            assert shown(value) == m.group(1), row
        else:
            assert type(value) is int, row
            assert parse_quantity(row[1]) == value, row


# --- constants stated in the prose ---------------------------------------------------------


def _prose_claims() -> Iterator[str]:
    lim = DEFAULT_LIMITS
    offsets = candidates.START_OFFSETS_MS

    def secs(ms: int) -> str:
        return f"{ms / 1000:g} s"

    yield f'signing bytes = "{shown(envelope.SIGN_PREFIX)}"'
    yield f"the 8 ASCII bytes `{envelope.SIGN_PREFIX.decode().strip()}` plus a line feed"
    assert len(envelope.SIGN_PREFIX) == 8 and envelope.SIGN_PREFIX.endswith(b"\n")
    yield f'| associated data | `"{shown(envelope.BOX_PREFIX)}"`'
    yield f'info = "{hello.KDF_INFO.decode()}", length = 64'
    yield "key dialer→acceptor = okm[0:32]\nkey acceptor→dialer = okm[32:64]"
    yield f'"{admission.INVITE_PREFIX}" + base64url_no_padding'
    yield f"| `proto` | `\"{hello.PROTO}\"`"
    # Envelope and handshake limits.
    yield f"the frame is over {lim.max_envelope_bytes // 1024**2} MiB (UTF-8 bytes)"
    yield f"0 ..= {envelope.MAX_TTL}, we send {envelope.DEFAULT_TTL}"
    yield f"gives up {secs(lim.handshake_timeout_ms)} after the link opened"
    yield (f"runs at most {lim.handshakes_in_flight} handshakes at once, at most "
           f"{lim.handshakes_per_address} of them from one remote address, and keeps at most "
           f"{lim.sessions_per_node} sessions")
    from hd_shell.listener import PREAUTH, peer_listener_limits

    yield (f"messages of at most {PREAUTH.max_message_size // 1024} KiB, at most "
           f"{PREAUTH.max_fragments} fragments per message, at most {PREAUTH.max_pings} pings "
           f"and {PREAUTH.max_bytes // 1024} KiB in all")
    peer = peer_listener_limits(lim.max_envelope_bytes)
    yield (f"({peer.max_connections} in all, {peer.max_connections_per_address} per remote "
           f"address, {int(peer.new_connections_per_address_per_s)} new ones per second per "
           f"address) and gives a request head {int(peer.head_timeout_s)} s")
    yield f"less than one handshake timeout ({secs(lim.handshake_timeout_ms)}) apart"
    # The lobby and the relay broker (section 19).
    import inspect

    from hd_protocol import lobby as lobby_mod
    from hd_protocol import relay as relay_mod

    relay_defaults = inspect.signature(relay_mod.RelayServer).parameters
    yield (f"on the lobby {lim.rate_per_s} frames/s with bursts\nof {lim.rate_burst}")
    yield (f"{relay_defaults['data_rate_per_s'].default:,}/s (bursts of "
           f"{relay_defaults['data_burst'].default:,})").replace(",", " ")
    yield f"every `heartbeat_s` (default {lobby_mod.HEARTBEAT_S})"
    yield "silent for three heartbeats" if lobby_mod.MISSED_HEARTBEATS == 3 else "?"
    yield (f"at most {lim.rooms_per_host} rooms per host, {lim.members_per_room} members "
           "per room")
    yield (f"At most {lim.relay_queue_envelopes} envelopes and "
           f"{lim.relay_queue_bytes // 1024**2} MiB per\n  destination, "
           f"{lim.relay_total_bytes // 1024**3} GiB in all, "
           f"{lim.relay_queue_age_ms // 3600_000} h each")
    yield f"one batch every {lobby_mod.PRESENCE_BATCH_MS} ms"
    # Sessions.
    yield f"after {lim.session_failures_before_close} failures the session"
    yield f"Default reply deadline: {secs(lim.request_timeout_ms)}."
    yield f"the last {session._EXPIRED_MEMORY} expired ids"
    yield (f"sends `ping {{}}` {secs(connection.FIRST_PING_MS)} after the session opened "
           f"(so an RTT is known\n  at once) and every {secs(lim.ping_interval_ms)} after "
           f"that, each as a request with a {secs(lim.ping_timeout_ms)} deadline")
    yield (f"At\n  {lim.ping_misses_before_close} misses the session is closed with "
           '`bye {reason: "timeout"}`')
    yield "RTTVAR = (1 − 1/4)·RTTVAR + 1/4·|SRTT − R|"
    yield "SRTT = (1 − 1/8)·SRTT + 1/8·R"
    yield (f"backoff ({secs(lim.reconnect_min_ms)} doubling to "
           f"{secs(lim.reconnect_max_ms)}")
    yield f"is {lim.inbound_queue}\nenvelopes"
    # Features.
    yield f"`text` (at most {lim.collab_text_bytes // 1024} KiB of UTF-8)"
    yield f"then 1 byte .. {lim.chat_text_bytes // 1024} KiB of UTF-8"
    yield f"at most {lim.addresses} peer addresses"
    yield f"**Lifetime** {lim.invite_ttl_ms // 3_600_000} h by default"
    yield f"at most {admission.MAX_INVITE_CHARS} characters"
    # Candidates and the ladder.
    prefs = candidates.TYPE_PREF
    yield (f"type_pref {prefs['host']} for `host`, {prefs['srflx']} for `srflx`, "
           f"{prefs['relay']} for `relay`")
    yield f"has priority\n{candidates.priority('host', 65535)}"
    yield f"the next {candidates.STAGGER_MS} ms later"
    yield f"every {candidates.STAGGER_MS} ms while no dial"
    yield (f"WebRTC (when available) starts {secs(offsets['webrtc'])} after the start and "
           f"the relay {secs(offsets['relay'])} after")
    yield f"the ladder gives up after {secs(candidates.LADDER_DEADLINE_MS)} (`timeout`)"


def _flat(text: str) -> str:
    """Whitespace runs as one space: a claim does not depend on where a line wraps."""
    return " ".join(text.split())


@pytest.mark.parametrize("claim", list(_prose_claims()))
def test_prose_states_the_code_values(claim: str) -> None:
    assert _flat(claim) in _flat(DOC)


def test_every_prefix_and_proto_mentioned_is_the_codes() -> None:
    from hd_protocol import frames

    known = {shown(v) for v in (envelope.SIGN_PREFIX, envelope.BOX_PREFIX, hello.KDF_INFO,
                                admission.INVITE_PREFIX, admission.ATTEST_PREFIX,
                                frames.REGISTER_PREFIX, frames.ATTACH_PREFIX)}
    known |= {k.removesuffix("\\n") for k in known}
    for text in re.findall(r"[\"`](hd1[^\"`]*)[\"`]", DOC):
        if text.startswith(admission.INVITE_PREFIX + "ey"):
            continue  # the invite string quoted from the vector
        assert text in known, f"the document names an unknown prefix {text!r}"
    assert set(re.findall(r"hd/\d+", DOC)) == {hello.PROTO}


# --- the recipes in the prose reproduce the vectors ----------------------------------------


def test_key_schedule_as_written_reproduces_the_vector() -> None:
    (c,) = cases("handshake.json")
    hello_env, ack = decode_envelope(c["hello"]), decode_envelope(c["hello_ack"])
    own = X25519PrivateKey.from_private_bytes(bytes.fromhex(c["dialer_eph_seed_hex"]))
    peer = X25519PublicKey.from_public_bytes(base64.b64decode(ack.data["eph"]))
    th = hashlib.sha256(signing_bytes(hello_env) + signing_bytes(ack)).digest()
    assert th.hex() == c["transcript_hash_hex"]
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=th,
               info=b"hd1 session keys").derive(own.exchange(peer))
    assert okm[0:32].hex() == c["key_dialer_to_acceptor_hex"]
    assert okm[32:64].hex() == c["key_acceptor_to_dialer_hex"]
    assert hello.KDF_INFO == b"hd1 session keys"


def test_node_id_recipe_as_written() -> None:
    for c in cases("identity.json"):
        digest = hashlib.sha256(_raw_key(c)).digest()
        assert base64.b32encode(digest).decode().lower()[:16] == c["node_id"]


def test_rtt_smoothing_uses_rfc6298_gains() -> None:
    rtt = RttEstimator()
    rtt.observe(100)
    assert (rtt.srtt_ms, rtt.rttvar_ms) == (100, 50)
    rtt.observe(200)
    assert rtt.rttvar_ms == 0.75 * 50 + 0.25 * abs(100 - 200)
    assert rtt.srtt_ms == 0.875 * 100 + 0.125 * 200


def test_minted_invite_tokens_are_24_random_bytes() -> None:
    token = admission.new_token(lambda n: bytes(range(n)))
    assert "We mint 24 random bytes as base64url (192 bits)" in DOC
    assert len(_b64url(token)) == 24 and "=" not in token
