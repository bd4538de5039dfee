"""Path 4 end to end: Redis dies under load and comes back empty.

Two daphne nodes share a private `redis-server` (no persistence) while SDK clients stream.
Redis is SIGKILLed, stays down for about 2 s and is started again on the same port with
nothing in it: no node registry, no rate-limit buckets, no slots, no subscriptions. The
nodes report not-ready meanwhile and recover by themselves (the pub/sub fan-out resubscribes
and its sockets catch up from the event log, the registry is rebuilt by the heartbeats).
Clients may be told to reconnect; at the end every client has every event exactly once,
every message was delivered once with one completed run, and nothing is stuck."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from channels.db import database_sync_to_async

from sessions_app.models import AgentRun, Connection
from tests.support.sdk_chat import (
    FAST_NODE_ENV,
    RedisServer,
    check_conversation,
    expected_answers,
    latency_summary,
    readyz,
    user_tokens,
    wait_ready,
)
from tests.support.talkers import Talkers, sessions_across
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NODE_ENV = {
    **FAST_NODE_ENV,
    # The sockets' periodic resync (default 10 s) is the safety net for fan-out lost while
    # Redis was away, and where a socket learns that its row was closed behind its back.
    "REALTIME_RESYNC_INTERVAL": 2,
}
CLIENTS = 6
OUTAGE = 2.0
STUCK_DEADLINE = 30.0


@pytest.fixture
def redis_server():
    server = RedisServer()
    yield server.start()
    server.kill()


async def test_redis_restart_under_load_recovers_without_loss(daphne_cluster, redis_server):
    env = {**NODE_ENV, "REDIS_URL": redis_server.url}
    a = daphne_cluster("redis-a", **env)
    b = daphne_cluster("redis-b", **env)
    await wait_ready(a)
    await wait_ready(b)
    tokens = await database_sync_to_async(user_tokens)(CLIENTS, "redis")
    sessions = sessions_across(a, b, tokens, "r")
    async with Talkers(sessions, ("count 60",), min_messages=3, timeout=STUCK_DEADLINE) as talkers:
        await talkers.all_answered_once()

        def streaming_runs():
            rows = AgentRun.objects.filter(status=AgentRun.Status.RUNNING, next_index__gte=3)
            return rows.count() >= CLIENTS - 2 and rows.count()

        # Redis dies while most of the clients' answers are being streamed.
        streaming = await eventually(database_sync_to_async(streaming_runs), timeout=10, interval=0.02, what="streams")

        redis_server.kill()
        killed = time.monotonic()

        async def both_unready():
            return [await readyz(a.port, timeout=2), await readyz(b.port, timeout=2)] == [503, 503]

        await eventually(both_unready, timeout=10, what="both nodes report not ready")
        await asyncio.sleep(max(0.0, killed + OUTAGE - time.monotonic()))  # the outage itself, not a wait
        await asyncio.to_thread(redis_server.start)  # same port, empty
        back = time.monotonic()
        await wait_ready(a)
        await wait_ready(b)
        ready = time.monotonic()

        # The registry is rebuilt by the nodes' heartbeats: discovery lists both again.
        async def both_discovered():
            async with httpx.AsyncClient(timeout=2) as http:
                response = await http.get(
                    f"http://127.0.0.1:{a.port}/api/realtime/nodes/", headers={"Authorization": f"Bearer {tokens[0]}"}
                )
            listed = [n["node"] for n in response.json()["nodes"]] if response.status_code == 200 else None
            return listed == [a.node_id, b.node_id]

        await eventually(both_discovered, timeout=10, what="both nodes back in discovery")

        # Conversations go on after the outage; then every client finishes.
        counts = [len(s.sent) for s in sessions]
        await asyncio.gather(
            *(s.wait_for(lambda s=s, n=n: s.completed_count() >= n + 1, STUCK_DEADLINE, "an answer after Redis")
              for s, n in zip(sessions, counts, strict=True))
        )
        await talkers.finish(STUCK_DEADLINE)
        finished = time.monotonic()

    # Nothing stuck: every run finished, none is left queued or running.
    statuses = await database_sync_to_async(lambda: sorted(set(AgentRun.objects.values_list("status", flat=True))))()
    assert statuses == ["completed"], statuses
    assert finished - back < STUCK_DEADLINE
    latencies = [lat for s in sessions for lat in s.client.resume_latencies]
    losses = [e for s in sessions for _, e in s.losses()]
    print(
        f"\n{streaming} runs streaming when Redis was killed; Redis down {back - killed:.2f}s, nodes ready "
        f"{ready - back:.2f}s after it was back, all clients done {finished - back:.2f}s after; "
        f"{len(losses)} sockets lost ({sorted({(e.code, e.error_code) for e in losses}, key=str)}); "
        f"resume latency {latency_summary(latencies)}"
    )
    for s in sessions:
        result = await database_sync_to_async(check_conversation)(s, expected_answers(s))
        assert result.messages >= 3
        assert s.client.error is None, f"{s.name}: {s.client.error!r}"
        assert len(s.client.resume_latencies) == len(s.losses())
        # A socket may be told to reconnect (4012); none may crash (1011) or be dropped.
        assert all(e.code == 4012 for _, e in s.losses()), f"{s.name}: {s.losses()}"

    def rows_closed():
        return not Connection.objects.filter(closed_at__isnull=True).exists()

    await eventually(database_sync_to_async(rows_closed), timeout=10, what="every connection row closed")
    reasons = await database_sync_to_async(
        lambda: sorted(set(Connection.objects.values_list("close_code", "close_reason")))
    )()
    print(f"connection rows closed as: {reasons}")
    # No live node was taken for dead (1006 node_lost) once the registry came back empty.
    assert set(reasons) <= {(1000, "client_closed"), (4012, "going_away")}, reasons
