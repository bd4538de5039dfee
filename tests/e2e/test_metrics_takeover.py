"""Metrics end to end: a node is SIGKILLed mid-run and the survivor, scraped over HTTP, counts
exactly one takeover (and the completed run). The run waits on a gate
(tests/support/gated_agent.py) until the node is dead: it cannot finish first. The node that
holds the run is the one killed: the node that took the message kicks its own supervisor, but
the other node's sweep may claim the run first (seen once in a loaded full run)."""

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import AgentRun
from tests.conftest import access_for
from tests.support.gated_agent import AgentGate
from tests.support.metrics import scrape_url
from tests.support.sdk_chat import FAST_NODE_ENV, wait_ready
from tests.support.waiting import eventually
from tests.support.ws_e2e import E2EClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

async def test_survivor_counts_one_takeover_when_a_node_dies_mid_run(daphne_cluster, user, tmp_path):
    gate = AgentGate(tmp_path)
    a = daphne_cluster("metrics-a", **FAST_NODE_ENV, **gate.env)
    b = daphne_cluster("metrics-b", **FAST_NODE_ENV, **gate.env)
    await wait_ready(a)
    await wait_ready(b)
    token = await database_sync_to_async(access_for)(user)
    client = E2EClient(token)
    await client.connect(a.ws_url)
    await client.message("count 150")
    started = await client.until(lambda f: f["type"] == "agent.started")
    await client.until(lambda f: f["type"] == "agent.delta")
    run = await database_sync_to_async(AgentRun.objects.get)(pk=started["run_id"])
    owner, survivor = {"metrics-a": (a, b), "metrics-b": (b, a)}[run.node]
    survivor_metrics = f"http://127.0.0.1:{survivor.port}/metrics"
    before = await scrape_url(survivor_metrics)

    owner.kill()
    gate.open()

    def completed():
        return AgentRun.objects.filter(pk=started["run_id"], status="completed").exists()

    await eventually(database_sync_to_async(completed), timeout=30, what="the run completed on the survivor")
    after = await scrape_url(survivor_metrics)
    assert after.value("tether_runs_taken_over_total") == before.value("tether_runs_taken_over_total") + 1
    assert after.value("tether_runs_started_total") == before.value("tether_runs_started_total")
    assert after.value("tether_runs_finished_total", status="completed") == (
        before.value("tether_runs_finished_total", status="completed") + 1)
    assert after.value("tether_events_appended_total", type="agent.completed") == (
        before.value("tether_events_appended_total", type="agent.completed") + 1)
    await client.ws.close()
