"""The servers' cycle collector (hd_shell.rlimits.tune_collector): what is alive at start
is out of its walks, and it runs far less often than CPython's default."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hd_shell.rlimits import GC_THRESHOLDS, tune_collector


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    gc.unfreeze()  # whatever ran before in this process starts from nothing frozen
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_a_server_freezes_what_it_started_with_and_collects_rarely(collector: None) -> None:
    assert gc.get_freeze_count() == 0 and gc.get_threshold() != GC_THRESHOLDS
    tune_collector()
    assert gc.get_freeze_count() > 10_000  # the imported modules, at the least
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] >= 20 * 700  # far rarer than CPython's young collection

