"""The connect runs to completion or is cleanly undone (issue 9, item 2).

The connect timeout is for the `connect` frame to arrive; a connect that takes longer after it
(a long replay to a new device) is not killed. And a close that happens while the connect waits
at any of its awaits (here: the node drains) leaves no connection row, no connection slot, no
live-feed member and no socket registered with the node. Each await is held by a gate, the close
happens, the gate opens: a forced interleaving, not luck."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings as django_settings

from realtime.fanout.hub import FanoutHub
from realtime.infra import ratelimit
from realtime.server.drain import Drainer
from sessions_app import services
from sessions_app.models import Connection
from tests.support.gates import Gate
from tests.support.waiting import eventually
from tests.support.ws import WSClient, sequenced

pytestmark = pytest.mark.django_db(transaction=True)


async def held_resources(node, user) -> dict:
    r = aioredis.from_url(django_settings.REDIS_URL)
    try:
        slots = await r.zcard(f"{django_settings.REDIS_KEY_PREFIX}:slots:user:{user.pk}")
    finally:
        await r.aclose()
    return {
        "open_rows": await database_sync_to_async(Connection.objects.filter(closed_at__isnull=True).count)(),
        "slots": slots,
        "feed_members": sum(len(m) for m in node.fanout.members.values()),
        "node_connections": len(node.connections),
    }


def gate_at(step: str, gate: Gate, monkeypatch) -> None:
    """Holds the connect at one of its awaits."""
    if step in ("limits", "rename"):
        name = "take_connect" if step == "limits" else "rename_slot"
        original = getattr(ratelimit, name)

        async def gated(*args, **kwargs):
            await gate.hold_async()
            try:
                return await original(*args, **kwargs)
            finally:
                gate.mark_passed()

        monkeypatch.setattr(ratelimit, name, gated)
    elif step == "join":
        join = FanoutHub.join

        async def gated_join(self, *args, **kwargs):
            await gate.hold_async()
            try:
                return await join(self, *args, **kwargs)
            finally:
                gate.mark_passed()

        monkeypatch.setattr(FanoutHub, "join", gated_join)
    elif step == "open_session":
        open_session = services.open_session

        def gated_open(**kwargs):
            gate.hold()
            try:
                return open_session(**kwargs)
            finally:
                gate.mark_passed()

        monkeypatch.setattr(services, "open_session", gated_open)
    else:
        raise AssertionError(step)


@pytest.mark.parametrize(
    "step, new_conversation",
    [
        ("limits", False),
        ("limits", True),
        ("join", False),
        ("open_session", False),
        ("open_session", True),
        ("rename", True),
    ],
)
async def test_a_close_at_any_await_of_the_connect_leaves_nothing_behind(cluster, user, token, monkeypatch,
                                                                          step, new_conversation):
    node, app = cluster("node-1")
    conversation = await database_sync_to_async(services.create_conversation)(user.pk)
    baseline = await held_resources(node, user)
    assert baseline == {"open_rows": 0, "slots": 0, "feed_members": 0, "node_connections": 0}
    gate = Gate()
    gate_at(step, gate, monkeypatch)

    client = WSClient(app)
    await client.open()
    await client.send({"type": "connect", "token": token, "last_seq": None, "client_id": "tab-1",
                       "conversation_id": None if new_conversation else str(conversation.pk)})
    await gate.arrived()
    # The node drains while the connect waits there.
    told = await Drainer(node, grace=0, stop_server=lambda: None).close_sockets()
    assert told == 1
    gate.open()

    frames, code = await client.expect_close()
    assert code == 4012 and frames[-1] == {"type": "reconnect", "reason": "server is restarting", "retry_after_ms": 0}

    async def released():
        # After the held call returned: what the connect did next must be undone too.
        return gate.passed and await held_resources(node, user) == baseline

    await eventually(released, timeout=5, what="everything the connect took released")
    # Whatever row the connect wrote was closed with the drain's code.
    closed = await database_sync_to_async(
        lambda: list(Connection.objects.values_list("close_code", "close_reason"))
    )()
    assert closed in ([], [(4012, "going_away")])
    await client.drop()


async def test_a_replay_longer_than_the_connect_timeout_completes(settings, cluster, user, token, monkeypatch):
    """A new device on a long conversation: the connect frame came in time; the replay after
    it takes longer than REALTIME_CONNECT_TIMEOUT. Before the fix: 4401 mid-replay, and the
    client looped (resume, 4401, resume)."""
    settings.REALTIME_CONNECT_TIMEOUT = 0.3
    settings.REALTIME_REPLAY_BATCH = 10
    _, app = cluster("node-1")
    conversation = await database_sync_to_async(services.create_conversation)(user.pk)
    for i in range(30):
        await database_sync_to_async(services.append_event)(conversation.pk, "note", {"i": i})
    gate = Gate()
    read = services.frames_after

    def slow_first_read(*args, **kwargs):
        gate.hold()
        return read(*args, **kwargs)

    monkeypatch.setattr(services, "frames_after", slow_first_read)
    client = WSClient(app)
    ready = await client.connect(token, conversation_id=str(conversation.pk), last_seq=None)
    assert (ready["resumed"], ready["replay_count"]) == (True, 30)
    await gate.arrived()
    # The scenario itself: the replay is still under way well past the connect timeout.
    await asyncio.sleep(3 * settings.REALTIME_CONNECT_TIMEOUT)
    gate.open()
    monkeypatch.setattr(services, "frames_after", read)
    frames = await client.recv_until(lambda f: f.get("seq") == 30)
    assert [f["seq"] for f in sequenced(frames)] == list(range(1, 31))
    await client.send({"type": "ping", "id": 1})
    assert await client.recv() == {"type": "pong", "id": 1}
    row = await database_sync_to_async(Connection.objects.get)(conversation=conversation)
    assert row.closed_at is None
    await client.drop()
