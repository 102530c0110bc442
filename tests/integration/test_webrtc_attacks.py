"""Hostile room guests against a real node's WebRTC signalling (SPEC 7.5, 8.4).

The node (``alice``) hosts an open room with ``enableWebRtc`` and no listener; the
attackers are raw lobby clients (``LobbyNode``) that join the room and send ``signal``
frames by hand. An offer that looks valid is a real aiortc offer made in this process
whose one ICE candidate points at a loopback UDP port that never answers (a black
hole): the node answers it, and its ICE checks then go unanswered until the connect
deadline (10 s) ends the attempt. What must hold:

- an offer flood from four guests (200 offers, distinct sids, half of them not SDPs)
  costs the node ``MAX_ATTEMPTS_PER_PEER`` answered attempts per guest and nothing
  more; every offer is accounted for in the log and the metrics; threads, open files
  and memory stay bounded and come back; an honest guest joins over WebRTC while the
  flood holds its slots, and chat works; at the deadline every held attempt ends with a
  ``bye`` and its slot is free again;
- malformed signals change nothing and are counted: what the lobby refuses itself
  (non-string fields, an sdp over 32 KiB, other kinds, over-long sids) never reaches
  the node; bad sids, a ``bye`` with an SDP and offers that are not SDPs are dropped;
  answers and byes for sids never offered are ignored; a second offer under a sid is a
  duplicate; SDPs that begin ``v=0`` but are nothing to answer fail at once, with no
  uncaught exception in the node's log, and leave no slot taken;
- a guest cannot make the node break the lobby's rate limit for its own connection
  (which would cost it the connection and its rooms): what the node signals in reply
  stays within its budgets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio

from hd_protocol.brokers.frames import encode_frame
from hd_protocol.reach.webrtc import MAX_ATTEMPTS_PER_PEER, MAX_SDP
from hd_shell.ws.link import LinkClosed

from .conftest import Cluster, NodeProcess, eventually
from .lobbyclients import ATTACKER_HOST, Fleet, Frame, LobbyNode, fleet, is_error, is_type
from .servers import ServerProcess, Servers, servers  # noqa: F401 - the fixture
from .test_lobby import _chat, _connected_to_lobby

WEBRTC = "[network]\nenableWebRtc = true\n"
HOST = WEBRTC + "enableDirect = false\n"  # no listener: reached over WebRTC or the relay
# hd_node.transports.webrtc.transport: how long an answered attempt may take
CONNECT_TIMEOUT_S = 10.0
# hd_node.transports.webrtc.transport.reply_budgets with the default limits: answers
# and the byes ending them (20/s, bursts of 100), byes for signals that opened nothing
# (5/s, bursts of 20).
REPLY_BURST, REPLY_RATE = 100 + 20, 20 + 5


# --- the attackers' material -------------------------------------------------------------


@pytest.fixture
def real_offer(monkeypatch: pytest.MonkeyPatch) -> str:
    """An offer as aiortc (the node's own library) makes it, gathered on loopback only."""
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection

    monkeypatch.setattr(aioice.ice, "get_host_addresses",
                        lambda use_ipv4, use_ipv6: ["127.0.0.1"])

    async def make() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.createDataChannel("hd-peer", ordered=True)
            await pc.setLocalDescription(await pc.createOffer())
            return str(pc.localDescription.sdp)
        finally:
            await pc.close()

    sdp = asyncio.run(make())
    assert sdp.startswith("v=0") and "a=fingerprint:" in sdp and "a=candidate:" in sdp
    return sdp


@contextlib.contextmanager
def _black_hole() -> Iterator[int]:
    """A loopback UDP port that receives and never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])
    finally:
        s.close()


def _aimed_at(sdp: str, port: int) -> str:
    """``sdp`` with its ICE candidates replaced by one at 127.0.0.1:``port``."""
    lines = [ln for ln in sdp.split("\r\n") if not ln.startswith("a=candidate:")]
    lines.insert(lines.index("a=end-of-candidates"),
                 f"a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host")
    return "\r\n".join(lines)


def _without(sdp: str, prefix: str) -> str:
    return "\r\n".join(ln for ln in sdp.split("\r\n") if not ln.startswith(prefix))


def _hostile_sdps(held: str) -> dict[str, str]:
    """SDPs that begin ``v=0`` (the signal check lets them through to aiortc) and that
    no honest peer sends. Before the node checked them, aiortc answered the first two
    and the last (then waited out the deadline), and on the fingerprint-less and the
    out-of-range ones it failed later in tasks of its own: an uncaught AssertionError
    ("Task exception was never retrieved") and an OverflowError ("Fatal write error
    on datagram transport") in the node's log."""
    port = re.compile(r"127\.0\.0\.1 \d+ typ")
    return {
        "only v=0": "v=0\r\n",
        "v=0 and garbage": "v=0\r\n\x00\x01 garbage\r\nm=\r\n",
        "no DTLS fingerprint": _without(held, "a=fingerprint:"),
        "no ICE credentials": _without(held, "a=ice-"),
        "a candidate port out of range": port.sub("127.0.0.1 70000 typ", held),
        "a negative candidate port": port.sub("127.0.0.1 -5 typ", held),
        "a bad m-line": held.replace("m=application", "m=application x"),
        "a bad setup role": held.replace("a=setup:actpass", "a=setup:bogus"),
        "no data channel": held.replace("m=application", "m=audio").replace(
            "UDP/DTLS/SCTP webrtc-datachannel", "UDP/TLS/RTP/SAVPF 0"),
    }


def _signal(g: LobbyNode, to: str, sid: str, sdp: str, kind: str = "offer") -> str:
    return g.client.signal(to, sid, kind, sdp).wire


def _signals(g: LobbyNode, kind: str, start: int = 0) -> list[Frame]:
    """The ``signal`` frames of ``kind`` the guest got (from the node, via the lobby)."""
    return g.wire.matching(lambda fr: fr.get("type") == "signal" and fr.get("kind") == kind,
                           start)


async def _guest(f: Fleet, lobby: ServerProcess, room_id: str, name: str) -> LobbyNode:
    """A raw lobby client in ``room_id``: one the host's signals may reach."""
    g = await f.lobby_node(lobby.url, name, local=ATTACKER_HOST, heartbeat=True)
    ans = await g.request(g.client.join_room(room_id).wire,
                          lambda fr: fr.get("type") in ("room_info", "error"))
    assert ans["type"] == "room_info", ans
    return g


# --- the node --------------------------------------------------------------------------


async def _host(cluster: Cluster, lobby: ServerProcess,
                *others: NodeProcess) -> tuple[NodeProcess, str]:
    """alice, on the lobby with an open room (the id returned), and ``others`` there too."""
    alice = cluster.new("alice", config=HOST)
    await cluster.start(alice, *others)
    for node in (alice, *others):
        await _connected_to_lobby(node, lobby.url)
    async with alice.client() as tab:
        room = (await tab.request("lobby", "create_room", {
            "name": "open house", "visibility": "public", "joinPolicy": "open"}))["room"]
    return alice, str(room["id"])


def _resources(node: NodeProcess) -> dict[str, int]:
    """Threads, resident memory (KiB) and open files of the node's process."""
    assert node.proc is not None and node.running, f"{node.name} is not running"
    pid = node.proc.pid
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    return {"threads": int(status["Threads"]), "rss_kib": int(status["VmRSS"].split()[0]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def _back_to(node: NodeProcess, before: dict[str, int]) -> Callable[[], Awaitable[Any]]:
    async def check() -> dict[str, int] | None:
        now = _resources(node)
        return now if now["fds"] <= before["fds"] + 2 else None
    return check


async def _healthy(node: NodeProcess) -> None:
    assert node.running, f"{node.name} exited with {node.returncode}"
    r = await node.http("GET", "/healthz", token=False)
    assert r.status_code == 200, r.text


def _count(node: NodeProcess, pattern: str) -> int:
    return len(re.findall(pattern, node.log_text()))


async def _refused(node: NodeProcess, why: str) -> float:
    """``hd_connections_refused{why="webrtc_<why>"}``: signals refused or ignored."""
    return await node.metric_sum("hd_connections_refused_total", why=f"webrtc_{why}")


def _no_uncaught(node: NodeProcess) -> None:
    """Nothing a guest sent left an exception nobody caught (asyncio's and trio's last
    resort reports) or an error line in the node's log."""
    text = node.log_text()
    for bad in ("Traceback", "never retrieved", "Fatal write error", "Exception in callback",
                " ERROR ", " CRITICAL ", "forged"):
        assert bad not in text, f"{bad!r} in {node.name}'s log:\n{text[-4000:]}"


def _failed(node: NodeProcess, sid: str) -> Callable[[], Awaitable[str | None]]:
    """Why the node's answer to offer ``sid`` failed, once it did."""
    async def check() -> str | None:
        m = re.search(rf"webrtc answer failed peer=\S+ sid={sid} reason=(.*)",
                      node.log_text())
        return m.group(1) if m else None
    return check


def _polled(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def check() -> Any:
        return fn()
    return check


# --- 1. a flood of offers ------------------------------------------------------------------


async def test_an_offer_flood_is_bounded_and_an_honest_guest_still_joins_over_webrtc(
    cluster: Cluster, servers: Servers, real_offer: str,  # noqa: F811
) -> None:
    lobby = await servers.lobby().astart()
    bob = cluster.new("bob", config=WEBRTC)
    alice, room = await _host(cluster, lobby, bob)
    to = alice.node_id
    guests_n, per_guest = 4, 50
    offers = guests_n * per_guest // 2  # every other one a real offer
    slots = guests_n * MAX_ATTEMPTS_PER_PEER
    with _black_hole() as port:
        held = _aimed_at(real_offer, port)
        async with fleet() as f:
            guests = [await _guest(f, lobby, room, f"mallory{i}") for i in range(guests_n)]
            before = _resources(alice)
            async with trio.open_nursery() as n:
                for i, g in enumerate(guests):
                    n.start_soon(g.wire.send, *[
                        _signal(g, to, f"flood-{i}-{k}",
                                held if k % 2 == 0 else f"not an sdp {k}")
                        for k in range(per_guest)])

            # Every offer is accounted for: answered (8 a guest), too many, not an SDP.
            def accounted() -> int:
                return (_count(alice, r"webrtc signal dropped peer=\S+ code=bad_signal")
                        + _count(alice, r"webrtc signal ignored .*reason=too_many")
                        + sum(len(_signals(g, "answer")) for g in guests))

            await eventually(_polled(lambda: accounted() >= guests_n * per_guest),
                             timeout=30, what="every offer accounted for")
            answered = [len(_signals(g, "answer")) for g in guests]
            assert answered == [MAX_ATTEMPTS_PER_PEER] * guests_n, answered
            assert _count(alice, r"code=bad_signal") == guests_n * per_guest - offers
            assert _count(alice, r"reason=too_many") == offers - slots
            assert await _refused(alice, "bad_signal") == guests_n * per_guest - offers
            assert await _refused(alice, "too_many") == offers - slots
            for i, g in enumerate(guests):  # each answer names one of its own offers
                sids = {fr["sid"] for fr in _signals(g, "answer")}
                assert all(re.fullmatch(rf"flood-{i}-\d*[02468]", s) for s in sids), sids
                assert g.wire.closed is None and not g.wire.matching(is_error())
            during = _resources(alice)
            await _healthy(alice)

            # While the flood holds its 32 slots, an honest guest joins over WebRTC.
            async with bob.client() as tb:
                joined = await tb.request("lobby", "join_room", {"roomId": room}, timeout=20)
            assert joined["via"] == "webrtc", joined
            await _chat(bob, alice, "through the flood")
            await _chat(alice, bob, "and back")
            log = alice.log_text()
            opened = log.find(f"webrtc link open peer={bob.node_id}")
            first_deadline = log.find("reason=timeout")
            assert opened >= 0 and (first_deadline < 0 or opened < first_deadline), log[-3000:]

            # At the deadline every held attempt ends, and its guest hears bye.
            await eventually(_polled(lambda: all(
                len(_signals(g, "bye")) >= MAX_ATTEMPTS_PER_PEER for g in guests)),
                timeout=CONNECT_TIMEOUT_S + 20, what="a bye for every held attempt")
            for g in guests:
                assert ({fr["sid"] for fr in _signals(g, "bye")}
                        == {fr["sid"] for fr in _signals(g, "answer")})
            assert _count(alice, r"webrtc answer failed .*reason=timeout") == slots

            # The slots are free again: a second wave is answered as the first was ...
            g = guests[0]
            start = g.wire.mark()
            await g.wire.send(*[_signal(g, to, f"again-{k}", held)
                                for k in range(MAX_ATTEMPTS_PER_PEER)])
            await eventually(_polled(lambda: len(_signals(g, "answer", start))
                                     == MAX_ATTEMPTS_PER_PEER),
                             timeout=20, what="the second wave answered")
            # ... and the guest's own byes end it at once, deadline or not.
            await g.wire.send(*[_signal(g, to, f"again-{k}", "", "bye")
                                for k in range(MAX_ATTEMPTS_PER_PEER)])
            await eventually(_polled(lambda: _count(
                alice, r"answer failed .*sid=again-.*bye from the peer")
                >= MAX_ATTEMPTS_PER_PEER), timeout=20, what="the second wave's byes")
            after = await eventually(_back_to(alice, before), timeout=20,
                                     what="alice's open files back to where they were")
            assert (await alice.peer(g.node_id)) is None  # no session came of any of it

        await _healthy(alice)
        _no_uncaught(alice)
        print(f"\nalice under an offer flood: before={before} during={during} after={after}")
        # Bounded while it lasted: a socket or so per held attempt, no thread per
        # attempt, no memory that grows with the offers.
        assert during["fds"] <= before["fds"] + 3 * slots, (before, during)
        assert during["threads"] <= before["threads"] + 4, (before, during)
        assert during["rss_kib"] <= before["rss_kib"] + 64 * 1024, (before, during)
        assert after["threads"] <= before["threads"] + 4, (before, after)


# --- 2. malformed signals ------------------------------------------------------------------


async def test_malformed_signals_change_nothing_and_are_counted(
    cluster: Cluster, servers: Servers, real_offer: str,  # noqa: F811
) -> None:
    lobby = await servers.lobby().astart()
    alice, room = await _host(cluster, lobby)
    to = alice.node_id
    with _black_hole() as port:
        held = _aimed_at(real_offer, port)
        async with fleet() as f:
            g = await _guest(f, lobby, room, "mallory")
            before = _resources(alice)

            # What the lobby refuses itself (fewer than the 16 bad frames that would
            # cost the guest its connection) ...
            refused = [
                encode_frame("signal", {"to": to, "sid": 7, "kind": "offer", "sdp": held}),
                encode_frame("signal", {"to": to, "sid": "s", "kind": ["offer"],
                                        "sdp": "v=0"}),
                encode_frame("signal", {"to": to, "sid": "s", "kind": "offer", "sdp": None}),
                encode_frame("signal", {"to": to, "sid": "s", "kind": "offer"}),
                encode_frame("signal", {"to": to, "sid": "", "kind": "offer", "sdp": held}),
                _signal(g, to, "x" * 65, "", "bye"),
                _signal(g, to, "big", "v=0\r\na=x:" + "y" * MAX_SDP),
                _signal(g, to, "s", held, "candidate"),
                _signal(g, to, "s", "", "hangup"),
                encode_frame("signal", {"to": 42, "sid": "s", "kind": "bye", "sdp": ""}),
            ]
            start = g.wire.mark()
            await g.wire.send(*refused)
            await eventually(_polled(lambda: len(g.wire.matching(is_error(), start))
                                     == len(refused)),
                             timeout=10, what="the lobby's refusals")
            codes = {fr["code"] for fr in g.wire.matching(is_error(), start)}
            assert codes <= {"bad_request", "bad_frame", "not_found", "too_large"}, codes
            # ... never reaches the node: the next thing it hears is a sentinel.
            await g.wire.send(_signal(g, to, "sentinel", "", "bye"))
            await eventually(_polled(lambda: _count(alice, r"sid=sentinel reason=unknown")),
                             timeout=10, what="the sentinel")
            assert _count(alice, r"webrtc (signal|offer|answer)") == 1, alice.log_text()

            # What the lobby relays and the node drops (bad_signal) ...
            bad = [
                _signal(g, to, "../../etc/passwd", held),
                _signal(g, to, "a b", held),
                _signal(g, to, "sid\u00e9", held),
                _signal(g, to, "<script>", held),
                _signal(g, to, "x\n2026-01-01 00:00:00,000 CRITICAL forged", held),
                _signal(g, to, "y" * 63 + "!", held),
                _signal(g, to, "bye-with-sdp", held, "bye"),
                _signal(g, to, "not-sdp", "hello"),
                _signal(g, to, "empty", ""),
                _signal(g, to, "answer-empty", "", "answer"),
                _signal(g, to, "leading-space", " v=0\r\n"),
            ]
            # ... or ignores: byes and answers for sids it never offered (an answer gets
            # a bye back, within its budget).
            unknown_byes = [_signal(g, to, f"never-{k}", "", "bye") for k in range(5)]
            stray_answers = [_signal(g, to, f"nobody-{k}", held, "answer") for k in range(5)]
            start = g.wire.mark()
            await g.wire.send(*bad, *unknown_byes, *stray_answers)
            await eventually(_polled(lambda: len(_signals(g, "bye", start))
                                     >= len(stray_answers)),
                             timeout=10, what="a bye for each stray answer")
            await eventually(_polled(lambda: _count(alice, r"code=bad_signal") >= len(bad)),
                             timeout=10, what="the bad signals counted")
            assert _count(alice, r"code=bad_signal") == len(bad)
            assert _count(alice, r"reason=unknown") == len(unknown_byes) + 1
            assert _count(alice, r"reason=no_offer bye=True") == len(stray_answers)
            assert {fr["sid"] for fr in _signals(g, "bye", start)} == {
                f"nobody-{k}" for k in range(len(stray_answers))}
            assert await _refused(alice, "bad_signal") == len(bad)
            assert await _refused(alice, "unknown") == len(unknown_byes) + 1
            assert await _refused(alice, "no_offer") == len(stray_answers)

            # Offers that begin v=0 but are nothing to answer: each fails at once (well
            # within the 10 s deadline) and is never answered.
            for k, (what, sdp) in enumerate(_hostile_sdps(held).items()):
                await g.wire.send(_signal(g, to, f"hostile-{k}", sdp))
                failed = _failed(alice, f"hostile-{k}")
                reason = await eventually(failed, timeout=CONNECT_TIMEOUT_S - 2,
                                          what=f"{what}: refused")
                assert reason != "timeout", (what, reason)
            assert not _signals(g, "answer"), "the node answered a malformed offer"
            _no_uncaught(alice)

            # A sid names one attempt: the same offer again is a duplicate.
            await g.wire.send(_signal(g, to, "twice", held), _signal(g, to, "twice", held))
            await eventually(_polled(lambda: _count(alice, r"sid=twice reason=duplicate")),
                             timeout=10, what="the duplicate")
            assert await _refused(alice, "duplicate") == 1
            await g.wire.send(_signal(g, to, "twice", "", "bye"))
            await eventually(_polled(lambda: _count(alice, r"sid=twice reason=.*bye from")),
                             timeout=10, what="the attempt its bye ended")

            # None of it left a slot taken: a guest's 8 offers are all still answered.
            start = g.wire.mark()
            await g.wire.send(*[_signal(g, to, f"real-{k}", held)
                                for k in range(MAX_ATTEMPTS_PER_PEER)])
            await eventually(_polled(lambda: len(_signals(g, "answer", start))
                                     == MAX_ATTEMPTS_PER_PEER),
                             timeout=20, what="every real offer answered")
            await g.wire.send(*[_signal(g, to, f"real-{k}", "", "bye")
                                for k in range(MAX_ATTEMPTS_PER_PEER)])
            await eventually(_back_to(alice, before), timeout=20,
                             what="alice's open files back to where they were")
            assert g.wire.closed is None
        await _healthy(alice)
        _no_uncaught(alice)


# --- 3. what the node sends back ---------------------------------------------------------


async def test_guests_cannot_make_the_node_break_the_lobbys_rate_limit(
    cluster: Cluster, servers: Servers, real_offer: str,  # noqa: F811
) -> None:
    """Six guests each send 40 signals a second for 8 s (under their own limit, 50/s),
    every one worth a reply: answers to offers never made (each got a bye), and offers
    (each got an answer) that the guest ends with a bye a second later. Before the node
    had reply budgets it sent more than the 50 frames a second the lobby allows one
    connection: the lobby closed alice's connection and her room, and then the guests'
    for signalling outside a room."""
    lobby = await servers.lobby().astart()
    alice, room = await _host(cluster, lobby)
    to = alice.node_id
    seconds, strays_s, offers_s = 8, 20, 10
    with _black_hole() as port:
        held = _aimed_at(real_offer, port)
        async with fleet() as f:
            guests = [await _guest(f, lobby, room, f"mallory{i}") for i in range(6)]

            async def pester(i: int, g: LobbyNode) -> None:
                for s in range(seconds + 1):  # the byes for the last second's offers too
                    frames = [_signal(g, to, f"o-{i}-{s - 1}-{k}", "", "bye")
                              for k in range(offers_s if s > 0 else 0)]
                    if s < seconds:
                        frames += [_signal(g, to, f"n-{i}-{s}-{k}", "v=0\r\n", "answer")
                                   for k in range(strays_s)]
                        frames += [_signal(g, to, f"o-{i}-{s}-{k}", held)
                                   for k in range(offers_s)]
                    try:
                        await g.wire.send(*frames)
                    except LinkClosed:
                        return  # the assertions below say why
                    await trio.sleep(1)

            t0 = trio.current_time()
            async with trio.open_nursery() as n:
                for i, g in enumerate(guests):
                    n.start_soon(pester, i, g)
            strays = len(guests) * seconds * strays_s
            offers = len(guests) * seconds * offers_s
            # Every signal was seen: each stray answer, and each offer (answered and
            # ended by its bye, or refused) — unless the lobby cut alice off first.
            def seen() -> bool:
                log = alice.log_text()
                offered = set(re.findall(r"webrtc .* sid=(o-[\d-]+) ", log))
                return ("lobby connection closed" in log
                        or (len(re.findall(r"reason=no_offer", log)) >= strays
                            and len(offered) >= offers))

            await eventually(_polled(seen), timeout=30, what="every signal seen")
            elapsed = trio.current_time() - t0
            # The lobby never cut alice off: her room is there with every guest in it
            # (a signal outside a room would have cost a guest its connection).
            cut_off = re.findall(r"lobby connection closed.*", alice.log_text())
            assert not cut_off, cut_off
            for g in guests:
                assert g.wire.closed is None and not g.wire.matching(is_error()), g.wire
            rooms = await guests[0].request(guests[0].client.list_rooms().wire,
                                            is_type("rooms"))
            assert room in [r["id"] for r in rooms["rooms"]], rooms
            async with alice.client() as tab:
                state = await tab.request("lobby", "state")
            assert state["connected"] and state["hosted"] == [room], state

            # What alice signalled back stayed within her budgets, and the budgets did
            # their work (the byes' burst was spent; offers past it were refused).
            byes = sum(len(_signals(g, "bye")) for g in guests)
            answers = sum(len(_signals(g, "answer")) for g in guests)
            bound = REPLY_BURST + REPLY_RATE * elapsed
            print(f"\n{strays + 2 * offers} signals in, {answers} answers and {byes} byes "
                  f"back in {elapsed:.1f} s (budget {bound:.0f})")
            assert byes + answers <= bound, (byes, answers, bound)
            assert byes >= 20  # the byes' burst
            assert await _refused(alice, "no_offer") == strays
            assert await _refused(alice, "rate") > 0
        await _healthy(alice)
        _no_uncaught(alice)
