"""Agent work on dedicated worker processes: the web node runs no agents itself."""

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import AgentRun
from tests.support.ws import WSClient, run_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_agent")]


@pytest.fixture
def agent_delay_ms() -> int:
    """The pace these tests have always run at (tests/conftest.py `fast_agent`)."""
    return 5


async def test_worker_answers_for_a_web_node_without_agents(cluster, token):
    web, web_app = cluster("web-1", run_agents=False)
    # A long sweep interval proves the run is picked up by the layer kick, not by polling.
    worker, _ = cluster("worker-1", run_agents=True, sweep_interval=30)
    worker.ensure_started()
    worker.listen_for_kicks()

    client = WSClient(web_app)
    await client.connect(token)
    await client.message("hello worker")
    frames = await client.recv_until(lambda f: f["type"] == "agent.completed", timeout=10)
    started = next(f for f in frames if f["type"] == "agent.started")
    assert frames[-1]["message"]["text"] == run_text(frames, started["run_id"]) == "You said: hello worker"

    run = await database_sync_to_async(AgentRun.objects.get)(pk=started["run_id"])
    assert (run.status, run.node, run.claims) == ("completed", "worker-1", 1)
    assert web.supervisor is None
    await client.drop()


async def test_worker_sweep_finds_runs_without_a_kick(cluster, token):
    _, web_app = cluster("web-1", run_agents=False)
    client = WSClient(web_app)
    await client.connect(token)
    await client.message("queued while no worker runs")
    await client.recv_until(lambda f: f["type"] == "message.created")
    await client.assert_silent(0.5)  # no worker: the run waits in the queue

    worker, _ = cluster("worker-1", run_agents=True, sweep_interval=0.2)
    worker.ensure_started()
    frames = await client.recv_until(lambda f: f["type"] == "agent.completed", timeout=10)
    assert frames[-1]["message"]["text"] == "You said: queued while no worker runs"
    await client.drop()
