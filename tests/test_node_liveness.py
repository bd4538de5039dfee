"""Node liveness: a node that dies without cleaning up is noticed by a live node, which
closes its connection rows and releases its runs within the configured bound."""

import asyncio
import io
import time

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.core.management import call_command

from realtime.infra import ratelimit, registry
from sessions_app import services
from sessions_app.models import AgentRun, Connection
from tests.conftest import access_for
from tests.support.gated_agent import AgentGate
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
        return [n.node for n in await registry.live_nodes()] == ["node-a", "node-b"]

    await eventually(both_listed, timeout=5, what="both nodes registered")
    b.draining = True
    await eventually(lambda: _names_are(["node-a"]), timeout=5, what="draining node hidden")
    assert [n.node for n in await registry.live_nodes(include_draining=True)] == ["node-a", "node-b"]
    await b.stop()
    assert [n.node for n in await registry.live_nodes(include_draining=True)] == ["node-a"]


async def _names_are(names):
    return [n.node for n in await registry.live_nodes()] == names


async def test_killed_node_rows_closed_and_run_taken_over_within_bound(cluster, token, settings, monkeypatch, tmp_path):
    # The answer holds at the gate until node-a is dead: it cannot finish there first.
    gate = AgentGate(tmp_path)
    gate.install(monkeypatch, settings)
    # Long run leases: the takeover must come from the reaper, not from the lease lapsing.
    a, app_a = cluster("node-a", lease_seconds=60, sweep_interval=0.2)
    b, _ = cluster("node-b", lease_seconds=60, sweep_interval=0.2)
    b.ensure_started()

    client = WSClient(app_a)
    ready = await client.connect(token)
    await client.message("count 60")
    frames = await client.recv_until(lambda f: f["type"] == "agent.delta")
    run_id = next(f for f in frames if f["type"] == "agent.started")["run_id"]

    killed_at = time.monotonic()
    await a.stop(abandon=True)  # SIGKILL-like: nothing is written, the socket's row stays open
    gate.open()

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


async def test_killed_node_slots_are_freed_unless_their_client_came_back(cluster, user, settings):
    # A TTL long enough that the reconnect below surely comes before the reaper notices.
    settings.REALTIME_NODE_TTL = 3.0
    settings.REALTIME_NODE_REAP_INTERVAL = 0.2
    a, app_a = cluster("node-a")
    b, app_b = cluster("node-b")
    b.ensure_started()
    token = access_for(user)
    slot_key = f"{django_settings.REDIS_KEY_PREFIX}:slots:user:{user.pk}"

    gone, back = WSClient(app_a), WSClient(app_a)
    lost = await gone.connect(token, client_id="tab-gone")
    ready = await back.connect(token, client_id="tab-back")
    gone_slot = ratelimit.slot_member("tab-gone", lost["conversation_id"])
    back_slot = ratelimit.slot_member("tab-back", ready["conversation_id"])
    await _crash(a, [gone, back])
    # tab-back reconnects to node-b before the reaper runs: that slot is its socket's now.
    again = WSClient(app_b)
    await again.connect(token, client_id="tab-back", conversation_id=ready["conversation_id"], last_seq=0)

    r = aioredis.from_url(django_settings.REDIS_URL, decode_responses=True)
    try:
        assert set(await r.zrange(slot_key, 0, -1)) == {gone_slot, back_slot}

        async def reaped():
            return await r.zrange(slot_key, 0, -1) == [back_slot]

        await eventually(reaped, timeout=10, what="dead node's slot freed, the returned client's kept")
    finally:
        await r.aclose()
    rows = await database_sync_to_async(
        lambda: sorted(Connection.objects.filter(node="node-a").values_list("client_id", "close_reason"))
    )()
    # tab-back's row was closed by its own reconnect; the reaper closed the other one.
    assert rows == [("tab-back", "replaced"), ("tab-gone", "node_lost")]
    await again.drop(1000)


def test_release_node_lists_the_slots_of_the_rows_it_closed_with_their_owners(user, other_user):
    """What the reaper may free: the slots of the dead node's open rows, each with the socket
    that held it, so that a client that came back elsewhere (and took its slot over) keeps it.
    A client whose reconnect already replaced the dead node's row is not listed at all."""
    conversation = services.create_conversation(user.pk)
    other = services.create_conversation(other_user.pk)

    def row(owner, conv, client_id, node):
        return Connection.objects.create(user=owner, conversation=conv, client_id=client_id, node=node,
                                         channel_name=f"specific.{node}!{client_id}")

    second = services.create_conversation(user.pk)
    row(user, conversation, "tab-1", "node-dead")
    row(user, conversation, "tab-2", "node-dead")
    # tab-2 is back already, on node-live: its connect replaced the dead node's row (one open
    # row per client is a database constraint), so that row is not the reaper's to release.
    services.open_session(user_id=user.pk, conversation_id=str(conversation.pk), client_id="tab-2",
                          channel_name="specific.live!2", node="node-live")
    row(user, second, "tab-2", "node-dead")  # same client, another conversation: another slot
    row(other_user, other, "tab-2", "node-dead")  # same client_id, another user: its own slot
    row(user, conversation, "tab-3", "node-live")

    gone = services.release_node("node-dead")

    assert gone.connections_closed == 3
    assert gone.orphan_slots == sorted([
        (str(user.pk), "tab-1", str(conversation.pk), "specific.node-dead!tab-1"),
        (str(user.pk), "tab-2", str(second.pk), "specific.node-dead!tab-2"),
        (str(other_user.pk), "tab-2", str(other.pk), "specific.node-dead!tab-2"),
    ])
    assert not Connection.objects.filter(node="node-dead", closed_at__isnull=True).exists()
    assert Connection.objects.filter(node="node-live", closed_at__isnull=True).count() == 2


def test_reap_nodes_command_releases_a_stale_node(user):
    """The operators' command: a node whose registry entry went stale is released."""
    conversation = services.create_conversation(user.pk)
    Connection.objects.create(user=user, conversation=conversation, client_id="tab-1", node="node-x")
    r = sync_redis.Redis.from_url(django_settings.REDIS_URL, decode_responses=True)
    slot_key = f"{django_settings.REDIS_KEY_PREFIX}:slots:user:{user.pk}"
    try:
        r.zadd(f"{django_settings.REDIS_KEY_PREFIX}:nodes", {"node-x": time.time() - 60})
        r.zadd(slot_key, {ratelimit.slot_member("tab-1", str(conversation.pk)): time.time() * 1000 + 60_000})
        out = io.StringIO()
        call_command("reap_nodes", stdout=out)
        assert out.getvalue().strip() == (
            "dead nodes: node-x; connections closed: 1; runs released: 0; connection slots released: 1"
        )
        assert r.zrange(slot_key, 0, -1) == []
        assert r.zrange(f"{django_settings.REDIS_KEY_PREFIX}:nodes", 0, -1) == []
    finally:
        r.close()
    row = Connection.objects.get(node="node-x")
    assert (row.close_code, row.close_reason) == (1006, "node_lost")


async def _crash(node, clients: list[WSClient]) -> None:
    """The process is gone: its sockets' consumers stop where they are, without cleanup."""
    consumers = list(node.connections)
    await node.stop(abandon=True)
    for consumer in consumers:
        for task in consumer._tasks:  # noqa: SLF001 - a crash stops them where they are
            task.cancel()
    for client in clients:
        client.comm.future.cancel()
    await asyncio.gather(*(c.comm.future for c in clients), return_exceptions=True)
