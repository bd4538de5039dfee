"""Path 6 end to end: a client that goes silent behind a misbehaving network is found and
cleaned up by a real daphne node within the configured timeout.

Every client here reaches the node through tests.support.netproxy.FaultProxy, which makes the
network fail on demand: a blackhole (half-open: nothing, not even FIN or RST, reaches the
server), a TCP reset, a clean cut (FIN), or added latency. What is checked is the server's
side of it: the Connection row closed with the right code and reason, the per-user slot in
Redis released, the conversation's live feed left, and a resume that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import redis.asyncio as aioredis
import websockets
from channels.db import database_sync_to_async
from django.conf import settings

from realtime.fanout import publish as fanout
from realtime.infra import ratelimit
from sessions_app.models import Connection, Conversation
from tests.conftest import access_for
from tests.support.netproxy import FaultProxy
from tests.support.waiting import eventually
from tests.support.ws_e2e import E2EClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HEARTBEAT_TIMEOUT = 2.0

# The app's heartbeat alone can find a half-open socket: daphne's protocol pings are far away.
APP_HEARTBEAT_ENV = {
    "REALTIME_HEARTBEAT_INTERVAL_MS": 1000,
    "REALTIME_HEARTBEAT_TIMEOUT": HEARTBEAT_TIMEOUT,
    "DAPHNE_PING_INTERVAL": 60,
    "DAPHNE_PING_TIMEOUT": 120,
    "REALTIME_DEMO_AGENT_DELAY_MS": 5,
}
# Only daphne's protocol pings (ping every 1 s, pong due within 2 s) can find it.
PROTOCOL_PING_ENV = {
    "REALTIME_HEARTBEAT_TIMEOUT": 60,
    "DAPHNE_PING_INTERVAL": 1,
    "DAPHNE_PING_TIMEOUT": 2,
    "REALTIME_DEMO_AGENT_DELAY_MS": 5,
}
# Neither times out during the test: whatever closes a row is the fault under test.
PATIENT_ENV = {
    "REALTIME_HEARTBEAT_TIMEOUT": 30,
    "DAPHNE_PING_INTERVAL": 60,
    "DAPHNE_PING_TIMEOUT": 120,
    "REALTIME_DEMO_AGENT_DELAY_MS": 5,
}


@pytest.fixture
async def net():
    """Proxies and clients of one test. Teardown stops the proxies first (a FIN reaches every
    proxied client, blackholed or not, so none waits out a close handshake), then closes the
    clients."""

    class Net:
        def __init__(self) -> None:
            self.proxies: list[FaultProxy] = []
            self.clients: list[E2EClient] = []

        async def proxy(self, node) -> FaultProxy:
            proxy = FaultProxy(upstream=("127.0.0.1", node.port))
            self.proxies.append(proxy)
            return await proxy.start()

        def client(self, token: str, client_id: str | None = None) -> E2EClient:
            client = E2EClient(token, client_id)
            self.clients.append(client)
            return client

    state = Net()
    yield state
    for proxy in state.proxies:
        await proxy.stop()
    for client in state.clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)


@pytest.fixture
async def redis_client():
    client = aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


# --- helpers ----------------------------------------------------------------------------


async def _ping(client: E2EClient, ping_id: int) -> None:
    """A round trip: the server has read everything the client sent before it."""
    await client.ws.send(json.dumps({"type": "ping", "id": ping_id}))
    assert await client.until(lambda f: f["type"] == "pong") == {"type": "pong", "id": ping_id}


def _row(client: E2EClient, node_id: str) -> Connection | None:
    """The newest row of this client on this node."""
    return Connection.objects.filter(client_id=client.client_id, node=node_id).order_by("-opened_at").first()


async def _open_row(client: E2EClient, node_id: str) -> Connection:
    row = await database_sync_to_async(_row)(client, node_id)
    assert row is not None and row.closed_at is None, row
    return row


async def _wait_closed(row: Connection, timeout: float, what: str) -> Connection:
    def closed():
        fresh = Connection.objects.get(pk=row.pk)
        return fresh if fresh.closed_at is not None else None

    return await eventually(database_sync_to_async(closed), timeout=timeout, interval=0.02, what=what)


async def _behind_proxy(net, node, token: str) -> tuple[FaultProxy, E2EClient, Connection]:
    """A client on the node through a proxy of its own, once the node has read what it sent;
    with the socket's open row."""
    proxy = await net.proxy(node)
    client = net.client(token)
    await client.connect(proxy.url())
    await _ping(client, 1)
    return proxy, client, await _open_row(client, node.node_id)


def _slot_key(user) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:slots:user:{user.pk}"


def _slot(client) -> str:
    return ratelimit.slot_member(client.client_id, client.conversation_id)


async def _feed_listeners(redis: aioredis.Redis, conversation_id: str) -> list[str]:
    """Who listens to the conversation's live feed, as Redis sees it.

    Channel-layer fan-out: the sockets' channel names in the layer group (channels_redis'
    `_group_key` is f"{prefix}:group:{group}"). Pub/sub fan-out (one subscription per node
    for all its sockets of the conversation): one entry per subscribed node connection."""
    if hasattr(fanout, "group_name"):
        prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        return await redis.zrange(f"{prefix}:group:{fanout.group_name(conversation_id)}", 0, -1)
    [(_, subscribers)] = await redis.pubsub_numsub(fanout.channel_for(conversation_id))
    return ["node-subscription"] * subscribers


async def _assert_feed(redis: aioredis.Redis, conversation_id: str, only: Connection | None) -> None:
    """The conversation's feed has exactly this socket (or none) listening. Polled: a pub/sub
    unsubscribe may reach Redis a moment after the row was closed."""
    if only is None:
        expected = []
    elif hasattr(fanout, "group_name"):
        expected = [only.channel_name]
    else:
        expected = ["node-subscription"]

    async def matches():
        return await _feed_listeners(redis, conversation_id) == expected

    await eventually(matches, timeout=2, what=f"feed listeners == {expected}")


def _open_rows(node_id: str) -> set[str]:
    rows = Connection.objects.filter(node=node_id, closed_at__isnull=True)
    return {str(pk) for pk in rows.values_list("pk", flat=True)}


async def _assert_gone(client: E2EClient) -> None:
    """The proxied client's own socket is dead too (what it sees is not under test)."""
    with pytest.raises(websockets.ConnectionClosed):
        await client.recv(timeout=5)


async def _assert_lost_at_once(row: Connection, client: E2EClient, fault: str, since: float) -> None:
    """After an RST or a FIN the node sees the socket end at once: its row is closed as
    `connection_lost` (1006) within 2 s of `since`, and the proxied client's socket is dead."""
    closed = await _wait_closed(row, 2, f"the row closed after the {fault}")
    elapsed = closed.closed_at.timestamp() - since
    print(f"\n{fault} -> row closed: {elapsed:.3f}s ({closed.close_code} {closed.close_reason})")
    assert (closed.close_code, closed.close_reason) == (1006, "connection_lost")
    assert elapsed < 2
    await _assert_gone(client)


async def _refused_for_slots(url: str, token: str) -> int:
    """A connect by another client of the user, expected to be refused for lack of a slot."""
    async with websockets.connect(url, open_timeout=10) as ws:
        await ws.send(
            json.dumps(
                {"type": "connect", "token": token, "conversation_id": None, "last_seq": None, "client_id": "intruder"}
            )
        )
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (error["type"], error["code"]) == ("error", "rate_limited"), error
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        return closed.value.rcvd.code


# --- the tests ----------------------------------------------------------------------------


async def test_blackholed_client_is_closed_by_the_app_heartbeat(daphne_cluster, net, redis_client, user):
    node = daphne_cluster("zombie-hb", **APP_HEARTBEAT_ENV)
    token = await database_sync_to_async(access_for)(user)
    proxy = await net.proxy(node)
    client = net.client(token)
    ready = await client.connect(proxy.url())
    assert ready["heartbeat_interval_ms"] == 1000
    await _ping(client, 1)
    row = await _open_row(client, node.node_id)
    slot_key = _slot_key(user)
    assert await redis_client.zscore(slot_key, _slot(client)) is not None
    await _assert_feed(redis_client, client.conversation_id, row)

    proxy.blackhole()
    blackholed_at = time.time()
    closed = await _wait_closed(row, HEARTBEAT_TIMEOUT + 3, "the blackholed row closed by the heartbeat")
    elapsed = closed.closed_at.timestamp() - blackholed_at
    print(
        f"\nblackhole -> row closed by the app heartbeat: {elapsed:.3f}s "
        f"(timeout {HEARTBEAT_TIMEOUT:g}s; {closed.close_code} {closed.close_reason})"
    )
    assert (closed.close_code, closed.close_reason) == (4408, "heartbeat_timeout")
    assert HEARTBEAT_TIMEOUT - 0.3 <= elapsed <= HEARTBEAT_TIMEOUT + 1.5
    assert proxy.dropped_down > 0  # the server's error frame and close went into the hole
    assert len(proxy.connections) == 1  # half-open: the proxy let no FIN or RST through

    # Everything the dead socket held is released (cleanup does this before closing the row).
    assert await redis_client.zscore(slot_key, _slot(client)) is None
    await _assert_feed(redis_client, client.conversation_id, None)

    # The same client, back through a healthy path, resumes at once; nothing is replaced.
    back = net.client(token, client.client_id)
    back.conversation_id, back.applied = client.conversation_id, dict(client.applied)
    again = await back.connect(node.ws_url)
    assert again["resumed"] is True and again["conversation_id"] == client.conversation_id
    await _ping(back, 2)
    assert await redis_client.zrange(slot_key, 0, -1) == [_slot(client)]
    new_row = await _open_row(back, node.node_id)
    await _assert_feed(redis_client, client.conversation_id, new_row)
    old = await database_sync_to_async(Connection.objects.get)(pk=row.pk)
    assert (old.close_code, old.close_reason) == (4408, "heartbeat_timeout")


async def test_blackholed_client_is_dropped_by_daphne_protocol_pings(daphne_cluster, net, redis_client, user):
    node = daphne_cluster("zombie-ping", **PROTOCOL_PING_ENV)
    token = await database_sync_to_async(access_for)(user)
    proxy, client, row = await _behind_proxy(net, node, token)

    proxy.blackhole()
    blackholed_at = time.time()
    closed = await _wait_closed(row, 8, "the blackholed row closed after daphne's ping timeout")
    elapsed = closed.closed_at.timestamp() - blackholed_at
    print(
        f"\nblackhole -> row closed by daphne's protocol ping: {elapsed:.3f}s "
        f"(ping 1s, timeout 2s; {closed.close_code} {closed.close_reason})"
    )
    # Daphne aborts the TCP connection without a close handshake: 1006, connection_lost.
    assert (closed.close_code, closed.close_reason) == (1006, "connection_lost")
    assert elapsed < 6
    assert await redis_client.zscore(_slot_key(user), _slot(client)) is None
    await _assert_feed(redis_client, client.conversation_id, None)


async def test_reset_client_is_closed_at_once_and_resumes_without_loss(daphne_cluster, net, user):
    node = daphne_cluster("zombie-rst", **PATIENT_ENV)
    token = await database_sync_to_async(access_for)(user)
    proxy = await net.proxy(node)
    client = net.client(token)
    await client.connect(proxy.url())
    await client.message("before the reset")
    await client.until(lambda f: f["type"] == "agent.completed")
    seen_before = client.last_seq
    row = await _open_row(client, node.node_id)

    assert proxy.reset() == 1
    await _assert_lost_at_once(row, client, "RST", since=time.time())

    # While it is away, another device of the same user talks in the same conversation.
    other = net.client(token)
    other.conversation_id = client.conversation_id
    await other.connect(node.ws_url)
    await other.message("while you were away")
    away_text = "You said: while you were away"
    # `other` is new to the conversation, so it is sent the whole log first.
    missed_done = await other.until(lambda f: f["type"] == "agent.completed" and f["message"]["text"] == away_text)
    last_seq = await database_sync_to_async(lambda: Conversation.objects.get(pk=client.conversation_id).last_seq)()
    assert last_seq == missed_done["seq"] > seen_before

    ready = await client.connect(proxy.url())  # a fresh proxied connection, same client
    assert ready["resumed"] is True and ready["replay_count"] == last_seq - seen_before
    done = await client.until(lambda f: f["type"] == "agent.completed" and f["seq"] == last_seq)
    assert done["message"]["text"] == away_text
    await _ping(client, 1)  # anything sent twice would have arrived (and failed recv) by now
    # E2EClient.recv already refused gaps and duplicates; the log is there exactly once.
    assert sorted(client.applied) == list(range(1, last_seq + 1))
    missed = [client.applied[s]["type"] for s in range(seen_before + 1, last_seq + 1)]
    assert missed[0] == "message.created" and missed[1] == "agent.started" and missed[-1] == "agent.completed"
    assert client.applied[seen_before + 1]["message"]["text"] == "while you were away"
    old = await database_sync_to_async(Connection.objects.get)(pk=row.pk)
    assert (old.close_code, old.close_reason) == (1006, "connection_lost")  # not overwritten by the resume


async def test_cut_client_is_closed_and_nothing_else_is_left_open(daphne_cluster, net, redis_client, user):
    node = daphne_cluster("zombie-fin", **PATIENT_ENV)
    token = await database_sync_to_async(access_for)(user)
    live = net.client(token)
    await live.connect(node.ws_url)
    proxy, client, row = await _behind_proxy(net, node, token)
    live_row = await _open_row(live, node.node_id)

    assert proxy.cut() == 1
    await _assert_lost_at_once(row, client, "FIN", since=time.time())

    assert await database_sync_to_async(_open_rows)(node.node_id) == {str(live_row.pk)}
    await _ping(live, 1)
    assert await redis_client.zrange(_slot_key(user), 0, -1) == [_slot(live)]
    await _assert_feed(redis_client, client.conversation_id, None)


async def test_latency_neither_breaks_the_conversation_nor_trips_the_heartbeat(daphne_cluster, net, user):
    node = daphne_cluster("zombie-slow", **APP_HEARTBEAT_ENV)
    token = await database_sync_to_async(access_for)(user)
    proxy = await net.proxy(node)
    proxy.set_latency(0.3)  # each way: 0.6 s round trip
    client = net.client(token)
    await client.connect(proxy.url())
    await client.message("over a slow link")
    done = await client.until(lambda f: f["type"] == "agent.completed")
    assert done["message"]["text"] == "You said: over a slow link"
    row = await _open_row(client, node.node_id)

    async def pinger(count: int) -> None:
        for i in range(count):
            await client.ws.send(json.dumps({"type": "ping", "id": i}))
            await asyncio.sleep(0.5)  # pacing, not synchronisation

    started = time.monotonic()
    pings = asyncio.create_task(pinger(6))
    try:
        pongs = [await client.until(lambda f: f["type"] == "pong", timeout=5) for _ in range(6)]
    finally:
        await pings
    lasted = time.monotonic() - started
    assert [p["id"] for p in pongs] == list(range(6))
    assert lasted > HEARTBEAT_TIMEOUT + 0.5  # the watchdog was armed for the whole span
    fresh = await database_sync_to_async(Connection.objects.get)(pk=row.pk)
    assert fresh.closed_at is None

    # Control: once the pings stop, the same 2 s watchdog does close it.
    quiet_from = time.time()
    error = await client.until(lambda f: f["type"] == "error", timeout=HEARTBEAT_TIMEOUT + 3)
    assert error["code"] == "heartbeat_timeout"
    with pytest.raises(websockets.ConnectionClosed) as ended:
        await client.recv(timeout=5)
    assert ended.value.rcvd is not None and ended.value.rcvd.code == 4408
    closed = await _wait_closed(row, 2, "the row closed once the pings stopped")
    print(
        f"\nlatency 0.3s: {len(pongs)} pongs over {lasted:.2f}s, socket open; "
        f"silent -> closed {closed.closed_at.timestamp() - quiet_from:.3f}s after the last pong"
    )
    assert (closed.close_code, closed.close_reason) == (4408, "heartbeat_timeout")


async def test_zombie_replaced_by_its_own_reconnect_keeps_the_slot(daphne_cluster, net, redis_client, user):
    """The usual end of a zombie: its client comes back (same client_id) before any timeout.
    The replaced zombie must not release the slot, which now belongs to the new socket."""
    env = {**PATIENT_ENV, "REALTIME_MAX_CONNECTIONS_PER_USER": 1}
    node = daphne_cluster("zombie-replaced", **env)
    token = await database_sync_to_async(access_for)(user)
    proxy, client, row = await _behind_proxy(net, node, token)
    slot_key = _slot_key(user)

    proxy.blackhole()
    back = net.client(token, client.client_id)
    back.conversation_id = client.conversation_id
    ready = await back.connect(node.ws_url)
    assert ready["resumed"] is True
    closed = await _wait_closed(row, 2, "the zombie replaced by its own reconnect")
    assert (closed.close_code, closed.close_reason) == (4409, "replaced")
    await _ping(back, 2)
    new_row = await _open_row(back, node.node_id)
    assert await database_sync_to_async(_open_rows)(node.node_id) == {str(new_row.pk)}

    # The zombie's cleanup has run (its row is closed after its slot is dealt with).
    assert await redis_client.zrange(slot_key, 0, -1) == [_slot(client)]
    await _assert_feed(redis_client, client.conversation_id, new_row)
    assert await _refused_for_slots(node.ws_url, token) == 4429  # the limit of 1 is still in force

    await back.close()
    back_closed = await _wait_closed(new_row, 2, "the new socket closed by its client")
    assert (back_closed.close_code, back_closed.close_reason) == (1000, "client_closed")
    assert await redis_client.zcard(slot_key) == 0
