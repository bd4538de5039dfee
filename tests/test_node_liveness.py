"""Node liveness: a node that dies without cleaning up is noticed by a live node, which
closes its connection rows and releases its runs within the configured bound."""

import time

import pytest
from channels.db import database_sync_to_async

from realtime import liveness
from sessions_app.models import AgentRun, Connection
from tests.support.waiting import eventually
from tests.support.ws import WSClient, run_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def short_ttl(settings):
    settings.REALTIME_NODE_TTL = 1.0
    settings.REALTIME_NODE_REAP_INTERVAL = 0.2
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 20


async def test_discovery_lists_live_nodes_and_forgets_stopped_ones(cluster):
    a, _ = cluster("node-a", ws_url="ws://a.example/ws/v1/")
    b, _ = cluster("node-b", ws_url="ws://b.example/ws/v1/")
    a.ensure_started()
    b.ensure_started()

    async def both_listed():
        return [n.node for n in await liveness.live_nodes()] == ["node-a", "node-b"]

    await eventually(both_listed, timeout=5, what="both nodes registered")
    b.draining = True
    await eventually(lambda: _names_are(["node-a"]), timeout=5, what="draining node hidden")
    assert [n.node for n in await liveness.live_nodes(include_draining=True)] == ["node-a", "node-b"]
    await b.stop()
    assert [n.node for n in await liveness.live_nodes(include_draining=True)] == ["node-a"]


async def _names_are(names):
    return [n.node for n in await liveness.live_nodes()] == names


async def test_killed_node_rows_closed_and_run_taken_over_within_bound(cluster, token):
    # Long run leases: the takeover must come from the reaper, not from the lease lapsing.
    a, app_a = cluster("node-a", lease_seconds=60, sweep_interval=0.2)
    b, _ = cluster("node-b", lease_seconds=60, sweep_interval=0.2)
    b.ensure_started()

    client = WSClient(app_a)
    ready = await client.connect(token)
    await client.message("count 60")
    frames = await client.recv_until(lambda f: f["type"] == "agent.delta" and f["index"] >= 3)
    run_id = next(f for f in frames if f["type"] == "agent.started")["run_id"]

    killed_at = time.monotonic()
    await a.stop(abandon=True)  # SIGKILL-like: nothing is written, the socket's row stays open

    def rows_closed():
        return not Connection.objects.filter(node="node-a", closed_at__isnull=True).exists()

    await eventually(database_sync_to_async(rows_closed), timeout=10, what="node-a rows closed")
    closed_after = time.monotonic() - killed_at
    row = await database_sync_to_async(Connection.objects.get)(node="node-a")
    assert (row.close_code, row.close_reason) == (1006, "node_lost")

    def run_done():
        run = AgentRun.objects.get(pk=run_id)
        return run if run.status == "completed" else None

    run = await eventually(database_sync_to_async(run_done), timeout=15, what="run completed on node-b")
    assert run.node == "node-b" and run.claims == 2
    # Bound: TTL (1 s) + reap interval + scheduling slack, far below the 60 s run lease.
    assert closed_after < 4.0, closed_after

    # The client resumes on node-b and assembles exactly the whole answer.
    await client.drop()
    _, app_b = cluster("node-b-app", register=False, run_agents=False)
    resumed = WSClient(app_b)
    last = max(f["seq"] for f in frames if "seq" in f)
    await resumed.connect(token, conversation_id=ready["conversation_id"], last_seq=last)
    rest = await resumed.recv_until(lambda f: f["type"] == "agent.completed")
    whole = frames + rest
    expected = " ".join(f"w{i}" for i in range(1, 61))
    assert run_text(whole, run_id) == rest[-1]["message"]["text"] == expected
    await resumed.drop()
