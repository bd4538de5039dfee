"""What one idle socket holds on its node (issue 12: memory per idle socket). A socket has no
channel-layer channel: its own tasks are its watchdog and its sender, and nothing waits on the
layer for it. Messages that end it (`replaced`, an operator's `disconnect`) come through the
fan-out: tests/test_client_id_replacement.py and tests/test_admin_actions.py."""

import asyncio

import pytest
from channels.layers import channel_layers

from realtime.connection.consumer import ConversationConsumer
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


def _tasks_of(consumer: ConversationConsumer) -> list[str]:
    """The names of the running tasks whose coroutine is a method of `consumer`."""
    names = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if frame is not None and frame.f_locals.get("self") is consumer:
            names.append(coro.__qualname__)
    return sorted(names)


async def test_an_idle_socket_holds_its_watchdog_and_sender_and_no_layer_channel(cluster, token):
    node, app = cluster("node-1")
    client = WSClient(app)
    await client.connect(token, client_id="tab-1")
    await client.assert_silent()
    [consumer] = node.connections

    assert _tasks_of(consumer) == ["ConversationConsumer._send_forever", "ConversationConsumer._watch"]
    assert consumer.channel_layer is None
    # No layer holds a receive buffer for it (channels_redis keeps one per channel it receives on).
    buffers = {alias: dict(getattr(layer, "receive_buffer", {})) for alias, layer in channel_layers.backends.items()}
    assert all(not buffer for buffer in buffers.values()), buffers
    await client.drop(1000)

