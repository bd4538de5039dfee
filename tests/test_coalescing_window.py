"""The coalescing window of a run's deltas grows with the node's load (the recent duration of a
group commit) from REALTIME_DELTA_COALESCE_MS up to REALTIME_DELTA_COALESCE_MAX_MS: under load
every token still arrives, in fewer events."""

from __future__ import annotations

import pytest

from realtime.runs.supervisor import RunSupervisor

pytestmark = pytest.mark.pure


def test_the_window_follows_the_group_commit_between_its_bounds():
    supervisor = RunSupervisor("node-1", coalesce_ms=50, coalesce_max_ms=150)
    assert supervisor.coalescing_window() == pytest.approx(0.05)  # idle: the base
    supervisor.writer.recent_batch_seconds = 0.01
    assert supervisor.coalescing_window() == pytest.approx(0.05)
    supervisor.writer.recent_batch_seconds = 0.04
    assert supervisor.coalescing_window() == pytest.approx(0.08)
    supervisor.writer.recent_batch_seconds = 0.5
    assert supervisor.coalescing_window() == pytest.approx(0.15)


def test_a_max_below_the_base_is_the_base():
    supervisor = RunSupervisor("node-1", coalesce_ms=50, coalesce_max_ms=10)
    supervisor.writer.recent_batch_seconds = 1.0
    assert supervisor.coalescing_window() == pytest.approx(0.05)
