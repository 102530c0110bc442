"""The server-reflexive candidate (SPEC 8.1) without sockets: the settings that ask for
it, the candidate it becomes, and when the gatherer asks the STUN server (trio's
virtual clock, a scripted server). With a real coturn and a real lobby:
tests/integration/test_stun_coturn.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
import trio.testing

from hd_node.cli import _parser, _settings
from hd_node.config import ConfigError, Settings, load_settings
from hd_node.metrics import NodeMetrics
from hd_node.node import Parts, compose
from hd_node.store import NodeStore
from hd_node.transports.addresses import (
    FIRST_GATHER_WAIT_S,
    Reflexive,
    own_candidates,
    reflexive_for,
)
from hd_node.transports.stun import Address, Mapped, StunFailed, StunOutcome
from hd_protocol import Identity, priority
from hd_protocol.limits import DEFAULT_LIMITS

PEER = "ws://127.0.0.2:8766/peer-ws"


def _settings_at(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, **kw).check()  # type: ignore[arg-type]


# --- settings ---------------------------------------------------------------------------


def test_ice_is_off_and_no_stun_server_is_set_by_default(tmp_path: Path) -> None:
    s = load_settings(str(tmp_path), environ={})
    assert (s.ice_enabled, s.stun_server) == (False, "")
    assert reflexive_for(s, None, lambda: None) is None


def test_ice_and_the_stun_server_come_from_the_file_the_environment_and_the_flags(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text('[network]\niceEnabled = true\nstunServer = "10.0.0.1:3478"\n')
    s = load_settings(str(tmp_path), config_file=str(conf), environ={})
    assert (s.ice_enabled, s.stun_server) == (True, "10.0.0.1:3478")
    s = load_settings(str(tmp_path), environ={"HD_ICE_ENABLED": "1",
                                              "HD_STUN_SERVER": "[::1]:3478"})
    assert (s.ice_enabled, s.stun_server) == (True, "[::1]:3478")
    args = _parser().parse_args(["run", "--data-dir", str(tmp_path), "--ice",
                                 "--stun-server", "127.0.0.1:3478"])
    s = _settings(args, with_cli=True)
    assert (s.ice_enabled, s.stun_server) == (True, "127.0.0.1:3478")
    args = _parser().parse_args(["run", "--data-dir", str(tmp_path)])
    assert _settings(args, with_cli=True).ice_enabled is False


@pytest.mark.parametrize(("kw", "says"), [
    ({"stun_server": "stun.example.org:"}, "stunServer 'stun.example.org:': port ''"),
    ({"stun_server": "stun://x"}, "stunServer 'stun://x': must be host:port"),
    ({"stun_server": "::1:3478"}, "in brackets"),
    ({"stun_server": "h:99999"}, "1..65535"),
    ({"ice_enabled": True}, "iceEnabled needs stunServer"),
])
def test_a_bad_stun_setting_is_one_line_config_error(tmp_path: Path, kw: dict[str, object],
                                                      says: str) -> None:
    with pytest.raises(ConfigError, match=r"^[^\n]+$") as err:
        _settings_at(tmp_path, **kw)
    assert says in str(err.value)


def test_a_stun_server_without_ice_is_allowed_and_gathers_nothing(tmp_path: Path) -> None:
    """WebRTC may use the server for its own ICE (SPEC 8.4); srflx needs iceEnabled."""
    s = _settings_at(tmp_path, stun_server="127.0.0.1:3478")
    assert reflexive_for(s, None, lambda: None) is None


def test_the_gatherer_runs_only_with_ice_a_server_and_a_peer_listener(tmp_path: Path) -> None:
    on = _settings_at(tmp_path, ice_enabled=True, stun_server="127.0.0.1:3478")
    got = reflexive_for(on, None, lambda: None)
    assert got is not None and got.server == ("127.0.0.1", 3478)
    off = _settings_at(tmp_path, ice_enabled=True, stun_server="127.0.0.1:3478",
                       enable_direct=False)
    assert reflexive_for(off, None, lambda: None) is None


# --- the candidate ----------------------------------------------------------------------


def test_the_srflx_candidate_is_the_public_ip_with_the_peer_port(tmp_path: Path) -> None:
    s = _settings_at(tmp_path)
    cands = own_candidates(s, PEER, "127.0.0.2", reflexive="203.0.113.7")
    assert cands == [
        {"type": "host", "url": PEER, "priority": priority("host", 65534)},
        {"type": "srflx", "url": "ws://203.0.113.7:8766/peer-ws",
         "priority": priority("srflx", 65535)},
    ]
    v6 = own_candidates(s, PEER, "127.0.0.2", reflexive="2001:db8::7")
    assert v6[1]["url"] == "ws://[2001:db8::7]:8766/peer-ws"


def test_a_srflx_address_equal_to_a_host_one_is_not_offered_twice(tmp_path: Path) -> None:
    """On loopback (tests) or on a machine with a public address, the STUN server sees
    the host address itself: the host candidate already says it, with a higher rank."""
    s = _settings_at(tmp_path)
    cands = own_candidates(s, "ws://127.0.0.1:8766/peer-ws", "127.0.0.1",
                           reflexive="127.0.0.1")
    assert [c["type"] for c in cands] == ["host"]


def test_no_srflx_candidate_without_a_learned_address_or_with_direct_off(
    tmp_path: Path,
) -> None:
    s = _settings_at(tmp_path)
    assert [c["type"] for c in own_candidates(s, PEER, "127.0.0.2")] == ["host"]
    off = _settings_at(tmp_path, enable_direct=False)
    assert own_candidates(off, PEER, "127.0.0.2", reflexive="203.0.113.7")[1:] == []


# --- when the gatherer asks -------------------------------------------------------------


def _mapped(host: str) -> Mapped:
    return Mapped(host, 40000, ("0.0.0.0", 50000), ("192.0.2.10", 3478), 1, 20.0)


class Server:
    """A scripted STUN server: answers in turn (the last one repeats) after ``rtt``."""

    def __init__(self, *answers: StunOutcome, rtt: float = 0.02) -> None:
        self.answers = list(answers)
        self.asked: list[float] = []
        self.rtt = rtt

    async def __call__(self, server: Address) -> StunOutcome:
        self.asked.append(trio.current_time())
        await trio.sleep(self.rtt)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_the_address_is_learned_at_start_and_asked_again_every_few_minutes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(_mapped("203.0.113.7"))
    changes: list[str | None] = []
    metrics = NodeMetrics()
    g = Reflexive(("192.0.2.10", 3478), on_change=lambda: changes.append(g.host),
                  metrics=metrics, ask=server, refresh_s=300)
    async with trio.open_nursery() as n:
        t0 = trio.current_time()
        n.start_soon(g.run)
        await g.gathered.wait()
        assert g.host == "203.0.113.7" and changes == ["203.0.113.7"]
        await trio.sleep(1000)
        n.cancel_scope.cancel()
    assert [round(t - t0) for t in server.asked] == [0, 300, 600, 900]
    assert changes == ["203.0.113.7"]  # the same answer is no change
    assert metrics.registry.get_sample_value("hd_stun_bindings_total", {"result": "ok"}) == 4


async def test_a_failed_binding_keeps_the_address_and_a_new_one_is_a_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(_mapped("203.0.113.7"), StunFailed("timeout", "timeout", 7),
                    _mapped("198.51.100.9"))
    changes: list[str | None] = []
    metrics = NodeMetrics()
    g = Reflexive(("192.0.2.10", 3478), on_change=lambda: changes.append(g.host),
                  metrics=metrics, ask=server, refresh_s=60)
    async with trio.open_nursery() as n:
        n.start_soon(g.run)
        await trio.sleep(61)
        assert g.host == "203.0.113.7" and isinstance(g.last, StunFailed)
        await trio.sleep(60)
        n.cancel_scope.cancel()
    assert changes == ["203.0.113.7", "198.51.100.9"]
    assert metrics.registry.get_sample_value("hd_stun_bindings_total",
                                             {"result": "timeout"}) == 1


async def test_a_kick_asks_again_soon_but_never_more_often_than_the_minimum_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The hub kicks at every lobby (re)registration; our own re-registration after a
    change must not turn into a loop of bindings."""
    server = Server(_mapped("203.0.113.7"))
    g = Reflexive(("192.0.2.10", 3478), on_change=lambda: None, ask=server,
                  refresh_s=300, min_interval_s=30)
    async with trio.open_nursery() as n:
        t0 = trio.current_time()
        n.start_soon(g.run)
        await g.gathered.wait()
        g.kick()  # right after the first: waits for the interval
        g.kick()  # kicks coalesce
        await trio.sleep(100 - (trio.current_time() - t0))
        g.kick()  # long after: at once
        await trio.sleep(1)
        n.cancel_scope.cancel()
    assert [round(t - t0) for t in server.asked] == [0, 30, 100]


# --- the hub: candidates and the lobby --------------------------------------------------


def _hub(tmp_path: Path, server: Server) -> Parts:
    s = Settings(data_dir=tmp_path, ice_enabled=True, stun_server="192.0.2.10:3478").check()
    hub = compose(Identity.from_seed(b"\x2a" * 32), s, NodeStore(tmp_path / "node.db"),
                  NodeMetrics(), limits=DEFAULT_LIMITS)
    assert hub.reflexive is not None
    hub.reflexive.ask = server
    hub.set_peer_url(PEER, "127.0.0.2")
    return hub


SRFLX_URL = "ws://203.0.113.7:8766/peer-ws"


async def test_a_learned_address_joins_what_we_offer_and_a_lobby_without_it_hears_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    hub = _hub(tmp_path, Server(_mapped("203.0.113.7"), _mapped("198.51.100.9")))
    reconnects: list[str | None] = []
    hub.lobby.connect = reconnects.append  # type: ignore[method-assign]
    assert hub.reflexive is not None
    hub.lobby.client = SimpleNamespace(addresses=hub.own_candidates())  # type: ignore[assignment]
    await hub.reflexive.gather()
    assert SRFLX_URL in [c["url"] for c in hub.own_candidates()]
    assert SRFLX_URL in hub.peers.self_info()["addrs"]
    assert reconnects == [None]  # registered without it: registers again
    # While a room of ours is open there, re-registering would close it: not now.
    hub.lobby.client = SimpleNamespace(addresses=[])  # type: ignore[assignment]
    hub.lobby.hosted["room"] = None
    await hub.reflexive.gather()
    assert "ws://198.51.100.9:8766/peer-ws" in hub.peers.self_info()["addrs"]
    assert reconnects == [None]
    hub.store.close()


async def test_a_lobby_that_already_has_it_or_no_lobby_is_left_alone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    hub = _hub(tmp_path, Server(_mapped("203.0.113.7")))
    reconnects: list[str | None] = []
    hub.lobby.connect = reconnects.append  # type: ignore[method-assign]
    assert hub.reflexive is not None
    await hub.reflexive.gather()  # no lobby connection
    hub.lobby.client = SimpleNamespace(addresses=hub.own_candidates())  # type: ignore[assignment]
    hub.reflexive.host = None
    await hub.reflexive.gather()  # a change the lobby already has
    assert reconnects == []
    hub.store.close()


async def test_each_lobby_registration_asks_the_stun_server_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    hub = _hub(tmp_path, Server(_mapped("203.0.113.7")))
    kicks: list[float] = []
    assert hub.reflexive is not None
    hub.reflexive.kick = lambda: kicks.append(trio.current_time())  # type: ignore[method-assign]
    assert hub.lobby.addresses() == hub.own_candidates()
    assert len(kicks) == 1
    hub.store.close()


@pytest.mark.parametrize(("rtt", "lobby_at"), [(0.3, 0.3), (25.0, FIRST_GATHER_WAIT_S)])
async def test_the_lobby_waits_a_bounded_moment_for_the_first_answer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, rtt: float, lobby_at: float,
) -> None:
    """So that the first registration carries the srflx candidate — but a STUN server
    that does not answer never holds the lobby back for more than a moment."""
    hub = _hub(tmp_path, Server(_mapped("203.0.113.7"), rtt=rtt))
    started: list[float] = []

    async def lobby_run() -> None:
        started.append(trio.current_time())

    hub.lobby.run = lobby_run  # type: ignore[method-assign]
    async with trio.open_nursery() as n:
        t0 = trio.current_time()
        await n.start(hub.run)
        await trio.sleep(30)
        n.cancel_scope.cancel()
    assert [round(t - t0, 3) for t in started] == [lobby_at]
    hub.store.close()
