"""Large events travel through the layer as a bare notification; consumers read them from the log."""

import pytest

from realtime.fanout import layer_message
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


def test_small_events_inline_large_ones_as_notification():
    small = [{"type": "agent.delta", "seq": 3, "run_id": "r", "index": 0, "text": "hé"}]
    frame = '{"type":"agent.delta","seq":3,"run_id":"r","index":0,"text":"hé"}'
    assert layer_message(small) == {"type": "conv.events", "frames": [(3, frame)], "upto": 3}
    big = [{"type": "message.created", "seq": 4, "message": {"id": "m", "role": "user", "text": "x" * 17000}}]
    assert layer_message(big) == {"type": "conv.events", "frames": None, "upto": 4}


async def test_large_message_reaches_every_socket_through_the_log(settings, cluster, token):
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 0
    _, app1 = cluster("node-1")
    _, app2 = cluster("node-2")
    sender = WSClient(app1)
    ready = await sender.connect(token)
    watcher = WSClient(app2)
    await watcher.connect(token, conversation_id=ready["conversation_id"], last_seq=0)
    text = "long " * 2000
    await sender.message(text)
    frames = await watcher.recv_until(lambda f: f["type"] == "agent.completed")
    created = next(f for f in frames if f["type"] == "message.created")
    assert created["seq"] == 1 and created["message"]["text"] == text
    assert frames[-1]["message"]["text"] == f"You said: {text}"
    await sender.drop()
    await watcher.drop()
