"""Redis partitioned away for 30 s, mid-answer on two nodes (issue 25, item 4).

Not a restart (tests/e2e/test_redis_restart.py): a restart closes every TCP connection and the
nodes see it at once. Here both nodes reach Redis through tests.support.netproxy.FaultProxy,
which blackholes it: no FIN, no RST, commands and replies vanish. SDK clients keep talking
throughout. What must hold:

- each node's fan-out subscription notices the silence (it pings a quiet Redis) and says so in
  one log line, then one more when it is back;
- the limits hold as documented: a message sent during the partition is refused
  (`unavailable`, runs per user cannot be checked) and stored once the SDK sends it again
  after Redis is back;
- once Redis answers again, every socket catches up from the log at once; the sockets' resync
  is set to a minute here, so it cannot be what delivers what was published into the void;
- no live node is taken for dead when the stale registry is read again (no `node_lost` row);
- nothing is lost or duplicated: every client's log is the database's, one run per message.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from sessions_app.models import Connection, Conversation, Message
from tests.support.netproxy import FaultProxy
from tests.support.sdk_chat import (
    FAST_NODE_ENV,
    check_conversation,
    expected_answers,
    readyz,
    streaming_on_both,
    user_tokens,
    wait_ready,
)
from tests.support.talkers import Talkers, sessions_across
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

OUTAGE = 30.0
CLIENTS = 4
PING_INTERVAL = 10.0  # REALTIME_FANOUT_PING_INTERVAL, its default
REDIS_TIMEOUT = 2.0  # REALTIME_REDIS_TIMEOUT, its default
# From Redis answering again to every socket caught up: the reader's reconnect backoff (at
# most 2 s), a connect, the log reads; far below the minute-long resync.
CATCH_UP_DEADLINE = 10.0
STUCK_DEADLINE = 60.0


def _redis_address() -> tuple[str, int, str]:
    url = settings.REDIS_URL.removeprefix("redis://")
    hostport, _, db = url.partition("/")
    host, _, port = hostport.partition(":")
    return host, int(port or 6379), db or "0"


def _logged_at(line: str) -> float:
    """The wall-clock time of a node's plain log line ("2026-12-04 23:34:39,718 WARNING ...")."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _log(node) -> str:
    node.log.flush()
    return Path(node.log.name).read_text(errors="replace")


async def test_a_redis_partition_mid_answer_loses_nothing_and_the_sockets_catch_up(daphne_cluster):
    host, port, db = _redis_address()
    proxy = await FaultProxy(upstream=(host, port)).start()
    env = {
        **FAST_NODE_ENV,
        "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/{db}",
        "REALTIME_RESYNC_INTERVAL": 60,
        "REALTIME_FANOUT_PING_INTERVAL": PING_INTERVAL,
        "REALTIME_REDIS_TIMEOUT": REDIS_TIMEOUT,
    }
    a = daphne_cluster("part-a", **env)
    b = daphne_cluster("part-b", **env)
    try:
        await wait_ready(a)
        await wait_ready(b)
        tokens = await database_sync_to_async(user_tokens)(CLIENTS, "partition")
        sessions = sessions_across(a, b, tokens, "p")
        async with Talkers(sessions, ("count 80",), min_messages=2, timeout=STUCK_DEADLINE) as talkers:
            await streaming_on_both(a, b)

            proxy.blackhole()
            cut, cut_wall = time.monotonic(), time.time()

            async def both_unready():
                return [await readyz(a.port, timeout=3), await readyz(b.port, timeout=3)] == [503, 503]

            await eventually(both_unready, timeout=10, what="both nodes report not ready")

            async def both_noticed():
                return all("fan-out subscription lost" in _log(n) for n in (a, b))

            await eventually(both_noticed, timeout=PING_INTERVAL + REDIS_TIMEOUT + 5, what="both subscriptions lost")
            noticed = time.monotonic() - cut
            # The limits as documented for a Redis that cannot be asked (docs/protocol.md, Limits):
            # runs per user fail closed, so a message sent now gets `unavailable` and is not stored;
            # the SDK sends it again after `retry_after_ms` until it is, once Redis answers.
            extra = [await s.send("count 5") for s in sessions]
            await asyncio.sleep(max(0.0, cut + OUTAGE - time.monotonic()))  # the outage itself, not a wait

            def stored(client_msg_ids: list[str]) -> int:
                return Message.objects.filter(client_msg_id__in=client_msg_ids).count()

            assert await database_sync_to_async(stored)(extra) == 0
            proxy.clear_faults()
            back = time.monotonic()

            # What was committed while Redis was away reaches every open socket from the log.
            def committed() -> dict[str, int]:
                ids = [s.client.conversation_id for s in sessions]
                return dict(Conversation.objects.filter(pk__in=ids).values_list("pk", "last_seq"))

            at_back = {str(k): v for k, v in (await database_sync_to_async(committed)()).items()}
            await asyncio.gather(*(
                s.wait_for(lambda s=s: (s.seqs[-1] if s.seqs else 0) >= at_back[str(s.client.conversation_id)],
                           CATCH_UP_DEADLINE, "what was committed during the partition")
                for s in sessions
            ))
            caught_up = time.monotonic() - back

            async def both_back():
                return all("fan-out subscription back" in _log(n) for n in (a, b))

            await eventually(both_back, timeout=5, what="both subscriptions back")
            await wait_ready(a)
            await wait_ready(b)

            counts = [len(s.sent) for s in sessions]
            await asyncio.gather(*(
                s.wait_for(lambda s=s, n=n: s.completed_count() >= n + 1, STUCK_DEADLINE,
                           "an answer after the partition")
                for s, n in zip(sessions, counts, strict=True)
            ))
            await talkers.finish(STUCK_DEADLINE)
            logs = {n.node_id: _log(n) for n in (a, b)}  # before the teardown cuts Redis off again
    finally:
        await proxy.stop()

    print(
        f"\nRedis blackholed {back - cut:.1f}s: noticed by both nodes after {noticed:.1f}s, every socket caught up "
        f"{caught_up:.2f}s after Redis answered again; "
        f"{sum(len(s.losses()) for s in sessions)} sockets lost"
    )
    for s in sessions:
        await database_sync_to_async(check_conversation)(s, expected_answers(s))
        assert s.client.error is None, f"{s.name}: {s.client.error!r}"

    # The outage in a few lines per node: Redis unreachable and back (the node's heartbeat),
    # the subscription lost and back; what failed before the heartbeat noticed, once at most
    # per second; no traceback.
    for node, text in logs.items():
        warnings = [line for line in text.splitlines()
                    if (" WARNING " in line or " ERROR " in line) and _logged_at(line) >= cut_wall - 0.01]
        print(f"{node}: {len(warnings)} warning lines: {[w.split(' ', 3)[-1][:100] for w in warnings]}")
        edges = [line.split(" WARNING ", 1)[-1].split(" (")[0].split(" after")[0] for line in warnings
                 if "unreachable" in line or "reachable again" in line or "fan-out subscription" in line]
        # Each starts before either ends (which of the two notices first, or ends first, varies).
        assert sorted(edges[:2]) == ["realtime.fanout.hub fan-out subscription lost",
                                     "realtime.infra.outage Redis unreachable"], (node, warnings)
        assert sorted(edges[2:]) == ["realtime.fanout.hub fan-out subscription back",
                                     "realtime.infra.outage Redis reachable again"], (node, warnings)
        assert len(warnings) <= 10, warnings
        assert "Traceback" not in text, text[-3000:]

    def rows_closed():
        return not Connection.objects.filter(closed_at__isnull=True).exists()

    await eventually(database_sync_to_async(rows_closed), timeout=10, what="every connection row closed")
    reasons = await database_sync_to_async(
        lambda: sorted(set(Connection.objects.values_list("close_code", "close_reason")))
    )()
    # No live node was taken for dead when the registry, stale after the partition, was read.
    assert set(reasons) <= {(1000, "client_closed"), (4012, "going_away")}, reasons
