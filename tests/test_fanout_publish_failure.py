"""A fan-out publish that fails on a slow or absent Redis is logged in one line, without a
traceback (realtime/infra/transient.py): the events are committed, the sockets find them at their
next resync, and under a 500-connect burst (`bench/stream_bench.py --streams 500`, the pool
answering "No connection available.") formatting those tracebacks was 37% of the node's loop.
Anything else keeps its traceback: it is a bug."""

from __future__ import annotations

import logging

import pytest
import redis

from realtime.fanout import publish as fanout

pytestmark = pytest.mark.pure

EVENTS = [{"type": "note", "seq": 1, "i": 1}]


class FailingPipeline:
    """The node's pipelined Redis connection (realtime/infra/resp.py), failing every command."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def call(self, *args: object) -> int:
        raise self.exc

    async def eval(self, script: object, keys: list, args: list) -> int:
        raise self.exc


CALLS = {
    "publish": lambda: fanout.publish("c1", EVENTS),
    "publish_many": lambda: fanout.publish_many([("c1", EVENTS), ("c2", EVENTS)]),
    "tell": lambda: fanout.tell("c1", "replaced", ["ws.a"]),
}


@pytest.mark.parametrize("call", sorted(CALLS))
async def test_a_publish_to_an_unavailable_redis_logs_one_line(call, monkeypatch, caplog):
    monkeypatch.setattr(fanout, "get_pipeline", lambda: FailingPipeline(redis.ConnectionError("Redis lost")))
    with caplog.at_level(logging.WARNING, logger="realtime.fanout.publish"):
        await CALLS[call]()  # best effort: it does not raise
    [record] = caplog.records
    assert record.getMessage().endswith("failed (ConnectionError)"), record.getMessage()
    assert not record.exc_info


@pytest.mark.parametrize("call", sorted(CALLS))
async def test_a_bug_in_a_publish_keeps_its_traceback(call, monkeypatch, caplog):
    monkeypatch.setattr(fanout, "get_pipeline", lambda: FailingPipeline(TypeError("bug")))
    with caplog.at_level(logging.WARNING, logger="realtime.fanout.publish"):
        await CALLS[call]()
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is TypeError
