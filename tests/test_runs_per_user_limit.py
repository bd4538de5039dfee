"""Agent runs started per user, over all the user's conversations (issue 9, item 11): runs cost
money, and the per-conversation message limit alone let one user start 20 x 30 runs a minute.
Over REALTIME_RATE_RUNS_USER a message gets `rate_limited` with `ref` and `retry_after_ms`, is not
stored and starts no run; the socket stays open."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import AgentRun, Message
from tests.conftest import access_for
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


async def test_runs_per_user_are_limited_across_conversations(settings, node_app, user, other_user, token):
    settings.REALTIME_RATE_RUNS_USER = (3, 60)
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 0
    first, second = WSClient(node_app), WSClient(node_app)
    await first.connect(token)
    await second.connect(token)
    for client in (first, second, first):
        await client.converse("hi")
    refused_id = await second.message("one too many")
    refused = await second.recv_until(lambda f: f["type"] == "error")
    assert refused[-1]["code"] == "rate_limited" and refused[-1]["ref"] == refused_id
    assert refused[-1]["detail"] == "too many agent runs started by this user"
    assert 0 < refused[-1]["retry_after_ms"] <= 20_000
    assert await database_sync_to_async(Message.objects.filter(client_msg_id=refused_id).exists)() is False
    assert await database_sync_to_async(AgentRun.objects.count)() == 3
    # Another user is not concerned.
    stranger = WSClient(node_app)
    await stranger.connect(access_for(other_user))
    done = await stranger.converse("hello")
    assert done[-1]["type"] == "agent.completed"
    for client in (first, second, stranger):
        await client.drop()
