"""Node liveness and discovery in Redis.

Every node keeps `<prefix>:node:<id>` (its public URL and whether it drains) alive with a
TTL and its heartbeat time in the `<prefix>:nodes` sorted set. A node that stops refreshing
(SIGKILL, machine loss) is noticed by any live node within REALTIME_NODE_TTL plus one reap
interval: its open connection rows are closed and its runs' leases expired, so the runs are
taken over at once instead of after their own lease.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings

from realtime.infra import ratelimit
from realtime.infra.db import db
from realtime.infra.redis_client import get_redis, key
from sessions_app import services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReapResult:
    dead_nodes: list[str]
    connections_closed: int
    runs_released: int
    slots_released: int


async def reap_dead_nodes(self_node: str | None = None) -> ReapResult:
    """Closes what nodes that stopped heartbeating left behind. Idempotent; any node may run it."""
    redis = get_redis()
    cutoff = time.time() - settings.REALTIME_NODE_TTL
    stale = [n for n in await redis.zrangebyscore(key("nodes"), "-inf", cutoff) if n != self_node]
    live = set(await redis.zrange(key("nodes"), 0, -1)) - set(stale)
    ratelimit.note_live_nodes(len(live))  # the share a node takes when limits cannot be checked
    # Rows of nodes that never registered (or whose entry is long gone) count as dead too,
    # once they are older than the TTL, so that a node starting up is not reaped. Not while
    # the registry itself is younger than the TTL: after Redis restarted empty, live nodes
    # are missing from it until their next heartbeat, and reaping them would close the rows
    # of sockets that are still open (they would then be told 4409 at their next resync).
    since = await redis.get(key("nodes", "since"))
    settled = since is not None and time.time() - float(since) >= settings.REALTIME_NODE_TTL
    orphans = await db(services.open_connection_nodes_not_in)(live, settings.REALTIME_NODE_TTL) if settled else []
    dead = sorted(set(stale) | set(orphans))
    closed = released = slots = 0
    for node in dead:
        gone = await db(services.release_node)(node)
        closed += gone.connections_closed
        released += gone.runs_released
        slots += len(gone.orphan_slots)
        # Without this the dead node's slots would count against their users until their
        # lease ran out (a minute and more by default).
        for user, client, conversation, channel in gone.orphan_slots:
            await ratelimit.release_slot(f"user:{user}", ratelimit.slot_member(client, conversation), owner=channel)
        log.warning(
            "node %s is gone: closed %s connections, released %s runs and %s slots",
            node, gone.connections_closed, gone.runs_released, len(gone.orphan_slots),
        )
    if stale:
        await redis.zrem(key("nodes"), *stale)
    return ReapResult(dead_nodes=dead, connections_closed=closed, runs_released=released, slots_released=slots)
