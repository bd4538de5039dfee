"""A resume joins the live feed while its limits are checked, and a refused one leaves it
(issue 12).

Each connect step is a Redis round trip; on a node busy streaming each waits for the loop (42-213
ms per step in a rolling restart), so the join runs beside the per-user rate and the slot
instead of after them. The join still completes before the log is read (the replay/live-feed
rule of realtime/connection/session.py), and a connect that is refused gives the feed back."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from realtime.fanout.hub import FanoutHub
from realtime.infra import ratelimit
from sessions_app import services
from tests.support.gates import Gate
from tests.support.waiting import eventually
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_join_starts_while_the_limits_are_held(cluster, user, token, monkeypatch):
    node, app = cluster("node-1")
    conversation = await database_sync_to_async(services.create_conversation)(user.pk)
    gate, joined = Gate(), asyncio.Event()
    join = FanoutHub.join

    async def watched_join(self, *args, **kwargs):
        await join(self, *args, **kwargs)
        joined.set()

    monkeypatch.setattr(ratelimit, "take_connect", gate.before(ratelimit.take_connect))
    monkeypatch.setattr(FanoutHub, "join", watched_join)
    client = WSClient(app)
    await client.open()
    await client.send({"type": "connect", "token": token, "conversation_id": str(conversation.pk),
                       "last_seq": 0, "client_id": "tab-1"})
    await gate.arrived()
    await asyncio.wait_for(joined.wait(), 5)  # the limit is still held: the join went beside it
    gate.open()
    ready = await client.recv()
    assert (ready["type"], ready["resumed"], ready["replay_count"]) == ("ready", True, 0)
    assert {len(m) for m in node.fanout.members.values()} == {1}
    await client.drop()


async def test_a_resume_refused_by_the_slot_limit_leaves_the_feed(settings, cluster, user, token):
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 1
    node, app = cluster("node-1")
    conversation = await database_sync_to_async(services.create_conversation)(user.pk)
    first = WSClient(app)
    await first.connect(token, conversation_id=str(conversation.pk), last_seq=0, client_id="tab-1")
    second = WSClient(app)
    await second.open()
    await second.send({"type": "connect", "token": token, "conversation_id": str(conversation.pk),
                       "last_seq": 0, "client_id": "tab-2"})
    frames, code = await second.expect_close()
    assert code == 4429 and frames[-1]["code"] == "rate_limited"

    async def only_the_first_listens():
        return [len(m) for m in node.fanout.members.values()] == [1]

    await eventually(only_the_first_listens, timeout=5, what="the refused socket left the feed")
    await first.drop()
