"""Through real daphne, an idle socket survives past redis-py 8's 5 s socket timeout."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from tests.conftest import access_for
from tests.support.ws_e2e import E2EClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def test_idle_socket_through_daphne(daphne_cluster, user):
    node = daphne_cluster("idle", REALTIME_HEARTBEAT_TIMEOUT=30, REALTIME_DEMO_AGENT_DELAY_MS=0)
    client = E2EClient(await database_sync_to_async(access_for)(user))
    await client.connect(node.ws_url)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.ws.recv(), 7)  # deliberate idle; the server must not close
    await client.ws.send(json.dumps({"type": "ping", "id": 7}))
    assert await client.recv() == {"type": "pong", "id": 7}
    await client.message("after the idle")
    done = await client.until(lambda f: f["type"] == "agent.completed")
    assert done["message"]["text"] == "You said: after the idle"
    await client.close()
