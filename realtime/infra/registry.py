"""The node registry in Redis: which nodes are alive, where clients reach them, and which drain.

Every node keeps `<prefix>:node:<id>` (its public URL and whether it drains) alive with a TTL
and its heartbeat time in the `<prefix>:nodes` sorted set (realtime/node/liveness.py announces
and reaps). Clients discover nodes through `GET /api/realtime/nodes/`, which reads `live_nodes`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from django.conf import settings

from realtime.infra.redis_client import get_redis, key


@dataclass(frozen=True)
class NodeInfo:
    node: str
    ws_url: str
    draining: bool
    heartbeat_at: float


async def announce(node_id: str, ws_url: str, draining: bool = False) -> None:
    """Registers (or refreshes) this node; called every TTL/3 while it runs."""
    now = time.time()
    body = json.dumps({"node": node_id, "ws_url": ws_url, "draining": draining, "heartbeat_at": now})
    ttl_ms = int(settings.REALTIME_NODE_TTL * 1000)
    redis = get_redis()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key("node", node_id), body, px=ttl_ms)
        pipe.zadd(key("nodes"), {node_id: now})
        # When this registry came to be: after a Redis restart (or flush) it starts empty
        # again, and the reaper must give every live node a TTL to announce itself before
        # absence from it means anything.
        pipe.set(key("nodes", "since"), now, nx=True)
        await pipe.execute()


async def withdraw(node_id: str) -> None:
    """Leaves discovery at once (graceful shutdown); the rows are closed by the node itself."""
    redis = get_redis()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key("node", node_id))
        pipe.zrem(key("nodes"), node_id)
        await pipe.execute()


async def live_nodes(include_draining: bool = False) -> list[NodeInfo]:
    redis = get_redis()
    ids = await redis.zrange(key("nodes"), 0, -1)
    if not ids:
        return []
    bodies = await redis.mget([key("node", i) for i in ids])
    nodes = []
    for body in bodies:
        if body is None:
            continue
        info = json.loads(body)
        if info.get("draining") and not include_draining:
            continue
        nodes.append(NodeInfo(info["node"], info["ws_url"], bool(info.get("draining")), float(info["heartbeat_at"])))
    return sorted(nodes, key=lambda n: n.node)
