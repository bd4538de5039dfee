"""A storm of the same transient failure is logged once per second, and the next line says how
many were left out (realtime/infra/transient.py); a bug is logged every time, with its traceback.
Measured (issue 12): about 2,500 one-line warnings in one 500-stream run were 22% of the node's
loop."""

from __future__ import annotations

import logging

import pytest
import redis

from realtime.infra import transient
from realtime.infra.transient import LogThrottle, warn_failed

pytestmark = pytest.mark.pure

log = logging.getLogger("realtime.test_throttle")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fail(exc: Exception, message: str = "publish of %s failed", *args: object) -> None:
    try:
        raise exc
    except Exception as caught:  # noqa: BLE001 - the call under test decides how it is logged
        warn_failed(log, message, *(args or ("c1",)), exc=caught)


def test_one_line_per_second_then_the_count(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(transient, "THROTTLE", LogThrottle(window=1.0, clock=clock))
    with caplog.at_level(logging.WARNING, logger=log.name):
        for i in range(50):
            fail(redis.ConnectionError("No connection available."), "publish of %s failed", f"c{i}")
        clock.now += 0.5
        fail(redis.ConnectionError("No connection available."), "publish of %s failed", "c50")
        clock.now += 0.6
        fail(redis.TimeoutError(), "publish of %s failed", "c51")
        fail(redis.ConnectionError("refused"), "renaming %s failed", "slot")  # another message: its own line
    assert [(r.getMessage(), bool(r.exc_info)) for r in caplog.records] == [
        ("publish of c0 failed (ConnectionError)", False),
        ("publish of c51 failed (TimeoutError); 50 more like this since the last such line", False),
        ("renaming slot failed (ConnectionError)", False),
    ]


def test_a_bug_is_logged_every_time_with_its_traceback(monkeypatch, caplog):
    monkeypatch.setattr(transient, "THROTTLE", LogThrottle(window=1.0, clock=Clock()))
    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(3):
            fail(KeyError("bug"))
    assert len(caplog.records) == 3
    assert all(r.exc_info is not None and r.exc_info[0] is KeyError for r in caplog.records)
