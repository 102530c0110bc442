"""Fixtures of the browser tests: one Chromium per module, and a module's pair of nodes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
from playwright.sync_api import Browser, sync_playwright

from ..conftest import Cluster, NodeProcess
from .helpers import launch, pair


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def pair_of_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess,
                                                                               NodeProcess]]:
    """alice and bob, paired, for the tests of one module that leave them paired."""
    cluster = Cluster(tmp_path_factory.mktemp("page"))
    try:
        alice, bob = cluster.new("alice"), cluster.new("bob")
        trio.run(cluster.start, alice, bob)
        pair(cluster, alice, bob)
        yield alice, bob
    finally:
        cluster.stop_all()
