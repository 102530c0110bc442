"""The peer monitor (SPEC 6.4), pinned where mutation testing found it loose: the window
settings reach all four counters, ``figures`` counts what it has not seen yet, the
bounds of a valid window, and an arrival stamped earlier than one already seen."""

from __future__ import annotations

import pytest

from hd_protocol import LocalProtocolError
from hd_protocol.peer.monitor import LinkMonitor, RttEstimator, SlidingCounter
from hd_protocol.peer.session import Stats


def test_a_link_monitor_gives_its_window_and_resolution_to_all_four_counters() -> None:
    m = LinkMonitor(window_ms=2_000, resolution_ms=500)
    for counter in (m.bytes_in, m.bytes_out, m.msgs_in, m.msgs_out):
        assert (counter.window_ms, counter.resolution_ms) == (2_000, 500)


def test_figures_count_traffic_the_monitor_was_not_synced_with_yet_at_that_now() -> None:
    m = LinkMonitor()
    stats = Stats(msgs_in=2, msgs_out=1, bytes_in=1_000, bytes_out=500)
    f = m.figures(5_000, stats)
    assert (f.rate_in_bps, f.rate_out_bps, f.rate_msgs_in, f.rate_msgs_out) == (
        100.0, 50.0, 0.2, 0.1)
    # ... stamped at that ``now``: gone from the rates one window later
    later = m.figures(5_000 + 10_000, stats)
    assert (later.rate_in_bps, later.bytes_in) == (0.0, 1_000)


def test_an_estimator_with_only_an_srtt_takes_the_next_sample_as_the_first() -> None:
    """RFC 6298 2.2 applies until both SRTT and RTTVAR exist."""
    for half in (RttEstimator(srtt_ms=50.0), RttEstimator(rttvar_ms=9.0)):
        half.observe(80)
        assert (half.srtt_ms, half.rttvar_ms) == (80.0, 40.0)


@pytest.mark.parametrize(("window", "resolution"), [(100, 0), (0, 100), (100, 30),
                                                    (100, -100), (-100, 100)])
def test_a_window_that_is_no_positive_multiple_of_the_resolution_is_bad_window(
        window: int, resolution: int) -> None:
    with pytest.raises(LocalProtocolError) as err:
        SlidingCounter(window, resolution)
    assert err.value.code == "bad_window"


def test_the_smallest_window_is_one_ms_at_a_resolution_of_one_ms() -> None:
    c = SlidingCounter(1, 1)
    c.add(10, 3)
    assert (c.total(10), c.total(11)) == (3, 0)


def test_an_arrival_older_than_the_newest_now_counts_in_the_newest_slot() -> None:
    """Even when the window has already moved past the older ``now``: nothing is lost."""
    c = SlidingCounter(1_000, 100)
    c.add(5_000, 5)
    assert c.total(7_000) == 0
    c.add(1_000, 7)  # a caller's clock went backwards
    assert c.total(7_000) == 7
    assert c.total(7_950) == 7
    assert c.total(8_000) == 0
