"""What the end-to-end tool and approval tests share: nodes that act against a test sink, started
together, a client that follows the run to a surviving node, and the database's view of a run."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from channels.db import database_sync_to_async

from sessions_app.models import AgentRun, ToolCall
from tests.support.daphne_nodes import DaphneNode
from tests.support.sdk_chat import FAST_NODE_ENV
from tests.support.ws_e2e import E2EClient

# FAST_NODE_ENV (2 s leases, 0.3 s sweeps, 3 s node TTL) without the demo's pace between calls:
# the tests hold the exact moments they need with gates, not with delays.
TOOL_NODE_ENV = {**FAST_NODE_ENV, "REALTIME_DEMO_AGENT_DELAY_MS": 0}


def node_env(sink: Any = None, **extra: Any) -> dict[str, Any]:
    """Node settings: demo.effect and demo.transfer POST to `sink` (an EffectSink), or, without
    one, demo.effect is `local`."""
    env = dict(TOOL_NODE_ENV)
    if sink is not None:
        env["REALTIME_DEMO_EFFECT_URL"] = sink.url
    return {**env, **extra}


async def start_nodes(daphne_cluster: Any, names: list[str], env: dict[str, Any]) -> list[DaphneNode]:
    """Starts the nodes at the same time (each start imports Django: seconds on a busy box)."""
    return list(await asyncio.gather(*(asyncio.to_thread(daphne_cluster, name, **env) for name in names)))


class ToolClient(E2EClient):
    """A raw protocol client that remembers its node, and answers approvals."""

    def __init__(self, token: str, client_id: str | None = None) -> None:
        super().__init__(token, client_id)
        self.node: DaphneNode | None = None

    async def open_on(self, node: DaphneNode) -> dict:
        """Connects (resuming after `last_seq` when it was connected before) through `node`.
        A previous socket is dropped without a closing handshake, which a dead or frozen node
        would never answer."""
        if self.ws is not None:
            self.ws.transport.abort()
        self.node = node
        return await self.connect(node.ws_url)

    async def follow(self, survivor: DaphneNode) -> None:
        """After a node was killed: resumes on `survivor` if this client was on another node."""
        if self.node is not survivor:
            await self.open_on(survivor)

    async def respond(self, call_id: str, decision: str) -> None:
        await self.ws.send(json.dumps({"type": "approval.respond", "call_id": call_id, "decision": decision}))

    async def event(self, kind: str, timeout: float = 30, **fields: Any) -> dict:
        """The next sequenced frame of `kind` whose fields include `fields`."""
        return await self.until(
            lambda f: f["type"] == kind and all(f.get(k) == v for k, v in fields.items()), timeout=timeout)

    def frames(self) -> list[dict]:
        """Every sequenced frame applied, in seq order."""
        return [self.applied[seq] for seq in sorted(self.applied)]


@database_sync_to_async
def run_row(run_id: str) -> AgentRun:
    return AgentRun.objects.get(pk=run_id)


@database_sync_to_async
def calls_of(run_id: str) -> list[ToolCall]:
    return list(ToolCall.objects.filter(run_id=run_id).order_by("step", "retry"))


def node_named(nodes: list[DaphneNode], node_id: str) -> DaphneNode:
    return next(n for n in nodes if n.node_id == node_id)
