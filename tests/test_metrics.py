"""Prometheus metrics move with real events: each test scrapes /metrics before and after and
parses it with prometheus_client's parser. (A node killed mid-run: tests/e2e/test_metrics_takeover.py;
a run_agents worker's own exporter: tests/e2e/test_worker_metrics.py.)"""

import math
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.test import RequestFactory
from django.utils import timezone

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


# --- tools and approvals ----------------------------------------------------------------------


def _moved(before, after):
    return lambda name, **labels: after.value(name, **labels) - before.value(name, **labels)


@pytest.mark.usefixtures("fast_agent")
async def test_tool_calls_and_approvals_move_their_metrics_through_a_node(cluster, token):
    """The demo agent's `effect 2` (two `local` calls: no REALTIME_DEMO_EFFECT_URL) and a
    `transfer 3` denied over the socket; the waiting gauge is read from the database at scrape."""
    _, app = cluster("node-1")
    client = WSClient(app)
    await client.connect(token, client_id="tab-1")
    before = await scrape_app()
    assert before.value("tether_approvals_waiting") == 0
    await client.converse("effect 2")
    await client.message("transfer 3")
    requested = (await client.recv_until(lambda f: f["type"] == "approval.requested"))[-1]
    waiting = await scrape_app()
    assert waiting.value("tether_approvals_waiting") == 1
    await client.send({"type": "approval.respond", "call_id": requested["call_id"], "decision": "deny"})
    await client.recv_until(lambda f: f["type"] == "agent.completed")
    after = await scrape_app()
    moved = _moved(before, after)

    assert after.value("tether_approvals_waiting") == 0
    assert moved("tether_tool_calls_total", effect="local", status="ok") == 2
    assert moved("tether_tool_calls_total", effect="once", status="denied") == 1
    assert moved("tether_approvals_resolved_total", decision="denied") == 1
    for effect, status in (("once", "ok"), ("local", "error"), ("idempotent", "ok")):
        assert moved("tether_tool_calls_total", effect=effect, status=status) == 0, (effect, status)
    for decision in ("approved", "expired"):
        assert moved("tether_approvals_resolved_total", decision=decision) == 0, decision
    await client.drop(1000)


def _claimed(user, text: str) -> tuple:
    conversation = services.create_conversation(user.pk)
    services.post_user_message(conversation.pk, uuid.uuid4(), text)
    claim = services.claim_next_run(conversation.pk, "node-x", 30)
    return conversation.pk, claim.run_id, claim.fencing_token


async def test_every_effect_status_and_decision_is_counted_where_it_is_recorded(user):
    """Through the journal's services (what every node calls): an `idempotent` call's error, a
    `once` call whose outcome was lost (`unknown`, and the approval to call it again: approved),
    and an approval that expired (its call `denied`); the gauge follows the pending ones."""
    from realtime.core import metrics

    metrics.watch_approvals(services.approvals_waiting)  # as every node does when it starts
    before = await scrape_app()
    conversation, run_id, token = await database_sync_to_async(_claimed)(user, "tools")

    def fail_then_lose():
        failed = services.begin_call(conversation, run_id, token, step=0, tool="t.remote", effect="idempotent",
                                     arguments={}, text_offset=0)
        services.finish_call(conversation, run_id, token, failed.call.call_id, "error", error="HTTP 503")
        lost = services.begin_call(conversation, run_id, token, step=1, tool="t.pay", effect="once", arguments={},
                                   text_offset=0)
        return services.give_up_unknown(conversation, run_id, token, lost.call.call_id, "node died").call.call_id

    again = await database_sync_to_async(fail_then_lose)()
    assert (await scrape_app()).value("tether_approvals_waiting") == 1  # call it again?
    await database_sync_to_async(services.resolve_approval)(conversation, again, "approve", "tab-1")
    assert (await scrape_app()).value("tether_approvals_waiting") == 0

    def wait_then_expire() -> int:
        other, other_run, other_token = _claimed(user, "more tools")
        services.begin_call(other, other_run, other_token, step=0, tool="t.pay", effect="once", arguments={},
                            text_offset=0, needs_approval=True)
        return len(services.expire_approvals(now=timezone.now() + timedelta(days=1)))

    assert await database_sync_to_async(wait_then_expire)() == 1
    after = await scrape_app()
    moved = _moved(before, after)
    assert moved("tether_tool_calls_total", effect="idempotent", status="error") == 1
    assert moved("tether_tool_calls_total", effect="once", status="unknown") == 1
    assert moved("tether_tool_calls_total", effect="once", status="denied") == 1
    assert moved("tether_tool_calls_total", effect="once", status="ok") == 0  # approved, not yet made
    assert moved("tether_approvals_resolved_total", decision="approved") == 1
    assert moved("tether_approvals_resolved_total", decision="expired") == 1
    assert moved("tether_approvals_resolved_total", decision="denied") == 0
    assert after.value("tether_approvals_waiting") == 0


async def test_the_waiting_gauge_is_nan_when_the_database_cannot_be_read(monkeypatch):
    """A scrape must not fail because the database did: the gauge says "unknown"."""
    from realtime.core import metrics

    def broken() -> int:
        raise RuntimeError("database unreachable")

    metrics.watch_approvals(broken)
    try:
        assert math.isnan((await scrape_app()).value("tether_approvals_waiting"))
    finally:
        metrics.watch_approvals(services.approvals_waiting)
