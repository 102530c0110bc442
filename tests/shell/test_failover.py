"""``hd_node.failover``: which instance of a lobby or relay a node uses next, and when.

Table-driven on a fixed ``rng`` (no jitter: every wait is the lower half of its step),
so each wait is exact: 250 ms between two instances of a round, the usual backoff
(500 ms, 1 s, 2 s, ... up to 60 s) after a whole round failed.
"""

from __future__ import annotations

import pytest

from hd_node.failover import SWITCH_MS, Failover, relay_beside, relay_urls_for
from hd_protocol import reconnect_delay_ms

A, B, C = (f"ws://10.0.0.{i}:8080/lobby-ws" for i in (1, 2, 3))


def no_jitter(n: int) -> bytes:
    return bytes(n)


def _walk(ring: Failover, steps: str) -> list[tuple[str, int | None]]:
    """``l``: the connection was lost (or the dial failed); ``u``: it came up. Each step
    gives the URL in use after it and, for a loss, the wait before the next dial."""
    out: list[tuple[str, int | None]] = []
    for step in steps:
        if step == "l":
            wait = ring.lost()
            out.append((ring.current, wait))
        else:
            ring.up()
            out.append((ring.current, None))
    return out


def test_one_url_waits_exactly_the_backoff_a_node_always_had() -> None:
    ring = Failover([A], no_jitter)
    waits = [ring.lost() for _ in range(9)]
    assert waits == [reconnect_delay_ms(i, no_jitter) for i in range(9)]
    assert waits[:3] == [500, 1000, 2000] and waits[-1] == 30_000  # 60 s step, no jitter
    assert ring.current == A
    ring.up()
    assert ring.lost() == 500  # a good connection starts the backoff again


@pytest.mark.parametrize(("urls", "steps", "expected"), [
    # two instances: the second at once, then the first again after a full round's backoff
    ([A, B], "ll", [(B, 250), (A, 500)]),
    ([A, B], "llll", [(B, 250), (A, 500), (B, 250), (A, 1000)]),
    # on B, the node stays on B; when B goes, A is next, quickly
    ([A, B], "lul", [(B, 250), (B, None), (A, 250)]),
    # three: round robin, the backoff only after the third failure
    ([A, B, C], "llll", [(B, 250), (C, 250), (A, 500), (B, 250)]),
    ([A, B, C], "lulul", [(B, 250), (B, None), (C, 250), (C, None), (A, 250)]),
])
def test_the_next_instance_comes_quickly_and_a_failed_round_backs_off(
        urls: list[str], steps: str, expected: list[tuple[str, int | None]]) -> None:
    assert SWITCH_MS // 2 == 250
    assert _walk(Failover(urls, no_jitter), steps) == expected


def test_the_wait_between_instances_stays_short_with_jitter() -> None:
    ring = Failover([A, B], lambda n: b"\xff" * n)
    assert 250 <= ring.lost() <= SWITCH_MS


def test_a_list_read_again_keeps_the_instance_in_use() -> None:
    assert Failover([A, B], no_jitter, start=B).current == B
    assert Failover([A, B], no_jitter, start=C).current == A  # gone from the list
    with pytest.raises(ValueError):
        Failover([], no_jitter)


def test_move_to_another_instance_of_the_list() -> None:
    ring = Failover([A, B], no_jitter)
    ring.lost()
    assert ring.move_to(A) and ring.current == A
    assert ring.lost() == 250  # the move started a new round
    assert not ring.move_to(B)  # already there
    assert not ring.move_to(C) and ring.current == B  # not one of ours


def test_the_relay_beside_a_lobby() -> None:
    assert relay_beside("ws://h:1/lobby-ws") == "ws://h:1/relay-ws"
    assert relay_beside("wss://h/x/lobby-ws/") == "wss://h/x/relay-ws"
    assert relay_beside("ws://h:1/elsewhere") is None


R1, R2 = "ws://r1:1/relay-ws", "ws://r2:1/relay-ws"


@pytest.mark.parametrize(("relays", "on", "lobbies", "expected"), [
    ([], None, [], []),
    ([R1, R2], A, [A, B], [R1, R2]),  # relayUrl wins, in its own order
    ([], A, [A], ["ws://10.0.0.1:8080/relay-ws"]),
    # beside the lobby instances, the one beside the lobby we are on first
    ([], B, [A, B, C], [f"ws://10.0.0.{i}:8080/relay-ws" for i in (2, 1, 3)]),
    ([], None, [A, B], [f"ws://10.0.0.{i}:8080/relay-ws" for i in (1, 2)]),
    ([], "ws://h:1/other", ["ws://h:1/other"], []),  # no /lobby-ws: no relay beside it
])
def test_our_own_relay_follows_the_lobby_unless_relay_url_is_given(
        relays: list[str], on: str | None, lobbies: list[str], expected: list[str]) -> None:
    assert relay_urls_for(relays, on, lobbies) == expected
