"""``lobbyUrl`` and ``relayUrl`` (SPEC 10, issue 19): one URL, or several instances of one
lobby or relay — a TOML list, or comma-separated in the flag and the environment — in
the order the node tries them. Each entry is checked; a bad one is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from hd_node import cli
from hd_node.config import ConfigError, load_settings, url_list

L1, L2 = "ws://127.0.0.1:1/lobby-ws", "wss://lobby.example/lobby-ws"


def test_one_url_is_a_list_of_one_and_none_is_empty(tmp_path: Path) -> None:
    s = load_settings(str(tmp_path), environ={"HD_LOBBY_URL": L1})
    assert s.lobby_urls == (L1,) and s.lobby_url == L1
    assert load_settings(str(tmp_path), environ={}).lobby_urls == ()
    assert load_settings(str(tmp_path), environ={"HD_RELAY_URL": ""}).relay_urls == ()


def test_a_toml_list_the_environment_and_the_flag_give_several(tmp_path: Path) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text(f'[network]\nlobbyUrl = ["{L1}", "{L2}"]\n'
                    f'relayUrl = ["{L2.replace("lobby", "relay")}"]\n')
    s = load_settings(str(tmp_path), config_file=str(conf), environ={})
    assert s.lobby_urls == (L1, L2)
    assert s.relay_urls == ("wss://relay.example/relay-ws",)
    s = load_settings(str(tmp_path), environ={"HD_LOBBY_URL": f"{L2}, {L1}",
                                              "HD_RELAY_URL": f"{L1},{L2}"})
    assert s.lobby_urls == (L2, L1) and s.relay_urls == (L1, L2)
    args = cli._parser().parse_args(["run", "--data-dir", str(tmp_path),
                                     "--lobby", f"{L1},{L2}", "--relay", L2])
    s = cli._settings(args, with_cli=True)
    assert s.lobby_urls == (L1, L2) and s.relay_urls == (L2,)


def test_the_flag_wins_over_the_environment_and_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text(f'[network]\nlobbyUrl = ["{L1}", "{L2}"]\n')
    s = load_settings(str(tmp_path), config_file=str(conf), environ={"HD_LOBBY_URL": L2},
                      cli={"lobby_url": L1})
    assert s.lobby_urls == (L1,)


@pytest.mark.parametrize(("value", "message"), [
    ("http://h/lobby-ws", "lobbyUrl 'http://h/lobby-ws' must be a ws:// or wss:// URL"),
    (f"{L1},http://h/x", "lobbyUrl entry 2 'http://h/x' must be a ws:// or wss:// URL"),
    (f"{L1},,{L2}", "lobbyUrl entry 2 is empty"),
    (f"{L1},", "lobbyUrl entry 2 is empty"),
    (f"{L1},{L1}", f"lobbyUrl entry 2 '{L1}' is listed twice"),
    ("ws://", "lobbyUrl 'ws://' must be a ws:// or wss:// URL"),
    ("ws://a b/lobby-ws", "lobbyUrl 'ws://a b/lobby-ws' has a space in it"),
])
def test_a_bad_entry_is_named(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(str(tmp_path), environ={"HD_LOBBY_URL": value})
    assert message in str(err.value)


def test_a_toml_list_entry_that_is_not_a_url_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text(f'[network]\nrelayUrl = ["{L1}", 7]\n')
    with pytest.raises(ConfigError, match="relayUrl entry 2 '7' must be a ws:// or wss://"):
        load_settings(str(tmp_path), config_file=str(conf), environ={})


def test_url_list_reads_a_setting() -> None:
    assert url_list(f" {L1} ,{L2} ", "lobbyUrl") == (L1, L2)
    assert url_list("  ", "lobbyUrl") == ()
