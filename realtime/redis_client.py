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
        client = aioredis.Redis.from_url(
            settings.REDIS_URL,
            # Short timeouts: these calls sit on request paths and must fail fast, never hang.
            socket_timeout=settings.REALTIME_REDIS_TIMEOUT,
            socket_connect_timeout=settings.REALTIME_REDIS_TIMEOUT,
            max_connections=settings.REALTIME_REDIS_MAX_CONNECTIONS,
            decode_responses=True,
        )
        _clients[loop] = client
    return client


def key(*parts: str) -> str:
    return ":".join((settings.REDIS_KEY_PREFIX, *parts))
