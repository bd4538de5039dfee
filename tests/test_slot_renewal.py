"""The resync renews every socket's connection slot of a batch in one Redis command
(realtime.infra.ratelimit.renew_slots, issue 22): each existing slot of every scope gets the new
lease, both keys of each scope their expiry, and a slot released meanwhile is not brought back."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from realtime.infra import ratelimit

pytestmark = pytest.mark.django_db(transaction=True)


async def test_every_slot_of_every_scope_is_renewed_and_a_released_one_stays_released():
    r = aioredis.from_url(settings.REDIS_URL)
    scopes = {"user:renew-a": ["c1:tab-1", "c2:tab-1", "c3:tab-2"], "user:renew-b": ["c9:tab-9"]}
    try:
        for scope, members in scopes.items():
            slots_key, owners_key = (f"{settings.REDIS_KEY_PREFIX}:{part}:{scope}" for part in ("slots", "slot-owners"))
            await r.delete(slots_key, owners_key)
            await r.zadd(slots_key, dict.fromkeys(members, 1))
            await r.hset(owners_key, mapping=dict.fromkeys(members, "ws.x"))
        await r.zrem(f"{settings.REDIS_KEY_PREFIX}:slots:user:renew-a", "c2:tab-1")  # released meanwhile
        before = time.time() * 1000

        await ratelimit.renew_slots([(s, m) for s, members in scopes.items() for m in members], 60)

        after = time.time() * 1000
        a_slots = dict(await r.zrange(f"{settings.REDIS_KEY_PREFIX}:slots:user:renew-a", 0, -1, withscores=True))
        b_slots = dict(await r.zrange(f"{settings.REDIS_KEY_PREFIX}:slots:user:renew-b", 0, -1, withscores=True))
        assert set(a_slots) == {b"c1:tab-1", b"c3:tab-2"} and set(b_slots) == {b"c9:tab-9"}
        for score in (*a_slots.values(), *b_slots.values()):
            assert before + 60_000 - 1_000 <= score <= after + 60_000 + 1_000
        for scope in scopes:
            for part in ("slots", "slot-owners"):
                assert 60_000 < await r.pttl(f"{settings.REDIS_KEY_PREFIX}:{part}:{scope}") <= 61_000
    finally:
        for scope in scopes:
            await r.delete(*(f"{settings.REDIS_KEY_PREFIX}:{part}:{scope}" for part in ("slots", "slot-owners")))
        await r.aclose()
