"""Runs in spawned processes (no Django app imports at module level): hammers one bucket."""

from __future__ import annotations

import asyncio
import os
import time


def hammer(redis_url: str, prefix: str, bucket: str, attempts: int, start_at: float) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.conf import settings

    settings.REDIS_URL = redis_url
    settings.REDIS_KEY_PREFIX = prefix
    from realtime.core import buckets
    from realtime.infra import ratelimit

    async def run() -> int:
        # Every process fires at the same wall-clock moment, so their calls really interleave.
        await asyncio.sleep(max(0.0, start_at - time.time()))
        limit = buckets.Rule(capacity=50, per_second=0.001)
        verdicts = await asyncio.gather(*(ratelimit.hit(bucket, limit) for _ in range(attempts)))
        return sum(v.allowed for v in verdicts)

    return asyncio.run(run())
