"""The project's own Redis client (rate limits, node registry), separate from the channel
layer's pools. One client per event loop: redis.asyncio connections are loop-bound."""

from __future__ import annotations

import asyncio
import weakref

import redis.asyncio as aioredis
from django.conf import settings

_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
