"""Path 1 with memory: what the agent learned survives disconnects, other nodes and restarts."""

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import Conversation
from tests.support.ws import WSClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_agent")]


async def _ask(client: WSClient, text: str) -> str:
    return (await client.converse(text))[-1]["message"]["text"]


async def test_fact_survives_reconnect_other_node_and_restart(cluster, token):
    node1, app1 = cluster("node-1")
    _, app2 = cluster("node-2")
    c = WSClient(app1)
    ready = await c.connect(token)
    conversation_id = ready["conversation_id"]
    assert await _ask(c, "Hi, my name is Ada") == "Nice to meet you, Ada. I will remember your name."
    last = c.frames[-1]["seq"]
    await c.drop()

    other = WSClient(app2)
    await other.connect(token, conversation_id=conversation_id, last_seq=last)
    assert await _ask(other, "what is my name?") == "Your name is Ada."
    last = other.frames[-1]["seq"]
    await other.drop()

    # node-1 restarts: a new process with the same identity and nothing in memory.
    await node1.stop()
    _, restarted = cluster("node-1")
    again = WSClient(restarted)
    await again.connect(token, conversation_id=conversation_id, last_seq=last)
    assert await _ask(again, "What's my name") == "Your name is Ada."
    assert await _ask(again, "how many messages?") == "You have sent 4 messages in this conversation."
    await again.drop()
    conversation = await database_sync_to_async(Conversation.objects.get)(pk=conversation_id)
    assert conversation.agent_memory == {"name": "Ada", "messages_seen": 4}
