"""A relay passes an envelope on as the sender wrote it but for its ``ttl``
(``hd_protocol.brokers.frames.relayed_wire``, ``envelope.with_ttl``): whatever the
envelope, and however its frame is laid out, what goes out decodes to exactly the
checked envelope with ``ttl`` lowered — and is the same text the relay would encode."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hd_protocol import Identity, encode_envelope, make_envelope, sign_envelope
from hd_protocol.brokers.frames import decode_frame, encode_value, relayed_wire
from hd_protocol.brokers.relay import check_relayed, relay_frame
from hd_protocol.cjson import MAX_INT
from hd_protocol.envelope import with_ttl

SETTINGS = settings(max_examples=150, deadline=None)
IDENTITIES = [Identity.from_seed(bytes([i]) * 32) for i in range(2)]
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
keys = st.sampled_from(["ttl", "v", "data", "sig", "x", ""])  # the envelope's own too
values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_INT, MAX_INT) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8)


def relayed(frame: str | bytes) -> tuple[dict[str, Any], str]:
    f = decode_frame(frame, 1 << 22)
    env = check_relayed(f["envelope"], f["envelope"]["src"], f["to"])
    return env, relayed_wire(frame, f["to"], env)


@SETTINGS
@given(type_=st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
       msg_id=st.binary(min_size=16, max_size=16).map(bytes.hex),
       re=st.none() | st.binary(min_size=16, max_size=16).map(bytes.hex),
       ts=st.integers(0, MAX_INT), ttl=st.integers(1, 16),
       seq=st.none() | st.integers(0, MAX_INT),
       data=st.dictionaries(keys, values, max_size=4))
def test_the_text_passed_on_is_the_checked_envelope_with_its_ttl_lowered(
    type_: str, msg_id: str, re: str | None, ts: int, ttl: int, seq: int | None,
    data: dict[str, Any],
) -> None:
    a, b = IDENTITIES
    env = sign_envelope(make_envelope(type_, msg_id=msg_id, re=re, src=a.node_id,
                                      dst=b.node_id, ts=ts, ttl=ttl, seq=seq, data=data), a)
    out_env, wire = relayed(relay_frame(b.node_id, encode_envelope(env)))
    assert json.loads(wire) == out_env and out_env["ttl"] == ttl - 1
    assert wire == encode_value(out_env)  # as nodes write it: the very text re-encoding gives
    text = encode_envelope(env)
    assert with_ttl(text, json.loads(text), ttl - 1) == wire  # and by the splice, not again


ODD_LAYOUTS = [
    # data first, with a "ttl" of its own: the top-level one is not the first in the text
    lambda e: '{"data":{"ttl":99},' + e[1:].replace(',"data":{}', ""),
    # spaces after the separators: decodes the same, begins differently
    lambda e: e.replace('","', '", "'),
    # a space between the ttl's digits and the next comma: the splice needs the comma
    lambda e: e.replace(',"seq":', ' ,"seq":'),
]


@pytest.mark.parametrize("layout", range(len(ODD_LAYOUTS)))
def test_a_frame_not_laid_out_as_nodes_write_it_is_encoded_again_never_spliced_wrong(
    layout: int,
) -> None:
    a, b = IDENTITIES
    env = sign_envelope(make_envelope("chat", msg_id="ab" * 16, src=a.node_id,
                                      dst=b.node_id, ts=5, ttl=7, data={}), a)
    text = ODD_LAYOUTS[layout](encode_envelope(env))
    frame = f'{{"type":"relay","to":"{b.node_id}","envelope":{text}}}'
    assert with_ttl(text, json.loads(text), 6) is None  # not spliced: encoded again
    out_env, wire = relayed(frame)
    assert json.loads(wire) == out_env and out_env["ttl"] == 6
    assert json.loads(wire)["data"] == json.loads(text)["data"]


def test_with_ttl_takes_only_the_layout_encode_envelope_writes() -> None:
    obj = {"v": 1, "type": "t", "msg_id": "ab", "re": None, "src": "s1", "dst": "d1",
           "ts": 5, "ttl": 3}
    head = '{"v":1,"type":"t","msg_id":"ab","re":null,"src":"s1","dst":"d1","ts":5,"ttl":'
    assert with_ttl(head + '3,"seq":null}', obj, 2) == head + '2,"seq":null}'
    assert with_ttl(head + '3}', obj, 2) is None  # no "," after the number
    assert with_ttl(head + '3.0,"x":1}', obj, 2) is None
    assert with_ttl(head + '"3","x":1}', obj, 2) is None
    assert with_ttl(head.replace('"ts":5', '"ts":6') + '3,"x":1}', obj, 2) is None
    assert with_ttl(head + '3,"x":1}', {**obj, "msg_id": 'a"b'}, 2) is None
    assert with_ttl(head + '3,"x":1}', {**obj, "v": True}, 2) is None
    # Bytes (a binary frame) are never spliced.
    assert relayed_wire(b"{}", "d1", {**obj, "ttl": 2}) == encode_value({**obj, "ttl": 2})
