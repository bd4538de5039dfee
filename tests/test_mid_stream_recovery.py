"""Path 2: a client that drops mid-stream gets the whole answer after reconnecting, nothing
missing and nothing twice; also when the node running the stream dies and another node
continues it from the committed text."""

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from sessions_app import services
from sessions_app.models import AgentRun, Event
from tests.support.gated_agent import AgentGate
from tests.support.waiting import eventually
from tests.support.ws import WSClient, assert_gapless, run_text, sequenced

pytestmark = pytest.mark.django_db(transaction=True)

EXPECTED = " ".join(f"w{i}" for i in range(1, 151))


@pytest.fixture(autouse=True)
def streaming_agent(settings):
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 10


def _run_id(frames):
    return next(f for f in frames if f["type"] == "agent.started")["run_id"]


@pytest.mark.parametrize("other_node", [False, True], ids=["same-node", "other-node"])
async def test_drop_mid_stream_then_resume(cluster, token, other_node):
    _, app1 = cluster("node-1")
    _, app2 = cluster("node-2", run_agents=False) if other_node else (None, app1)
    c = WSClient(app1)
    ready = await c.connect(token)
    await c.message("count 150")
    before = await c.recv_until(lambda f: f["type"] == "agent.delta" and f["index"] >= 4)
    applied = max(f["seq"] for f in sequenced(before))
    await c.drop()

    back = WSClient(app2)
    resumed = await back.connect(token, conversation_id=ready["conversation_id"], last_seq=applied)
    assert resumed["resumed"] is True
    after = await back.recv_until(lambda f: f["type"] == "agent.completed", timeout=30)
    assert_gapless(after, after=applied)
    whole = sequenced(before) + after
    assert_gapless(whole)
    run_id = _run_id(before)
    assert run_text(whole, run_id) == after[-1]["message"]["text"] == EXPECTED
    assert sum(f["type"] == "agent.completed" for f in whole) == 1
    await back.drop()


async def test_node_dies_mid_stream_and_another_node_continues(cluster, token, settings, monkeypatch, tmp_path):
    # The answer holds at the gate until node-1 is dead: it cannot finish there first.
    gate = AgentGate(tmp_path, after=20)
    gate.install(monkeypatch, settings)
    node1, app1 = cluster("node-1", lease_seconds=1, sweep_interval=0.2, register=False)
    node2, app2 = cluster("node-2", lease_seconds=1, sweep_interval=0.2, register=False)
    c = WSClient(app1)
    ready = await c.connect(token)
    await c.message("count 150")
    before = await c.recv_until(lambda f: f["type"] == "agent.delta")
    run_id = _run_id(before)
    await node1.stop(abandon=True)  # the process is gone: nothing more is written by it
    gate.open()
    await c.drop()
    node2.ensure_started()

    applied = max(f["seq"] for f in sequenced(before))
    back = WSClient(app2)
    await back.connect(token, conversation_id=ready["conversation_id"], last_seq=applied)
    after = await back.recv_until(lambda f: f["type"] == "agent.completed", timeout=30)
    whole = sequenced(before) + after
    assert_gapless(whole)
    assert run_text(whole, run_id) == after[-1]["message"]["text"] == EXPECTED
    assert sum(f["type"] == "agent.completed" for f in whole) == 1
    assert sum(f["type"] == "agent.started" for f in whole) == 1
    await back.drop()

    run = await database_sync_to_async(AgentRun.objects.get)(pk=run_id)
    assert (run.status, run.node, run.claims, run.fencing_token) == ("completed", "node-2", 2, 2)
    logged = await database_sync_to_async(
        lambda: list(Event.objects.filter(run_id=run_id, type="agent.delta").order_by("seq"))
    )()
    assert [e.payload["index"] for e in logged] == list(range(len(logged)))
    assert "".join(e.payload["text"] for e in logged) == EXPECTED


async def test_a_node_that_lost_its_lease_cannot_append(cluster, token, user):
    def setup():
        conversation = services.create_conversation(user.pk)
        services.post_user_message(conversation.pk, "00000000-0000-0000-0000-000000000001", "count 5")
        return conversation.pk

    conversation_id = await database_sync_to_async(setup)()
    first = await database_sync_to_async(services.claim_next_run)(conversation_id, "paused-node", 0.01)
    await database_sync_to_async(services.append_run_delta)(
        conversation_id, first.run_id, first.fencing_token, "w1 ", 0.01
    )

    async def lapsed():
        return await database_sync_to_async(services.claim_next_run)(conversation_id, "new-owner", 30)

    second = await eventually(lapsed, timeout=5, what="takeover after the lease lapsed")
    assert second.takeover and second.fencing_token == first.fencing_token + 1 and second.events == []
    with pytest.raises(services.LeaseLost):
        await database_sync_to_async(services.append_run_delta)(conversation_id, first.run_id, first.fencing_token, "x")
    with pytest.raises(services.LeaseLost):
        await database_sync_to_async(services.complete_run)(conversation_id, first.run_id, first.fencing_token, {})
    events = await database_sync_to_async(services.append_run_delta)(
        conversation_id, second.run_id, second.fencing_token, "w2 "
    )
    assert events[0]["index"] == 1
    assert await database_sync_to_async(services.renew_run_lease)(first.run_id, first.fencing_token) == "lost"


async def test_a_released_run_refuses_its_old_owners_late_writes(user):
    """A graceful release can race the releasing node's own last delta batch, still running in
    a database thread: that write must not land, or the lease moves back into the future."""
    def setup():
        conversation = services.create_conversation(user.pk)
        services.post_user_message(conversation.pk, "00000000-0000-0000-0000-000000000002", "count 5")
        return conversation.pk

    conversation_id = await database_sync_to_async(setup)()
    claim = await database_sync_to_async(services.claim_next_run)(conversation_id, "draining-node", 30)
    await database_sync_to_async(services.append_run_delta)(conversation_id, claim.run_id, claim.fencing_token, "w1 ")
    assert await database_sync_to_async(services.release_run)(claim.run_id, claim.fencing_token)

    late = services.DeltaWrite(str(conversation_id), claim.run_id, claim.fencing_token, "w2 ")
    outcome = await database_sync_to_async(services.append_run_deltas)([late], 30)
    assert isinstance(outcome[claim.run_id], services.LeaseLost), outcome
    assert await database_sync_to_async(services.renew_run_lease)(claim.run_id, claim.fencing_token) == "lost"
    run = await database_sync_to_async(AgentRun.objects.get)(pk=claim.run_id)
    text = await database_sync_to_async(services.committed_text)(run)
    assert (text, run.next_index, run.status) == ("w1 ", 1, "running")
    assert run.lease_expires_at < timezone.now()
    # The next owner continues from what was committed.
    taken = await database_sync_to_async(services.claim_next_run)(conversation_id, "other-node", 30)
    assert taken.takeover and taken.fencing_token == claim.fencing_token + 2
