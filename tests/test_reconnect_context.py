"""Path 1: reconnecting keeps the conversation: same id, same history, nothing twice,
also through another node."""

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import Conversation, Message
from tests.support.ws import WSClient, assert_gapless, sequenced

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_agent")]


@pytest.mark.parametrize("second_node", [False, True], ids=["same-node", "other-node"])
async def test_reconnect_resumes_same_conversation(cluster, token, second_node):
    _, app1 = cluster("node-1")
    _, app2 = cluster("node-2") if second_node else (None, app1)

    first = WSClient(app1)
    ready = await first.connect(token)
    assert (ready["resumed"], ready["last_seq"], ready["replay_count"], ready["node"]) == (False, 0, 0, "node-1")
    conversation_id = ready["conversation_id"]
    frames = await first.converse("hello")
    frames += await first.converse("how many messages?")
    assert_gapless(frames)
    seen = max(f["seq"] for f in sequenced(frames))
    # The client applied only part of the log before the socket died.
    applied = seen - 3
    await first.drop()

    second = WSClient(app2)
    ready = await second.connect(token, conversation_id=conversation_id, last_seq=applied)
    assert ready == {
        "type": "ready", "conversation_id": conversation_id, "resumed": True, "last_seq": seen,
        "replay_count": 3, "heartbeat_interval_ms": ready["heartbeat_interval_ms"],
        "access_expires_at": ready["access_expires_at"], "node": "node-2" if second_node else "node-1",
    }
    replay = [await second.recv() for _ in range(3)]
    assert replay == [f for f in sequenced(frames) if f["seq"] > applied]
    await second.assert_silent()

    # The history continues on the same conversation, numbering continues without a gap.
    more = await second.converse("how many messages?")
    assert more[-1]["message"]["text"] == "You have sent 3 messages in this conversation."
    assert_gapless(replay + more, after=applied)
    await second.drop()

    messages = await database_sync_to_async(
        lambda: list(Message.objects.filter(conversation_id=conversation_id).values_list("role", "text"))
    )()
    assert [m[0] for m in messages] == ["user", "assistant"] * 3
    assert await database_sync_to_async(Conversation.objects.count)() == 1


async def test_resume_with_everything_applied_replays_nothing(node_app, token):
    c = WSClient(node_app)
    ready = await c.connect(token)
    frames = await c.converse("hi")
    last = frames[-1]["seq"]
    await c.drop()
    again = WSClient(node_app)
    ready = await again.connect(token, conversation_id=ready["conversation_id"], last_seq=last)
    assert (ready["resumed"], ready["replay_count"], ready["last_seq"]) == (True, 0, last)
    await again.assert_silent()
    await again.drop()


async def test_last_seq_null_on_existing_conversation_replays_whole_log(node_app, token):
    c = WSClient(node_app)
    ready = await c.connect(token)
    frames = await c.converse("hi")
    await c.drop()
    fresh = WSClient(node_app)
    ready = await fresh.connect(token, conversation_id=ready["conversation_id"])
    assert (ready["resumed"], ready["replay_count"]) == (True, len(sequenced(frames)))
    replay = [await fresh.recv() for _ in range(ready["replay_count"])]
    assert replay == sequenced(frames)
    await fresh.drop()


async def test_last_seq_beyond_server_gets_resumed_false(node_app, token):
    c = WSClient(node_app)
    ready = await c.connect(token)
    frames = await c.converse("hi")
    await c.drop()
    confused = WSClient(node_app)
    ready = await confused.connect(token, conversation_id=ready["conversation_id"], last_seq=999)
    assert (ready["resumed"], ready["replay_count"], ready["last_seq"]) == (False, 0, frames[-1]["seq"])
    await confused.assert_silent()
    await confused.drop()
