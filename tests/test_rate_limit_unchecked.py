"""A shared limit that cannot be checked never allows everything (issue 24, item 5;
realtime.connection.base.check_limit). Without a fallback it refuses (`unchecked`: the expensive
limits fail closed); with one, this node's share decides. A slow or unreachable Redis is
logged in one line, without a traceback (a burst of connects on a saturated node failed 1,269
checks in one benchmark run, each traceback formatted on the busy loop); anything else keeps its
traceback, because it is a bug."""

import logging

import pytest
import redis

from realtime.connection.base import check_limit
from realtime.core.buckets import LocalBuckets, Rule, Verdict, share_of, share_of_count

pytestmark = pytest.mark.pure


async def _failing(exc: Exception):
    raise exc


@pytest.mark.parametrize("exc", [TimeoutError(), redis.ConnectionError("refused"), redis.TimeoutError()],
                         ids=["timeout", "redis-down", "redis-timeout"])
async def test_a_slow_or_absent_redis_refuses_without_a_fallback_and_logs_one_line(exc, caplog):
    with caplog.at_level(logging.WARNING, logger="realtime.connection"):
        verdict = await check_limit(_failing(exc))
    assert (verdict.allowed, verdict.unchecked) == (False, True)
    [record] = caplog.records
    assert record.getMessage() == f"rate limit check failed; refusing ({type(exc).__name__})"
    assert not record.exc_info


async def test_with_a_fallback_the_nodes_share_decides(caplog):
    with caplog.at_level(logging.WARNING, logger="realtime.connection"):
        verdict = await check_limit(_failing(redis.ConnectionError()), fallback=lambda: Verdict(False, 250, 0))
    assert verdict == Verdict(False, 250, 0)
    [record] = caplog.records
    assert record.getMessage() == "rate limit check failed; this node's share decides (ConnectionError)"


async def test_a_bug_in_the_check_refuses_and_keeps_its_traceback(caplog):
    with caplog.at_level(logging.WARNING, logger="realtime.connection"):
        verdict = await check_limit(_failing(KeyError("bug")))
    assert not verdict.allowed
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_a_nodes_share_is_the_limit_divided_by_the_live_nodes():
    assert share_of(Rule(30, 0.5), 3) == Rule(10, 0.5 / 3)
    assert share_of(Rule(2, 1), 5).capacity == 1  # never nothing at all
    assert share_of(Rule(30, 0.5), 0) == Rule(30, 0.5)
    assert (share_of_count(20, 3), share_of_count(1, 4)) == (7, 1)


def test_local_buckets_take_their_share_and_forget_the_least_recent():
    local = LocalBuckets(max_buckets=2)
    rule = Rule(2, 1)
    assert [local.take("a", rule, now=0).allowed for _ in range(3)] == [True, True, False]
    assert local.take("a", rule, now=0).retry_after_ms > 0
    local.take("b", rule, now=0)
    local.take("c", rule, now=0)  # "a" is forgotten: it starts full again
    assert local.take("a", rule, now=0).allowed
    assert len(local._buckets) == 2  # noqa: SLF001 - the bound is the point
