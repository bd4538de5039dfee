"""A `manage.py run_agents` worker exports its own metrics on its own port (the web node runs
no agents, so only the worker's counters move for the run)."""

import os
import subprocess
import sys

import httpx
import pytest
from channels.db import database_sync_to_async

from tests.conftest import access_for
from tests.support import daphne_nodes
from tests.support.metrics import scrape_url
from tests.support.sdk_chat import wait_ready
from tests.support.waiting import eventually
from tests.support.ws_e2e import E2EClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def test_worker_metrics_on_their_own_port(daphne_cluster, user, settings, tmp_path):
    web = daphne_cluster("metrics-web", REALTIME_RUN_AGENTS_IN_SERVER=0, REALTIME_DEMO_AGENT_DELAY_MS=5)
    await wait_ready(web)
    port = daphne_nodes.free_port()
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": daphne_nodes.test_database_url(),
        "REDIS_URL": settings.REDIS_URL, "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, "DB_CONN_MAX_AGE": "0",
        "REALTIME_NODE_ID": "metrics-worker", "REALTIME_DEMO_AGENT_DELAY_MS": "5", "LOG_LEVEL": "WARNING",
        **daphne_nodes.key_env(),
    }
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([sys.executable, "manage.py", "run_agents", "--metrics-port", str(port)],
                              cwd=daphne_nodes.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        async def exporter_up():
            try:
                return await scrape_url(url)
            except (httpx.HTTPError, AssertionError):  # not listening yet
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                return None

        before = await eventually(exporter_up, timeout=30, what="the worker's exporter")
        token = await database_sync_to_async(access_for)(user)
        client = E2EClient(token)
        await client.connect(web.ws_url)
        await client.message("hello worker")
        done = await client.until(lambda f: f["type"] == "agent.completed")
        assert done["message"]["text"] == "You said: hello worker"
        deltas = sum(f["type"] == "agent.delta" for f in client.applied.values())
        await client.ws.close()

        after = await scrape_url(url)
        assert after.value("tether_runs_started_total") == before.value("tether_runs_started_total") + 1
        assert after.value("tether_runs_finished_total", status="completed") == 1
        assert after.value("tether_events_appended_total", type="agent.delta") == deltas > 0
        assert after.value("tether_delta_batch_writes_sum") == deltas
        web_metrics = await scrape_url(f"http://127.0.0.1:{web.port}/metrics")
        assert web_metrics.value("tether_runs_started_total") == 0
        assert web_metrics.value("tether_events_appended_total", type="message.created") == 1
    finally:
        worker.terminate()
        worker.wait(15)
        log.close()
