"""Regression: redis-py 8's default 5 s socket timeout killed idle consumers of the Redis
channel layer (1011 after ~5 s). Sockets no longer receive on the layer (realtime/connection/base.py);
the connections that do idle (the fan-out's subscription, the layer that wakes agent workers)
are configured with socket_timeout=None, and an idle socket must outlive that timeout."""

import time

import pytest

from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


async def test_idle_consumer_survives_past_six_seconds(settings, node_app, token):
    settings.REALTIME_HEARTBEAT_TIMEOUT = 30
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 0
    c = WSClient(node_app)
    await c.connect(token)
    started = time.monotonic()
    # Deliberate idle: nothing is sent in either direction while the fan-out's read blocks.
    await c.assert_silent(settle=6.5)
    assert time.monotonic() - started >= 6.5
    await c.send({"type": "ping", "id": "still here"})
    assert await c.recv() == {"type": "pong", "id": "still here"}
    await c.message("live events still flow")
    frames = await c.recv_until(lambda f: f["type"] == "agent.completed")
    assert frames[-1]["message"]["text"] == "You said: live events still flow"
    await c.drop()
