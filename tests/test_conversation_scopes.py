"""Lookups by id are scoped to the socket's conversation: a run id or a client_msg_id that
belongs to another conversation (another user's, or the same user's) never reaches across.
Both scopes were once dropped without any test noticing (issue 9, item 6)."""

import uuid

import pytest
from channels.db import database_sync_to_async

from sessions_app import services
from sessions_app.models import AgentRun, Event, Message
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("state", ["queued", "running"])
async def test_a_user_cannot_cancel_another_users_run_by_id(cluster, token, other_user, state):
    # No supervisor on the node: B's run stays exactly as the test leaves it.
    _, app = cluster("node-1", run_agents=False)

    def b_has_a_run():
        conversation = services.create_conversation(other_user.pk)
        posted = services.post_user_message(conversation.pk, uuid.uuid4(), "count 5")
        if state == "running":
            services.claim_next_run(conversation.pk, "node-b", lease_seconds=60)
        return conversation.pk, posted.run_id

    b_conversation, b_run = await database_sync_to_async(b_has_a_run)()
    b_log_before = await database_sync_to_async(_log)(b_conversation)

    a = WSClient(app)
    ready = await a.connect(token)
    await a.send({"type": "cancel", "run_id": b_run})
    assert await a.recv() == {
        "type": "error", "code": "not_found", "detail": "no such run in this conversation", "ref": b_run,
    }
    await a.assert_silent()
    await a.drop()

    run = await database_sync_to_async(AgentRun.objects.get)(pk=b_run)
    assert (run.status, run.cancel_requested, run.finished_at) == (state, False, None)
    assert await database_sync_to_async(_log)(b_conversation) == b_log_before
    assert await database_sync_to_async(_log)(ready["conversation_id"]) == []


async def test_one_client_msg_id_in_two_conversations_makes_two_messages_and_two_runs(cluster, token):
    _, app = cluster("node-1", run_agents=False)
    first, second = WSClient(app), WSClient(app)
    conversations = [(await first.connect(token))["conversation_id"], (await second.connect(token))["conversation_id"]]
    msg_id = str(uuid.uuid4())

    for client in (first, second):
        await client.message("hello", client_msg_id=msg_id)
        frames = await client.recv_until(lambda f: f["type"] == "message.ack")
        assert frames[-1] == {"type": "message.ack", "client_msg_id": msg_id, "seq": 1, "duplicate": False}
    for client in (first, second):
        await client.drop()

    def stored():
        return sorted(
            (str(conversation_id), str(run_id) != "None")
            for conversation_id, run_id in Message.objects.filter(client_msg_id=msg_id).values_list(
                "conversation_id", "run__id"
            )
        )

    assert await database_sync_to_async(stored)() == sorted((c, True) for c in conversations)
    runs = await database_sync_to_async(
        lambda: sorted(str(c) for c in AgentRun.objects.values_list("conversation_id", flat=True))
    )()
    assert runs == sorted(conversations)


def _log(conversation_id) -> list[tuple[int, str]]:
    return list(Event.objects.filter(conversation_id=conversation_id).order_by("seq").values_list("seq", "type"))
