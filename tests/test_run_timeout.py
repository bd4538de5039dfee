"""The run timeout (REALTIME_RUN_TIMEOUT) counts from the run's first start (`started_at`),
across claims: a takeover continues the run with what is left of its budget, not a new one,
so a run that keeps being taken over (a crash loop, rolling restarts) still ends."""

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from sessions_app import services
from sessions_app.models import AgentRun, Event
from tests.support.waiting import eventually

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def slow_agent(settings):
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 20  # "count 5000" would take 100 s


async def _run_left_by_a_dead_node(user, used: float) -> str:
    """A run that a node claimed `used` seconds ago and then lost (its lease has lapsed)."""

    def setup():
        conversation = services.create_conversation(user.pk)
        posted = services.post_user_message(conversation.pk, "00000000-0000-0000-0000-000000000001", "count 5000")
        services.claim_next_run(conversation.pk, "dead-node", lease_seconds=60)
        AgentRun.objects.filter(pk=posted.run_id).update(
            started_at=timezone.now() - timedelta(seconds=used), lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        return posted.run_id

    return await database_sync_to_async(setup)()


async def _ended(run_id: str) -> AgentRun | None:
    run = await database_sync_to_async(AgentRun.objects.get)(pk=run_id)
    return run if run.finished_at is not None else None


async def test_a_takeover_gets_only_what_is_left_of_the_budget(cluster, user):
    run_id = await _run_left_by_a_dead_node(user, used=TIMEOUT - 1)
    node, _ = cluster("node-2", run_timeout=TIMEOUT, sweep_interval=0.1, register=False)
    node.ensure_started()

    # A fresh budget would end the run TIMEOUT seconds after the takeover: 2 x TIMEOUT - 1
    # after its start. What is left of it ends the run about 1 s after the takeover.
    run = await eventually(lambda: _ended(run_id), timeout=TIMEOUT, what="the run to time out")
    assert (run.status, run.error, run.claims) == ("failed", f"agent did not finish within {TIMEOUT:g} s", 2)
    assert TIMEOUT - 0.1 <= (run.finished_at - run.started_at).total_seconds() < TIMEOUT + 4
    failed = await database_sync_to_async(lambda: list(Event.objects.filter(run_id=run_id, type="agent.failed")))()
    assert [e.payload["error"] for e in failed] == [f"agent did not finish within {TIMEOUT:g} s"]


async def test_a_run_whose_budget_is_spent_fails_at_its_takeover_without_starting_the_agent(cluster, user):
    run_id = await _run_left_by_a_dead_node(user, used=3 * TIMEOUT)
    node, _ = cluster("node-2", run_timeout=TIMEOUT, sweep_interval=0.1, register=False)
    node.ensure_started()

    run = await eventually(lambda: _ended(run_id), timeout=TIMEOUT + 5, what="the run to fail")
    assert (run.status, run.claims, run.text) == ("failed", 2, "")
    assert (run.finished_at - run.started_at).total_seconds() < 3 * TIMEOUT + 4
    types = await database_sync_to_async(
        lambda: list(Event.objects.filter(run_id=run_id).order_by("seq").values_list("type", flat=True))
    )()
    assert types == ["agent.started", "agent.failed"]
