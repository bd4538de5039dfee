"""The project's own Redis clients, separate from the channel layer's pools, one of each per
event loop (connections are loop-bound):

- `get_pipeline()`: one pipelined connection (realtime/infra/resp.py) for the commands on the
  paths of every answer and socket: publishing, the rate limits and connection slots;
- `get_redis()`: redis-py, with a bounded pool, for the rest (the node registry, liveness,
  the reaper's batch releases), where its API is worth more than its cost per command."""

from __future__ import annotations

import asyncio
import weakref

import redis.asyncio as aioredis
from django.conf import settings

from realtime.infra.resp import Pipeline

_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_pipelines: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_pipeline() -> Pipeline:
    loop = asyncio.get_running_loop()
    pipeline = _pipelines.get(loop)
    if pipeline is None:
        pipeline = _pipelines[loop] = Pipeline(
            settings.REDIS_URL, timeout=settings.REALTIME_REDIS_TIMEOUT,
            # Named like the pool's connections: `CLIENT LIST` shows whose they are.
            client_name=f"{settings.REDIS_KEY_PREFIX}-calls",
        )
    return pipeline


def get_redis() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # A bounded pool whose callers wait for a free connection: a burst of connects shares a
        # few connections (each call takes a fraction of a millisecond) instead of opening one
        # each. We found 500 connects at once opened 500 Redis connections, and under load
        # hundreds of those timed out connecting (the limits then failed open).
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.REALTIME_REDIS_POOL_SIZE,
            # Short timeouts: these calls sit on request paths and must fail fast, never hang.
            timeout=settings.REALTIME_REDIS_TIMEOUT,
            socket_timeout=settings.REALTIME_REDIS_TIMEOUT,
            socket_connect_timeout=settings.REALTIME_REDIS_TIMEOUT,
            decode_responses=True,
            # Named after the deployment, so `CLIENT LIST` shows whose connections these are.
            client_name=f"{settings.REDIS_KEY_PREFIX}-calls",
        )
        client = aioredis.Redis(connection_pool=pool)
        _clients[loop] = client
    return client


def key(*parts: str) -> str:
    return ":".join((settings.REDIS_KEY_PREFIX, *parts))
