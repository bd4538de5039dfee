"""`connect` with `conversation_id: null` creates a conversation each time, and skipped the REST
throttle (issue 24, item 7): new conversations per user are limited on the socket too
(REALTIME_RATE_NEW_CONVERSATIONS_USER), checked in the connect's one round trip. Over it:
`rate_limited` with `retry_after_ms`, close 4429, no row written. Resuming an existing
conversation is not concerned."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async

from realtime.infra import ratelimit
from sessions_app.models import Conversation
from tests.conftest import access_for
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


async def _connect(app, token: str, conversation_id: str | None = None) -> tuple[dict, int | None]:
    client = WSClient(app)
    await client.open()
    await client.send({"type": "connect", "token": token, "conversation_id": conversation_id, "last_seq": None,
                       "client_id": str(uuid.uuid4())})
    frame = await client.recv()
    if frame["type"] == "ready":
        return frame, None
    _, code = await client.expect_close()
    return frame, code


async def test_new_conversations_per_user_are_limited_on_the_socket(settings, node_app, user, other_user, token):
    settings.REALTIME_RATE_NEW_CONVERSATIONS_USER = (2, 600)
    first, _ = await _connect(node_app, token)
    second, _ = await _connect(node_app, token)
    assert first["type"] == second["type"] == "ready"
    refused, code = await _connect(node_app, token)
    assert (refused["code"], refused["detail"], code) == (
        "rate_limited", "too many new conversations started by this user", 4429)
    assert 0 < refused["retry_after_ms"] <= 300_000
    assert await database_sync_to_async(Conversation.objects.filter(owner=user).count)() == 2
    # Resuming is not creating; another user has a limit of their own.
    resumed, _ = await _connect(node_app, token, first["conversation_id"])
    assert resumed["type"] == "ready"
    assert (await _connect(node_app, access_for(other_user)))[0]["type"] == "ready"


async def test_the_new_conversation_bucket_is_in_the_connects_one_round_trip():
    rule = ratelimit.Rule(capacity=1, per_second=0.001)
    many = ratelimit.Rule(capacity=100, per_second=1)
    assert (await ratelimit.take_connect("user:9", many, "new:a", 5, 60, "ws.a", new_conversation=rule)).allowed
    refused = await ratelimit.take_connect("user:9", many, "new:b", 5, 60, "ws.b", new_conversation=rule)
    assert (refused.allowed, refused.refused_by) == (False, 2) and refused.retry_after_ms > 0
    # A resume (no new conversation) is still allowed.
    assert (await ratelimit.take_connect("user:9", many, "c:x", 5, 60, "ws.c")).allowed
