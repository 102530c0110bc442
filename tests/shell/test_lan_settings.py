"""``enableLanDiscovery`` (SPEC 10): off by default; the config key, the environment and
``--lan`` turn it on, in the usual order of precedence."""

from __future__ import annotations

from pathlib import Path

from hd_node import cli
from hd_node.config import load_settings


def test_lan_discovery_is_off_unless_asked_for(tmp_path: Path) -> None:
    assert load_settings(str(tmp_path), environ={}).enable_lan_discovery is False


def test_the_config_key_the_environment_and_the_flag_turn_it_on(tmp_path: Path) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text("[network]\nenableLanDiscovery = true\n")
    assert load_settings(str(tmp_path), config_file=str(conf),
                         environ={}).enable_lan_discovery is True
    assert load_settings(str(tmp_path), environ={"HD_ENABLE_LAN_DISCOVERY": "1"}
                         ).enable_lan_discovery is True
    args = cli._parser().parse_args(["run", "--data-dir", str(tmp_path), "--lan"])
    assert cli._settings(args, with_cli=True).enable_lan_discovery is True
    args = cli._parser().parse_args(["run", "--data-dir", str(tmp_path)])
    assert cli._settings(args, with_cli=True).enable_lan_discovery is False
