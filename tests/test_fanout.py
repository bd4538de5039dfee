"""Large events travel through the layer as a bare notification; consumers read them from the log."""

import asyncio

import pytest

from realtime.fanout.publish import layer_message
from tests.support.waiting import eventually
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


class _Listener:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    def live(self, message: dict) -> None:
        self.messages.append(message)

    def lost_live_feed(self) -> None:
        pass


async def test_a_join_after_an_idle_spell_without_subscriptions_keeps_the_feed():
    """redis-py checks an idle pub/sub connection's health (a PING whose reply it reads) when
    it subscribes while subscribed to nothing, and the hub's reader is reading the same
    connection: "read() called while another coroutine is already waiting". Found by a burst of
    500 connects after an idle spell (bench/compare_socketio.py): the node turned 100 sockets
    away. The hub keeps one subscription of its own, so a join never triggers that check."""
    from realtime.fanout.hub import FanoutHub
    from realtime.fanout.publish import publish

    hub = FanoutHub(health_check_interval=0.05)
    first, second = _Listener(), _Listener()
    try:
        await hub.join("idle-a", first)
        await hub.leave("idle-a", first)  # nothing of the conversations is subscribed now
        await asyncio.sleep(0.3)  # the scenario: the connection idles past its health-check interval
        await hub.join("idle-b", second)
        await publish("idle-b", [{"type": "note", "seq": 1}])

        async def delivered():
            return second.messages

        assert (await eventually(delivered, timeout=5))[0]["upto"] == 1
        assert hub.reconnects == 0
    finally:
        await hub.stop()
