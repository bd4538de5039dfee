"""A connect's per-user rate and its concurrent-connection slot are taken in one Redis round
trip (issue 12: on a node busy streaming every round trip of a connect waits for the loop), with
the semantics the two separate calls had: the rate is checked first and a refusal by it takes
no slot; a refusal by the slot still spends the token."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings as django_settings

from realtime.core import buckets
from realtime.infra import ratelimit
from realtime.infra.resp import Pipeline
from sessions_app import services
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)

RATE = buckets.Rule(capacity=2, per_second=2 / 60)


async def slots_of(scope: str) -> list[str]:
    r = aioredis.from_url(django_settings.REDIS_URL)
    try:
        return sorted(m.decode() for m in await r.zrange(f"{django_settings.REDIS_KEY_PREFIX}:slots:{scope}", 0, -1))
    finally:
        await r.aclose()


async def test_refused_by_the_rate_takes_no_slot():
    assert (await ratelimit.take_connect("user:1", RATE, "c:a", 5, 60, "ws.a")).allowed
    assert (await ratelimit.take_connect("user:1", RATE, "c:b", 5, 60, "ws.b")).allowed
    refused = await ratelimit.take_connect("user:1", RATE, "c:c", 5, 60, "ws.c")
    assert (refused.allowed, refused.refused_by) == (False, 0)
    assert 29_000 <= refused.retry_after_ms <= 30_000  # one token every 30 s
    assert await slots_of("user:1") == ["c:a", "c:b"]


async def test_refused_by_the_slot_spends_the_token():
    assert (await ratelimit.take_connect("user:2", RATE, "c:a", 1, 60, "ws.a")).allowed
    refused = await ratelimit.take_connect("user:2", RATE, "c:b", 1, 60, "ws.b")
    assert (refused.allowed, refused.refused_by) == (False, 1)
    assert 59_000 <= refused.retry_after_ms <= 60_000  # the slot's lease
    # Both tokens are spent: the next attempt is refused by the rate.
    assert (await ratelimit.take_connect("user:2", RATE, "c:a", 1, 60, "ws.a2")).refused_by == 0
    assert await slots_of("user:2") == ["c:a"]


async def test_a_resume_connect_makes_one_limit_round_trip(node_app, user, token, monkeypatch):
    conversation = await database_sync_to_async(services.create_conversation)(user.pk)
    client = WSClient(node_app)
    await client.open()  # the per-IP limit is checked here, at the handshake
    evals: list[int] = []
    original = Pipeline.eval

    async def counted(self, script, keys, args):
        evals.append(len(keys))
        return await original(self, script, keys, args)

    monkeypatch.setattr(Pipeline, "eval", counted)
    await client.send({"type": "connect", "token": token, "conversation_id": str(conversation.pk),
                       "last_seq": 0, "client_id": "tab-1"})
    ready = await client.recv()
    assert ready["type"] == "ready"
    assert len(evals) == 1, evals
    assert await slots_of(f"user:{user.pk}") == [ratelimit.slot_member("tab-1", str(conversation.pk))]
    await client.drop()
