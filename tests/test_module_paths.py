"""The core's module paths from before its subpackages still import, each as the module
that moved (people ``from hd_protocol.session import Session`` in their own projects)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import hd_protocol

# Modules written after the split have no flat path to keep.
SINCE_THE_SPLIT = {"hd_protocol.brokers.cluster_view", "hd_protocol.brokers.lobby_cluster",
                   "hd_protocol.brokers.relay_cluster", "hd_protocol.brokers.directory",
                   "hd_protocol.brokers.lobby_state", "hd_protocol.apps.agent_tasks"}
MOVED = sorted(
    info.name for sub in ("peer", "reach", "apps", "brokers")
    for info in pkgutil.iter_modules([f"{hd_protocol.__path__[0]}/{sub}"], f"hd_protocol.{sub}.")
    if info.name not in SINCE_THE_SPLIT
)


def test_every_subpackage_module_is_counted() -> None:
    assert len(MOVED) == 25 and "hd_protocol.brokers.relay_client" in MOVED


@pytest.mark.parametrize("new", MOVED)
def test_an_old_path_is_the_moved_module(new: str) -> None:
    old = "hd_protocol." + new.rpartition(".")[2]
    assert importlib.import_module(old) is importlib.import_module(new)


def test_the_names_spec_12_gives_stay_where_they_were() -> None:
    from hd_protocol.rebase import rebase
    from hd_protocol.session import Session

    from hd_protocol.stun import encode_binding_request

    assert hd_protocol.rebase is rebase  # the function, not the module of that name
    assert hd_protocol.Session is Session
    assert callable(encode_binding_request)
