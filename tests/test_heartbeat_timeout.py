"""Heartbeats in-process (issue 9, item 7): a socket silent for REALTIME_HEARTBEAT_TIMEOUT is
closed with `heartbeat_timeout` + 4408 (not before, not much after), its row records it and
its slot is freed; a socket that keeps sending pings stays open past the timeout."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings as django_settings

from realtime.infra import ratelimit
from sessions_app.models import Connection
from tests.support.gates import Gate
from tests.support.waiting import eventually
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 1.0


async def test_a_silent_socket_is_closed_4408_at_the_timeout(settings, node_app, user, token):
    settings.REALTIME_HEARTBEAT_TIMEOUT = TIMEOUT
    client = WSClient(node_app)
    last_frame = time.monotonic()  # just before the connect frame, the socket's last one
    ready = await client.connect(token)
    frames, code = await client.expect_close(timeout=10)
    silent_for = time.monotonic() - last_frame
    assert code == 4408
    assert frames[-1] == {"type": "error", "code": "heartbeat_timeout", "detail": "no frame for 1 s"}
    # At the deadline: a deadline twice as long (or never armed) fails here.
    assert TIMEOUT <= silent_for < 1.8 * TIMEOUT, silent_for

    async def recorded():
        row = await database_sync_to_async(Connection.objects.get)(conversation_id=ready["conversation_id"])
        return (row.close_code, row.close_reason) if row.closed_at else None

    assert await eventually(recorded, timeout=5) == (4408, "heartbeat_timeout")
    r = aioredis.from_url(django_settings.REDIS_URL)
    try:
        assert await r.zcard(f"{django_settings.REDIS_KEY_PREFIX}:slots:user:{user.pk}") == 0
    finally:
        await r.aclose()
    await client.drop()


async def test_pings_keep_a_socket_open_past_the_timeout(settings, node_app, token):
    settings.REALTIME_HEARTBEAT_TIMEOUT = TIMEOUT
    client = WSClient(node_app)
    await client.connect(token)
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 3 * TIMEOUT:
        n += 1
        await client.send({"type": "ping", "id": n})
        assert await client.recv(timeout=TIMEOUT) == {"type": "pong", "id": n}
        await client.assert_silent(settle=TIMEOUT / 4)  # idle between pings, well within the timeout
    assert client.close_code is None
    await client.drop()


async def test_a_client_leaving_while_its_close_is_released_leaves_nothing_open(settings, node_app, user, token,
                                                                                monkeypatch):
    """The watchdog closes the socket (4408) and is releasing its slot when the client's own
    disconnect arrives, which cancels the watchdog: the release must still finish."""
    settings.REALTIME_HEARTBEAT_TIMEOUT = 0.3
    gate = Gate()
    monkeypatch.setattr(ratelimit, "release_slot", gate.before(ratelimit.release_slot))
    client = WSClient(node_app)
    ready = await client.connect(token)
    await gate.arrived()  # the heartbeat close is releasing the socket's slot
    await client.comm.send_input({"type": "websocket.disconnect", "code": 1006})

    async def application_ended():
        return client.comm.future.done()

    await eventually(application_ended, timeout=5, what="the disconnect handled, the watchdog cancelled")
    gate.open()

    async def closed():
        row = await database_sync_to_async(Connection.objects.get)(conversation_id=ready["conversation_id"])
        return (row.close_code, row.close_reason) if row.closed_at else None

    assert await eventually(closed, timeout=5) == (4408, "heartbeat_timeout")
    r = aioredis.from_url(django_settings.REDIS_URL)
    try:

        async def slot_freed():
            return await r.zcard(f"{django_settings.REDIS_KEY_PREFIX}:slots:user:{user.pk}") == 0

        await eventually(slot_freed, timeout=5, what="the slot the interrupted release was giving back")
    finally:
        await r.aclose()
