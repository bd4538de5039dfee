"""A node's fan-out subscription notices a silent Redis (a partition: no FIN, no RST) and
rebuilds itself; its sockets then catch up from the log (issue 25, item 4).

The subscription connection has no socket timeout (redis-py 8's 5 s default would kill it
whenever the conversations are quiet), so a Redis that stops answering without closing the
connection left the reader waiting forever: nothing published meanwhile reached the node's
sockets until each one's next resync, and SUBSCRIBEs sent into the silence left the hub's
bookkeeping waiting for confirmations that would never come. Here the hub's Redis sits behind
tests.support.netproxy.FaultProxy, which blackholes it; other nodes' publishes go to Redis
directly. End to end, with two daphne nodes and clients mid-answer:
tests/e2e/test_redis_partition.py."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from realtime.core.wire import dumps
from realtime.fanout import hub as hub_module
from realtime.fanout.hub import FanoutHub, FanoutUnavailable
from realtime.fanout.publish import channel_for, layer_message
from tests.support.netproxy import FaultProxy
from tests.support.waiting import eventually

pytestmark = pytest.mark.django_db(transaction=True)

PING_AFTER = 0.3  # the hub pings a quiet Redis after this long
REPLY_TIMEOUT = 0.3  # and gives up on it this long after


class Listener:
    def __init__(self, channel_name: str = "ws.listener") -> None:
        self.channel_name = channel_name
        self.upto: list[int] = []
        self.caught_up = 0

    def live(self, message: dict) -> None:
        self.upto.append(message["upto"])

    def lost_live_feed(self) -> None:
        self.caught_up += 1

    def control(self, action: str) -> None:
        pass


@pytest.fixture
async def direct():
    """Another node's view of Redis: never blackholed."""
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    yield client
    await client.aclose()


async def _publish(direct: aioredis.Redis, conversation_id: str, seq: int) -> int:
    """Publishes as another node does; returns how many subscriptions Redis handed it to."""
    return await direct.publish(channel_for(conversation_id), dumps(layer_message([{"type": "note", "seq": seq}])))


async def test_a_silent_redis_is_noticed_and_the_sockets_catch_up_once_it_answers(settings, direct, caplog):
    proxy = await FaultProxy(upstream=(direct.connection_pool.connection_kwargs["host"],
                                       direct.connection_pool.connection_kwargs["port"])).start()
    settings.REDIS_URL = f"redis://127.0.0.1:{proxy.port}/{direct.connection_pool.connection_kwargs.get('db', 0)}"
    hub = FanoutHub(health_check_interval=PING_AFTER, reply_timeout=REPLY_TIMEOUT)
    listener = Listener()
    caplog.set_level(logging.WARNING, logger=hub_module.__name__)
    try:
        await hub.join("conv-a", listener)
        assert await _publish(direct, "conv-a", 1) == 1

        def delivered(seq: int):
            async def check() -> bool:
                return seq in listener.upto

            return check

        await eventually(delivered(1), timeout=5, what="seq 1 delivered live")
        # Quiet but healthy: the hub's pings are answered and nothing is rebuilt.
        quiet = caplog.records[:]
        await eventually(_after(PING_AFTER + REPLY_TIMEOUT + 0.5), timeout=5, what="a quiet spell")
        assert hub.reconnects == 0 and caplog.records == quiet

        proxy.blackhole()
        await _publish(direct, "conv-a", 2)  # lost to this node: the proxy drops it

        async def noticed():
            return any("fan-out subscription lost" in r.getMessage() for r in caplog.records)

        await eventually(noticed, timeout=PING_AFTER + REPLY_TIMEOUT + 3, what="the silence noticed")
        # While Redis is unreachable a join fails at once: the client is told to come back.
        with pytest.raises(FanoutUnavailable):
            await hub.join("conv-b", Listener("ws.b"))

        proxy.clear_faults()

        async def caught_up():
            return listener.caught_up

        await eventually(caught_up, timeout=10, what="the socket told to catch up from the log")
        assert hub.reconnects >= 1
        # Live again, and a conversation joined after the outage is live too.
        other = Listener("ws.c")
        await hub.join("conv-c", other)
        assert await _publish(direct, "conv-a", 3) == 1
        await eventually(delivered(3), timeout=5, what="seq 3 delivered live")
        assert await _publish(direct, "conv-c", 1) == 1

        async def other_delivered():
            return other.upto == [1]

        await eventually(other_delivered, timeout=5, what="the new conversation live")

        # The outage in two lines, neither with a traceback.
        lines = [r for r in caplog.records if r.name == hub_module.__name__]
        assert [r.getMessage().split(" (")[0].split(" after")[0] for r in lines] == [
            "fan-out subscription lost", "fan-out subscription back"], [r.getMessage() for r in lines]
        assert not any(r.exc_info for r in lines)
    finally:
        await hub.stop()
        await proxy.stop()


def _after(seconds: float):
    """A check that turns true `seconds` from now (a quiet spell of known length)."""
    until = asyncio.get_running_loop().time() + seconds

    async def check():
        return asyncio.get_running_loop().time() >= until

    return check
