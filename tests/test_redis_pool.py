"""A burst of calls does not open a Redis connection per call: we found 500 connects at once
opened 500 Redis connections, and under load hundreds of them timed out connecting (the limits
then failed open and the fan-out refused sockets). The limit checks now share the node's one
pipelined connection (realtime/infra/resp.py, tests/test_redis_pipeline.py); redis-py's pool,
used for the rest, stays bounded by REALTIME_REDIS_POOL_SIZE."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from django.conf import settings as django_settings

from realtime.core import buckets
from realtime.infra import ratelimit, redis_client
from realtime.infra.redis_client import get_redis

pytestmark = pytest.mark.django_db(transaction=True)


async def _server_connections() -> int:
    probe = aioredis.from_url(django_settings.REDIS_URL)
    try:
        return (await probe.info("clients"))["connected_clients"]
    finally:
        await probe.aclose()


async def test_a_burst_of_limit_checks_uses_one_connection(settings, monkeypatch):
    monkeypatch.setattr(redis_client, "_pipelines", type(redis_client._pipelines)())  # noqa: SLF001 - a fresh one
    before = await _server_connections()
    rule = buckets.Rule(capacity=1000, per_second=1000)
    verdicts = await asyncio.gather(*(ratelimit.hit(f"burst:{i}", rule) for i in range(200)))
    assert all(v.allowed for v in verdicts)
    # (Other processes on the same Redis may open a few meanwhile; 200 calls without the
    # bound opened ~200.)
    opened = await _server_connections() - before
    assert opened <= 1 + 10, opened


async def test_a_burst_of_other_calls_uses_at_most_the_pool(settings, monkeypatch):
    settings.REALTIME_REDIS_POOL_SIZE = 4
    monkeypatch.setattr(redis_client, "_clients", type(redis_client._clients)())  # noqa: SLF001 - a fresh pool
    before = await _server_connections()
    assert all(await asyncio.gather(*(get_redis().ping() for _ in range(200))))
    # The pool keeps its connections open: they are all still counted.
    opened = await _server_connections() - before
    assert opened <= 4 + 10, opened
    names = {c.get("name") for c in await get_redis().client_list()}
    assert f"{django_settings.REDIS_KEY_PREFIX}-calls" in names
