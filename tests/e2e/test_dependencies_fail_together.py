"""Everything at once (issue 25, item 5): mid-answer on two nodes, PostgreSQL and Redis are
partitioned away together, a client's own path goes silent (a zombie), and one node is
SIGKILLed while Redis is still away; PostgreSQL comes back first, Redis after it.

Every dependency sits behind tests.support.netproxy.FaultProxy, which blackholes it (no FIN, no
RST): the nodes' PostgreSQL (the test database), the nodes' Redis, and one client's path to
the node that dies. At the end every client's log is exactly the database's, every answer is
whole and there is one run per message: the killed node's runs were taken over from their
committed text once the database answered, its clients resumed on the other node once Redis
answered, and the survivor logged no traceback.

The single-failure versions: tests/e2e/test_database_outage.py, tests/e2e/test_redis_partition.py,
tests/e2e/test_zombie_dropped_at_once.py, tests/e2e/test_node_crash_takeover.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from sessions_app.models import AgentRun, Connection
from tests.support import daphne_nodes
from tests.support.netproxy import FaultProxy
from tests.support.sdk_chat import (
    FAST_NODE_ENV,
    ChatSession,
    check_conversation,
    expected_answers,
    streaming_on_both,
    user_tokens,
    wait_ready,
)
from tests.support.talkers import Talkers, sessions_across
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

KILL_AFTER = 2.0  # into the partition: the node dies while Redis (and PostgreSQL) are away
POSTGRES_BACK_AFTER = 12.0
REDIS_BACK_AFTER = 20.0
CLIENTS = 4
STUCK_DEADLINE = 60.0


def _host_port(url: str) -> tuple[str, int]:
    hostport = url.split("@", 1)[-1].split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.partition(":")
    return host, int(port)


async def test_a_node_dies_while_postgres_and_redis_are_partitioned_and_nothing_is_lost(daphne_cluster):
    db_url, redis_url = daphne_nodes.test_database_url(), settings.REDIS_URL
    postgres = await FaultProxy(upstream=_host_port(db_url)).start()
    redis = await FaultProxy(upstream=_host_port(redis_url)).start()
    proxies = [postgres, redis]
    env = {
        **FAST_NODE_ENV,
        "DATABASE_URL": db_url.replace(f":{_host_port(db_url)[1]}/", f":{postgres.port}/"),
        "REDIS_URL": redis_url.replace(f":{_host_port(redis_url)[1]}/", f":{redis.port}/"),
        "REALTIME_FANOUT_PING_INTERVAL": 2,
    }
    a = daphne_cluster("all-a", **env)
    b = daphne_cluster("all-b", **env)
    zombie_path = await FaultProxy(upstream=("127.0.0.1", a.port)).start()
    proxies.append(zombie_path)
    try:
        await wait_ready(a)
        await wait_ready(b)
        tokens = await database_sync_to_async(user_tokens)(CLIENTS + 1, "together")
        sessions = sessions_across(a, b, tokens[:CLIENTS], "t")
        # Its own heartbeat finds its silent path (a ping a second, dead after 3 s without a frame).
        zombie = ChatSession.open([zombie_path.url(), b.ws_url], tokens[CLIENTS], name="zombie",
                                  heartbeat_interval=1, heartbeat_timeout=3)
        sessions.append(zombie)
        async with Talkers(sessions, ("count 80",), min_messages=2, timeout=STUCK_DEADLINE) as talkers:
            await streaming_on_both(a, b)
            await zombie.wait_for(lambda: zombie.current_node() == a.node_id, 10, "the zombie on the node that dies")

            cut = time.monotonic()
            for proxy in proxies:
                proxy.blackhole()
            await asyncio.sleep(KILL_AFTER)  # the timeline of the failures, not a wait
            a.kill()
            await asyncio.sleep(max(0.0, cut + POSTGRES_BACK_AFTER - time.monotonic()))
            postgres.clear_faults()
            await asyncio.sleep(max(0.0, cut + REDIS_BACK_AFTER - time.monotonic()))
            redis.clear_faults()
            back = time.monotonic()
            await wait_ready(b)

            counts = [len(s.sent) for s in sessions]
            await asyncio.gather(*(
                s.wait_for(lambda s=s, n=n: s.completed_count() >= n + 1, STUCK_DEADLINE, "an answer after it all")
                for s, n in zip(sessions, counts, strict=True)
            ))
            recovered = time.monotonic() - back
            await talkers.finish(STUCK_DEADLINE)
            await asyncio.gather(*(s.close() for s in sessions))

            # The dead node's rows are reaped (or were replaced by their clients' resumes), the
            # survivor's closed by their clients.
            def open_rows():
                return list(Connection.objects.filter(closed_at__isnull=True).values_list("node", "client_id"))

            async def none_open():
                return not await database_sync_to_async(open_rows)()

            await eventually(none_open, timeout=15, what="every connection row closed")
            survivor_log = Path(b.log.name).read_text(errors="replace")
    finally:
        for proxy in proxies:
            await proxy.stop()

    def takeovers() -> list[tuple[str, int]]:
        return list(AgentRun.objects.filter(claims__gte=2).values_list("node", "claims"))

    taken_over = await database_sync_to_async(takeovers)()
    print(
        f"\nnode killed {KILL_AFTER:g}s into the partition; PostgreSQL back at {POSTGRES_BACK_AFTER:g}s, Redis at "
        f"{REDIS_BACK_AFTER:g}s; every client answered again {recovered:.2f}s after Redis was back; "
        f"{len(taken_over)} runs claimed again; zombie lost its socket {len(zombie.losses())} times"
    )
    for s in sessions:
        await database_sync_to_async(check_conversation)(s, expected_answers(s))
        assert s.client.error is None, f"{s.name}: {s.client.error!r}"
    assert taken_over and all(node == b.node_id for node, _ in taken_over), taken_over
    assert zombie.losses(), "the zombie's socket was never found dead"
    assert b.proc.poll() is None
    assert "Traceback" not in survivor_log, survivor_log[-3000:]
