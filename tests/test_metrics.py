"""Prometheus metrics move with real events: each test scrapes /metrics before and after and
parses it with prometheus_client's parser. (A node killed mid-run: tests/e2e/test_metrics_takeover.py;
a run_agents worker's own exporter: tests/e2e/test_worker_metrics.py.)"""

import pytest
from channels.db import database_sync_to_async
from django.test import RequestFactory

from realtime.infra.exporter import metrics_view
from realtime.node.resync import resync_once
from sessions_app import services
from tests.support.metrics import scrape_app
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


async def test_connect_counts_ready_latency_and_open_sockets(cluster, token):
    _, app = cluster("metrics-node")
    before = await scrape_app()
    client = WSClient(app)
    await client.connect(token)

    after = await scrape_app()
    assert after.value("tether_connections_open", node="metrics-node") == 1
    assert after.value("tether_connects_total", outcome="ready", code="") == (
        before.value("tether_connects_total", outcome="ready", code="") + 1)
    assert after.value("tether_connect_ready_seconds_count") == before.value("tether_connect_ready_seconds_count") + 1
    await client.drop(1000)
    closed = await scrape_app()
    assert closed.value("tether_connections_open", node="metrics-node") == 0
    assert closed.value("tether_connection_closes_total", code="1000", reason="client_closed") == (
        before.value("tether_connection_closes_total", code="1000", reason="client_closed") + 1)


async def test_drop_and_resume_count_the_close_the_resume_and_its_replay(cluster, token):
    _, app = cluster("node-1")
    client = WSClient(app)
    ready = await client.connect(token, client_id="tab-1")
    frames = await client.converse("hello")
    await client.drop(1006)
    before = await scrape_app()

    again = WSClient(app)
    resumed = await again.connect(token, ready["conversation_id"], 1, client_id="tab-1")
    assert resumed["resumed"] is True and resumed["replay_count"] == frames[-1]["seq"] - 1
    after = await scrape_app()

    def moved(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("tether_resumes_total", resumed="true") == 1
    assert moved("tether_resumes_total", resumed="false") == 0
    assert moved("tether_connects_total", outcome="resumed", code="") == 1
    assert moved("tether_resume_replay_events_count") == 1
    assert moved("tether_resume_replay_events_sum") == resumed["replay_count"]
    # The dropped socket was counted when it closed, before the first scrape.
    assert before.value("tether_connection_closes_total", code="1006", reason="connection_lost") >= 1
    await again.drop(1000)


async def test_a_4429_counts_the_refusal_by_kind_and_code(settings, cluster, token):
    settings.REALTIME_RATE_CONNECT_USER = (1, 60)
    _, app = cluster("node-1")
    first = WSClient(app)
    await first.connect(token)
    before = await scrape_app()
    refused = WSClient(app)
    await refused.open()
    await refused.send({"type": "connect", "token": token, "conversation_id": None, "last_seq": None,
                        "client_id": "tab-2"})
    _, code = await refused.expect_close()
    assert code == 4429
    after = await scrape_app()

    def moved(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("tether_rate_limit_refusals_total", kind="connect_user") == 1
    assert moved("tether_connects_total", outcome="refused", code="4429") == 1
    assert moved("tether_connection_closes_total", code="4429", reason="rate_limited") == 1
    await refused.drop(4429)
    await first.drop(1000)


async def test_a_run_moves_run_log_and_fanout_metrics(cluster, token):
    _, app = cluster("node-1")
    client = WSClient(app)
    await client.connect(token)
    before = await scrape_app()
    frames = await client.converse("hello metrics")
    after = await scrape_app()
    deltas = sum(f["type"] == "agent.delta" for f in frames)

    def moved(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("tether_runs_started_total") == 1
    assert moved("tether_runs_taken_over_total") == 0
    assert moved("tether_runs_finished_total", status="completed") == 1
    assert moved("tether_run_duration_seconds_count", status="completed") == 1
    assert moved("tether_events_appended_total", type="message.created") == 1
    assert moved("tether_events_appended_total", type="agent.started") == 1
    assert moved("tether_events_appended_total", type="agent.delta") == deltas > 0
    assert moved("tether_events_appended_total", type="agent.completed") == 1
    assert moved("tether_delta_batch_writes_sum") == deltas
    assert moved("tether_delta_batch_seconds_count") == moved("tether_delta_batch_writes_count") >= 1
    # Every published message arrived at this node's subscription once.
    assert moved("tether_fanout_lag_seconds_count") >= 3
    await client.drop(1000)


async def test_resync_repairs_and_auth_refresh_results_are_counted(cluster, token):
    node, app = cluster("node-1")
    client = WSClient(app)
    ready = await client.connect(token)
    before = await scrape_app()
    # Two events committed without fan-out, as if the pub/sub messages were lost.
    for i in range(2):
        await database_sync_to_async(services.append_event)(ready["conversation_id"], "note", {"i": i})
    await resync_once(node)
    await client.recv_until(lambda f: f.get("seq") == 2)
    await client.send({"type": "auth.refresh", "refresh": "not-a-token"})
    await client.recv_until(lambda f: f.get("code") == "refresh_failed")
    after = await scrape_app()
    assert after.value("tether_resync_repaired_events_total") - before.value("tether_resync_repaired_events_total") == 2
    assert after.value("tether_auth_refreshes_total", kind="refresh", result="refused") == (
        before.value("tether_auth_refreshes_total", kind="refresh", result="refused") + 1)
    await client.drop(1000)


async def _get(addr: str, **headers: str) -> int:
    """The /metrics view's answer to a GET from that peer address: its status code."""
    return metrics_view(RequestFactory().get("/metrics", REMOTE_ADDR=addr, headers=headers)).status_code


async def test_metrics_are_only_served_to_allowed_networks_or_the_token(settings):
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.METRICS_TOKEN = "s3cret"
    assert await _get("198.51.100.9") == 403
    assert await _get("198.51.100.9", Authorization="Bearer wrong") == 403
    assert await _get("198.51.100.9", Authorization="Bearer s3cret") == 200
    assert await _get("127.0.0.1") == 200
    # A forged X-Forwarded-For from an outsider changes nothing.
    assert await _get("198.51.100.9", **{"X-Forwarded-For": "127.0.0.1"}) == 403
    # Behind a local balancer (a trusted proxy on loopback) the client it forwards is checked,
    # not the balancer's own loopback address.
    settings.REALTIME_TRUSTED_PROXIES = ["127.0.0.1"]
    assert await _get("127.0.0.1", **{"X-Forwarded-For": "198.51.100.9"}) == 403
    assert await _get("127.0.0.1", **{"X-Forwarded-For": "127.0.0.5"}) == 200
    settings.METRICS_TOKEN = ""
    assert await _get("198.51.100.9", Authorization="Bearer ") == 403
