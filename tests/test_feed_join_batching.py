"""A node's joins to the live feed go out in batches, and a join waits for its own
subscription (issue 12).

Before: every join sent its own SUBSCRIBE while holding the hub's lock, one waiter per loop
iteration; a burst of 500 connects on a node that was already streaming timed joins out
(`bench/stream_bench.py --streams 500`: "live feed unavailable"). The hub here talks to a
recording stand-in for its Redis subscription, so the commands and the order of the confirmations
are the test's to choose."""

from __future__ import annotations

import asyncio

import pytest

from realtime.fanout.hub import FanoutHub
from realtime.fanout.publish import channel_for


class RecordingPubSub:
    """Records the commands; confirmations are delivered by the test through `_dispatch`."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[str, ...]]] = []

    async def subscribe(self, *channels: str) -> None:
        self.commands.append(("subscribe", channels))

    async def unsubscribe(self, *channels: str) -> None:
        self.commands.append(("unsubscribe", channels))

    async def get_messages(self, timeout: float) -> list:
        await asyncio.sleep(timeout)  # the test delivers what the reader would have read
        return []


class Listener:
    channel_name = "ws.test"

    def live(self, message: dict) -> None:
        pass

    def lost_live_feed(self) -> None:
        pass

    def control(self, action: str) -> None:
        pass


def confirm(hub: FanoutHub, conversation_id: str) -> None:
    # What the hub's reader does with a confirmation it read (the reader reads the stand-in).
    hub._dispatch({"type": "subscribe", "channel": channel_for(conversation_id).encode(), "data": 1})  # noqa: SLF001


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def hub():
    hub = FanoutHub()
    pubsub = RecordingPubSub()

    async def connected() -> None:  # stands in for the Redis connection
        hub._pubsub = pubsub  # noqa: SLF001 - the stand-in is the test's instrument

    hub._connect = connected  # noqa: SLF001 - no Redis: the hub talks to the stand-in
    hub.pubsub = pubsub
    yield hub
    await hub.stop()


async def test_a_burst_of_joins_is_one_subscribe(hub):
    warm = asyncio.ensure_future(hub.join("warm", Listener()))
    await settle()
    confirm(hub, "warm")
    await warm
    hub.pubsub.commands.clear()

    ids = [f"c{i}" for i in range(300)]
    joins = [asyncio.ensure_future(hub.join(cid, Listener())) for cid in ids]
    await settle()
    assert [(kind, sorted(channels)) for kind, channels in hub.pubsub.commands] == [
        ("subscribe", sorted(channel_for(cid) for cid in ids))]
    assert not any(j.done() for j in joins)
    for cid in ids:
        confirm(hub, cid)
    await asyncio.wait_for(asyncio.gather(*joins), 1)


async def test_a_join_after_a_leave_waits_for_its_own_subscribe(hub):
    """SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE of one conversation are in flight; the first
    confirmation predates the UNSUBSCRIBE, so only the second one means the feed is live."""
    listener = Listener()
    first = asyncio.ensure_future(hub.join("c", listener))
    await settle()
    await hub.leave("c", listener)
    await settle()
    with pytest.raises(Exception, match="subscription dropped"):
        await first
    second = asyncio.ensure_future(hub.join("c", Listener()))
    await settle()
    channel = channel_for("c")
    assert hub.pubsub.commands == [("subscribe", (channel,)), ("unsubscribe", (channel,)),
                                   ("subscribe", (channel,))]
    confirm(hub, "c")
    await settle()
    assert not second.done()
    confirm(hub, "c")
    await asyncio.wait_for(second, 1)


async def test_a_join_after_a_leave_the_syncer_never_saw_is_live_at_once(hub):
    """Left and joined again within one loop iteration: the subscription was never dropped,
    so there is nothing to send and no confirmation to wait for (it would time out)."""
    listener = Listener()
    first = asyncio.ensure_future(hub.join("c", listener))
    await settle()
    confirm(hub, "c")
    await first
    await hub.leave("c", listener)
    # Awaited inline (not as a task), so it runs before the syncer the leave woke.
    await hub.join("c", Listener())
    await settle()
    assert hub.pubsub.commands == [("subscribe", (channel_for("c"),))]
