"""Path 1 end to end: agent memory survives a node restart and a move to another node."""

import pytest
from channels.db import database_sync_to_async

from tests.conftest import access_for
from tests.support.ws_e2e import E2EClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def _ask(client: E2EClient, text: str) -> str:
    await client.message(text)
    return (await client.until(lambda f: f["type"] == "agent.completed"))["message"]["text"]


async def test_memory_across_restart_and_nodes(daphne_cluster, user):
    a = daphne_cluster("mem-a", REALTIME_DEMO_AGENT_DELAY_MS=1)
    b = daphne_cluster("mem-b", REALTIME_DEMO_AGENT_DELAY_MS=1)
    client = E2EClient(await database_sync_to_async(access_for)(user))
    await client.connect(a.ws_url)
    assert await _ask(client, "my name is Ada") == "Nice to meet you, Ada. I will remember your name."
    await client.close()

    a.restart()
    ready = await client.connect(a.ws_url)
    assert ready["resumed"] is True and ready["replay_count"] == 0
    assert await _ask(client, "what is my name?") == "Your name is Ada."
    await client.close()

    await client.connect(b.ws_url)
    assert await _ask(client, "what is my name?") == "Your name is Ada."
    await client.close()
