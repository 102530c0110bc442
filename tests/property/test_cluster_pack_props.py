"""``pack``: what a cluster adapter cuts a batch of messages into, one bus message each.

Invariants: every item that fits is in exactly one list, in order; every list is a JSON
list within both bounds; an item that does not fit a list alone is reported, never sent.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from hd_protocol.brokers.cluster_view import pack

ITEMS = st.lists(st.text(alphabet="abcé\"\\", max_size=40).map(
    lambda t: json.dumps(t, ensure_ascii=False).encode()), max_size=60)


@given(ITEMS, st.integers(min_value=2, max_value=120), st.integers(min_value=1, max_value=9))
def test_every_item_goes_once_in_order_within_the_bounds(
    items: list[bytes], max_bytes: int, max_items: int,
) -> None:
    lists, too_big = pack(items, max_bytes=max_bytes, max_items=max_items)
    assert too_big == [i for i, it in enumerate(items) if len(it) + 2 > max_bytes]
    sent = [json.loads(data) for data in lists]
    assert all(1 <= len(part) <= max_items for part in sent)
    assert all(len(data) <= max_bytes for data in lists)
    assert [x for part in sent for x in part] == [
        json.loads(it) for i, it in enumerate(items) if i not in too_big]


def test_lists_are_as_full_as_the_bounds_allow() -> None:
    items = [b'"%03d"' % i for i in range(10)]  # 5 bytes each
    assert pack(items, max_bytes=1000, max_items=4)[0] == [
        b'["000","001","002","003"]', b'["004","005","006","007"]', b'["008","009"]']
    lists, too_big = pack(items, max_bytes=13, max_items=100)  # [a,b] is 13 bytes
    assert [len(json.loads(d)) for d in lists] == [2] * 5 and too_big == []
    assert pack([b'"x"', b'"' + b"y" * 20 + b'"'], max_bytes=10, max_items=5) == (
        [b'["x"]'], [1])
