"""Rate limits fail open (realtime.connection.base.check_limit): a limit that cannot be checked
allows. A slow or unreachable Redis is logged in one line, without a traceback (a burst of
connects on a saturated node failed 1,269 checks in one benchmark run, each traceback formatted
on the busy loop); anything else keeps its traceback, because it is a bug."""

import logging

import pytest
import redis

from realtime.connection.base import check_limit

pytestmark = pytest.mark.pure


async def _failing(exc: Exception):
    raise exc


@pytest.mark.parametrize("exc", [TimeoutError(), redis.ConnectionError("refused"), redis.TimeoutError()],
                         ids=["timeout", "redis-down", "redis-timeout"])
async def test_a_slow_or_absent_redis_allows_and_logs_one_line(exc, caplog):
    with caplog.at_level(logging.WARNING, logger="realtime.connection"):
        verdict = await check_limit(_failing(exc))
    assert verdict.allowed
    [record] = caplog.records
    assert record.getMessage() == f"rate limit check failed; allowing ({type(exc).__name__})"
    assert not record.exc_info


async def test_a_bug_in_the_check_allows_and_keeps_its_traceback(caplog):
    with caplog.at_level(logging.WARNING, logger="realtime.connection"):
        verdict = await check_limit(_failing(KeyError("bug")))
    assert verdict.allowed
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is KeyError
