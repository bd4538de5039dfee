"""Rate limits: shared through Redis, exact retry_after_ms, error frame then 4429."""

import multiprocessing
import time
import uuid

import pytest
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings as django_settings

from realtime.core import buckets
from realtime.infra import ratelimit
from sessions_app import services
from sessions_app.models import Connection, Message
from tests.conftest import access_for
from tests.support.limiter_worker import hammer
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


async def _refused(client: WSClient) -> dict:
    frames, code = await client.expect_close()
    assert code == 4429
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "rate_limited", frames
    return frames[-1]


async def test_connection_attempts_per_user(settings, node_app, user):
    settings.REALTIME_RATE_CONNECT_USER = (3, 60)  # 3 at once, one more every 20 s
    token = access_for(user)
    for _ in range(3):
        c = WSClient(node_app)
        await c.connect(token)
        await c.drop(1000)
    c = WSClient(node_app)
    await c.open()
    await c.send({"type": "connect", "token": token, "conversation_id": None, "last_seq": None,
                  "client_id": str(uuid.uuid4())})
    error = await _refused(c)
    assert 19000 <= error["retry_after_ms"] <= 20000, error
    await c.drop()
    # Refused before anything was written: only the three accepted connections exist.
    assert await database_sync_to_async(Connection.objects.count)() == 3


async def test_connection_attempts_per_ip_and_trusted_proxy(settings, node_app, token):
    settings.REALTIME_RATE_CONNECT_IP = (2, 60)
    for _ in range(2):
        c = WSClient(node_app, client_addr=("198.51.100.7", 5000))
        await c.open()
        await c.drop(1000)
    c = WSClient(node_app, client_addr=("198.51.100.7", 5000))
    await c.open()
    error = await _refused(c)
    assert 29000 <= error["retry_after_ms"] <= 30000
    await c.drop()

    # Behind a trusted proxy the forwarded address is the client, so another client passes.
    settings.REALTIME_TRUSTED_PROXIES = ["10.0.0.1"]
    c = WSClient(node_app, client_addr=("10.0.0.1", 5000))
    c.comm.scope["headers"] = [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.1")]
    await c.connect(token)
    await c.drop(1000)
    # An untrusted peer cannot pick its address with the header.
    c = WSClient(node_app, client_addr=("198.51.100.7", 5000))
    c.comm.scope["headers"] = [(b"x-forwarded-for", b"203.0.113.10")]
    await c.open()
    await _refused(c)
    await c.drop()


async def test_concurrent_connections_per_user(settings, node_app, token):
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 2
    first, second = WSClient(node_app), WSClient(node_app)
    await first.connect(token)
    await second.connect(token)
    third = WSClient(node_app)
    await third.open()
    await third.send({"type": "connect", "token": token, "conversation_id": None, "last_seq": None,
                      "client_id": str(uuid.uuid4())})
    await _refused(third)
    await third.drop()
    await first.drop(1000)  # frees its slot at once
    fourth = WSClient(node_app)
    await fourth.connect(token)
    await fourth.drop(1000)
    await second.drop(1000)


async def test_one_client_id_cannot_open_a_socket_per_conversation_on_one_slot(settings, node_app, user):
    """The slot is per socket identity (conversation, client_id): reusing one client_id across
    conversations (new or existing ones) does not get around the per-user limit."""
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 2
    token = access_for(user)
    first, second = WSClient(node_app), WSClient(node_app)
    a = await first.connect(token, client_id="tab")
    # Renaming the only member of the set must not leave the key without its expiry.
    assert await _slot_ttl_ms(user) > 0
    b = await second.connect(token, client_id="tab")
    assert a["conversation_id"] != b["conversation_id"]
    new_one = WSClient(node_app)
    await new_one.open()
    await new_one.send({"type": "connect", "token": token, "conversation_id": None, "last_seq": None,
                        "client_id": "tab"})
    await _refused(new_one)
    await new_one.drop()
    existing = await database_sync_to_async(services.create_conversation)(user.pk)
    third = WSClient(node_app)
    await third.open()
    await third.send({"type": "connect", "token": token, "conversation_id": str(existing.pk), "last_seq": 0,
                      "client_id": "tab"})
    await _refused(third)
    await third.drop()

    # The new conversations' slots carry their ids, so the client's own reconnect to one of
    # them replaces its socket on the same slot instead of being refused.
    slots = await _slot_members(user)
    assert slots == sorted(ratelimit.slot_member("tab", r["conversation_id"]) for r in (a, b))
    again = WSClient(node_app)
    resumed = await again.connect(token, client_id="tab", conversation_id=a["conversation_id"], last_seq=0)
    assert resumed["resumed"] is True
    _, code = await first.expect_close()
    assert code == 4409
    await first.drop(code)
    assert await _slot_members(user) == slots  # the replaced socket left the slot to its successor
    await again.drop(1000)
    await second.drop(1000)
    assert await _slot_members(user) == []


async def _slot_ttl_ms(user) -> int:
    r = aioredis.from_url(django_settings.REDIS_URL)
    try:
        return await r.pttl(f"{django_settings.REDIS_KEY_PREFIX}:slots:user:{user.pk}")
    finally:
        await r.aclose()


async def _slot_members(user) -> list[str]:
    r = aioredis.from_url(django_settings.REDIS_URL, decode_responses=True)
    try:
        return sorted(await r.zrange(f"{django_settings.REDIS_KEY_PREFIX}:slots:user:{user.pk}", 0, -1))
    finally:
        await r.aclose()


async def test_inbound_frames_per_connection(settings, node_app, token):
    settings.REALTIME_RATE_FRAMES = (5, 10)
    settings.REALTIME_FRAME_OVERRUN_CLOSE = 3
    c = WSClient(node_app)
    await c.connect(token)  # the connect frame takes one token
    for i in range(4):
        await c.send({"type": "ping", "id": i})
        assert await c.recv() == {"type": "pong", "id": i}
    for _ in range(3):
        await c.send({"type": "ping", "id": "over"})
        error = await c.recv()
        assert error["code"] == "rate_limited" and 0 < error["retry_after_ms"] <= 2001, error
    await c.send({"type": "ping", "id": "too far"})
    frames, code = await c.expect_close()
    assert code == 4429 and frames[-1]["code"] == "rate_limited"
    await c.drop()


async def test_messages_per_conversation(settings, node_app, token):
    settings.REALTIME_RATE_MESSAGES = (2, 60)
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 0
    c = WSClient(node_app)
    await c.connect(token)
    for _ in range(2):
        await c.message("hi")
        await c.recv_until(lambda f: f["type"] == "message.ack")
    refused_id = await c.message("one too many")
    error = await c.recv_until(lambda f: f["type"] == "error")
    assert error[-1]["code"] == "rate_limited" and error[-1]["ref"] == refused_id
    assert 29000 <= error[-1]["retry_after_ms"] <= 30000
    await c.send({"type": "ping", "id": 1})  # still open
    await c.recv_until(lambda f: f["type"] == "pong")
    assert await database_sync_to_async(Message.objects.filter(role="user").count)() == 2
    await c.drop()


def test_limiter_is_atomic_across_processes():
    ctx = multiprocessing.get_context("spawn")
    bucket = f"atomic-{uuid.uuid4().hex}"
    start_at = time.time() + 4.0  # after the spawned interpreters have set Django up
    with ctx.Pool(4) as pool:
        allowed = pool.starmap(
            hammer, [(django_settings.REDIS_URL, django_settings.REDIS_KEY_PREFIX, bucket, 40, start_at)] * 4
        )
    # 160 concurrent attempts against a bucket of 50: exactly 50 pass, never one more.
    assert sum(allowed) == 50, allowed


async def test_local_bucket_retry_after():
    bucket = buckets.LocalBucket(buckets.Rule(capacity=2, per_second=1))
    assert bucket.take().allowed and bucket.take().allowed
    verdict = bucket.take()
    assert not verdict.allowed and 900 <= verdict.retry_after_ms <= 1001
