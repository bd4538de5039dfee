"""The node's pub/sub connection (realtime/fanout/subscription.py, issue 22): messages are parsed
as the bytes arrive, however the socket splits them, and handed over all at once; a lost
connection is an error after what arrived before it, never a silent reconnect."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from django.conf import settings

from realtime.fanout.subscription import Subscription, pack


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def _open(url: str = "redis://127.0.0.1:6379/0") -> tuple[Subscription, FakeTransport]:
    subscription = Subscription(url, connect_timeout=1)
    transport = FakeTransport()
    subscription.connection_made(transport)
    return subscription, transport


@pytest.mark.pure
def test_a_command_is_packed_in_resp():
    assert pack("SUBSCRIBE", "p:conv:a", "é") == b"*3\r\n$9\r\nSUBSCRIBE\r\n$8\r\np:conv:a\r\n$2\r\n\xc3\xa9\r\n"


@pytest.mark.pure
async def test_messages_split_anywhere_arrive_whole_and_together():
    subscription, transport = _open()
    await subscription.subscribe("a")
    assert transport.written == [b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n"]
    stream = (b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
              b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n"
              b"*2\r\n$4\r\npong\r\n$4\r\nping\r\n"
              b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nworld\r\n")
    for i in range(0, len(stream), 7):  # cut in the middle of lengths, payloads and line ends
        subscription.data_received(stream[i:i + 7])

    assert await subscription.get_messages(timeout=1) == [
        {"type": "subscribe", "channel": b"a", "data": 1},
        {"type": "message", "channel": b"a", "data": b"hello"},
        {"type": "pong", "channel": b"", "data": b"ping"},
        {"type": "message", "channel": b"a", "data": b"world"},
    ]
    assert await subscription.get_messages(timeout=0.01) == []  # nothing more: it returns empty


@pytest.mark.pure
async def test_a_lost_connection_is_raised_after_what_arrived_before_it():
    subscription, _ = _open()
    waiting = asyncio.create_task(subscription.get_messages(timeout=5))
    await asyncio.sleep(0)
    subscription.data_received(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n")
    subscription.connection_lost(ConnectionResetError("reset"))

    assert await asyncio.wait_for(waiting, 1) == [{"type": "message", "channel": b"a", "data": b"x"}]
    with pytest.raises(redis.ConnectionError, match="reset"):
        await subscription.get_messages(timeout=5)
    with pytest.raises(redis.ConnectionError):
        await subscription.subscribe("b")  # nothing is sent on a lost connection


async def _connect_answered(subscription: Subscription, reply: bytes) -> FakeTransport:
    """`connect()` against a stand-in Redis that answers the first command with `reply`."""
    transport = FakeTransport()

    async def connected(factory, *args, **kwargs):
        factory().connection_made(transport)
        subscription.data_received(reply)
        return transport, subscription

    loop = asyncio.get_running_loop()
    original, loop.create_connection = loop.create_connection, connected
    try:
        await subscription.connect()
    finally:
        loop.create_connection = original
    return transport


@pytest.mark.pure
async def test_a_refused_password_is_an_authentication_error():
    subscription = Subscription("redis://:wrong@127.0.0.1:1/0", connect_timeout=1)
    with pytest.raises(redis.AuthenticationError, match="WRONGPASS"):
        await _connect_answered(subscription, b"-WRONGPASS invalid username-password pair\r\n")
    assert subscription._transport.written == [b"*2\r\n$4\r\nAUTH\r\n$5\r\nwrong\r\n"]  # noqa: SLF001


@pytest.mark.django_db(transaction=True)
async def test_against_redis_subscribe_publish_ping_unsubscribe():
    subscription = Subscription(settings.REDIS_URL, connect_timeout=2, client_name="tether-test-fanout")
    publisher = aioredis.Redis.from_url(settings.REDIS_URL)
    got: list[dict] = []

    async def until(count: int) -> None:
        async with asyncio.timeout(5):
            while len(got) < count:
                got.extend(await subscription.get_messages(timeout=1))

    try:
        await subscription.connect()
        await subscription.subscribe("tether-test:a", "tether-test:b")
        await until(2)
        assert await publisher.publish("tether-test:b", "1") == 1
        await subscription.ping("are-you-there")
        await subscription.unsubscribe("tether-test:a")
        await until(5)
        assert got == [
            {"type": "subscribe", "channel": b"tether-test:a", "data": 1},
            {"type": "subscribe", "channel": b"tether-test:b", "data": 2},
            {"type": "message", "channel": b"tether-test:b", "data": b"1"},
            {"type": "pong", "channel": b"", "data": b"are-you-there"},
            {"type": "unsubscribe", "channel": b"tether-test:a", "data": 1},
        ]
        assert await publisher.publish("tether-test:a", "2") == 0
    finally:
        await subscription.aclose()
        await publisher.aclose()


@pytest.mark.pure
async def test_a_redis_without_client_setname_still_subscribes():
    subscription = Subscription("redis://127.0.0.1:1/0", connect_timeout=1, client_name="tether-fanout")
    transport = await _connect_answered(subscription, b"-ERR unknown command 'CLIENT'\r\n")
    await subscription.subscribe("a")
    assert transport.written[-1] == b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n"
