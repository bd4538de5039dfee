"""An outage of the database or Redis is two log lines, not a line (or a traceback) per failed
call; while the database is out, one connect at a time tries it (issue 25, item 3;
realtime/infra/outage.py, realtime/infra/transient.py)."""

from __future__ import annotations

import logging

import psycopg
import pytest
import redis
from django.db import OperationalError

from realtime.infra import transient
from realtime.infra.outage import Outage, database_unreachable, redis_unreachable
from realtime.infra.transient import LogThrottle, warn_failed

pytestmark = pytest.mark.pure

log = logging.getLogger("realtime.test_outage")


def django_error(cause: Exception) -> OperationalError:
    """An OperationalError as Django raises it: the driver's error as its cause."""
    try:
        try:
            raise cause
        except Exception as exc:
            raise OperationalError(str(exc)) from exc
    except OperationalError as wrapped:
        return wrapped


class Deadlock(psycopg.errors.DeadlockDetected):
    pass


def test_unreachable_means_not_reached_not_an_error_the_database_answered_with():
    assert database_unreachable(django_error(psycopg.OperationalError("connection refused")))
    assert database_unreachable(django_error(psycopg.errors.AdminShutdown("terminating connection")))
    assert database_unreachable(OperationalError("no cause: a test's injected blip"))
    assert not database_unreachable(django_error(Deadlock("deadlock detected")))
    assert not database_unreachable(django_error(psycopg.errors.QueryCanceled("statement timeout")))
    assert not database_unreachable(KeyError("a bug"))
    assert redis_unreachable(redis.ConnectionError("refused")) and redis_unreachable(TimeoutError())
    assert not redis_unreachable(redis.ResponseError("WRONGTYPE"))


def test_an_outage_is_one_line_when_it_starts_and_one_when_it_ends(monkeypatch, caplog):
    database = Outage("database", database_unreachable)
    monkeypatch.setattr("realtime.infra.outage.DATABASE", database)
    monkeypatch.setattr(transient, "THROTTLE", LogThrottle(window=1.0, clock=lambda: 0.0))
    refused = django_error(psycopg.OperationalError("connection refused"))
    with caplog.at_level(logging.WARNING):
        database.succeeded()  # nothing to end: no line
        for _ in range(3):
            assert database.failed(refused, log)
        for i in range(20):  # the callers' own warnings about it
            try:
                raise refused
            except OperationalError as exc:
                warn_failed(log, "run sweep %s failed", i, exc=exc)
        assert not database.failed(django_error(Deadlock("deadlock")), log)  # not part of it
        database.succeeded(log)
        database.succeeded(log)
    assert [r.getMessage() for r in caplog.records] == [
        "database unreachable (OperationalError: connection refused); calls fail until it answers again",
        caplog.records[1].getMessage(),
    ]
    assert caplog.records[1].getMessage().startswith("database reachable again after ")
    assert caplog.records[1].getMessage().endswith("s (3 failures reported, 20 warnings left out)")
    assert not any(r.exc_info for r in caplog.records)


def test_without_an_outage_the_callers_warnings_are_throttled_as_before(monkeypatch, caplog):
    monkeypatch.setattr(transient, "THROTTLE", LogThrottle(window=1.0, clock=lambda: 0.0))
    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(3):
            try:
                raise redis.ConnectionError("refused")
            except redis.ConnectionError as exc:
                warn_failed(log, "publish failed", exc=exc)
    assert [r.getMessage() for r in caplog.records] == ["publish failed (ConnectionError)"]


def test_while_out_one_caller_at_a_time_tries_it():
    database = Outage("database", database_unreachable)
    with database.admit() as admitted:  # not out: everyone goes
        assert admitted
        with database.admit() as also:
            assert also
    database.failed(OperationalError("refused"), log)
    assert not database.refusing()
    with database.admit() as probe:
        assert probe and database.refusing()
        with database.admit() as second:
            assert not second  # told to come back instead of queueing behind the probe
    assert not database.refusing()
    with database.admit() as next_probe:  # the probe failed; the next caller tries again
        assert next_probe
    database.succeeded(log)
    with database.admit() as first, database.admit() as second:
        assert first and second


def test_a_call_begun_before_an_outage_ended_starts_no_new_one(caplog):
    """Seen in a 30 s partition: calls that had waited for a connection through it failed just
    after it healed, and each logged a new outage of a tenth of a second."""
    database = Outage("database", database_unreachable)
    refused = OperationalError("connection timeout expired")
    with caplog.at_level(logging.WARNING):
        assert database.failed(refused, log, started=0.0)  # no outage ended yet: it starts one
        database.succeeded(log)
        assert database.failed(refused, log, started=database.ended_at - 1)  # a straggler
        assert not database.down
        assert database.failed(refused, log, started=database.ended_at + 1)
        assert database.down
    assert [r.getMessage().split(" (")[0].split(" after")[0] for r in caplog.records] == [
        "database unreachable", "database reachable again", "database unreachable"]
