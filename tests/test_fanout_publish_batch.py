"""A group commit's batch is published in one Redis command (realtime.fanout.publish.publish_many,
issue 22): each conversation's subscribers get exactly its own message, in the batch's order,
and a Redis that lost its script cache (a restart, SCRIPT FLUSH) still gets every batch."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from realtime.fanout.publish import channel_for, publish_many

pytestmark = pytest.mark.django_db(transaction=True)


def _events(seq: int, text: str) -> list[dict]:
    return [{"type": "agent.delta", "seq": seq, "run_id": "r", "index": seq - 1, "text": text}]


async def _next_messages(pubsub, count: int) -> list[tuple[str, dict]]:
    got: list[tuple[str, dict]] = []
    async with asyncio.timeout(5):
        while len(got) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                got.append((message["channel"].decode(), json.loads(message["data"])))
    return got


async def test_each_conversation_of_a_batch_gets_its_own_message_even_after_a_script_flush():
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(channel_for("conv-a"), channel_for("conv-b"))
        await publish_many([("conv-a", _events(1, "Hel")), ("conv-b", _events(7, "Wor")), ("conv-c", [])])
        await client.script_flush()  # as after a Redis restart: the script must be loaded again
        await publish_many([("conv-a", _events(2, "lo"))])

        got = await _next_messages(pubsub, 3)

        assert [(channel, m["upto"], m["frames"]) for channel, m in got] == [
            (channel_for("conv-a"), 1, [[1, '{"type":"agent.delta","seq":1,"run_id":"r","index":0,"text":"Hel"}']]),
            (channel_for("conv-b"), 7, [[7, '{"type":"agent.delta","seq":7,"run_id":"r","index":6,"text":"Wor"}']]),
            (channel_for("conv-a"), 2, [[2, '{"type":"agent.delta","seq":2,"run_id":"r","index":1,"text":"lo"}']]),
        ]
    finally:
        await pubsub.aclose()
        await client.aclose()
