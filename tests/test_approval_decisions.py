"""Who decides an approval, and when (issue 21; docs/protocol.md, "Tools and approvals"): the
first decision wins, however many devices answer at once; nobody outside the conversation can
decide (`not_found`); an approval nobody answers expires (`expired`, by `timeout`); a cancel
while the run waits ends it. `transfer N` (demo.transfer, `once`, approval required) POSTs to a
test sink, which shows whether the call was made. The "survives every node restart" case is
end to end: tests/e2e/test_approval_survives_restarts.py."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from channels.db import database_sync_to_async

from sessions_app import services
from sessions_app.models import AgentRun, Approval
from tests.conftest import access_for
from tests.support.effect_sink import EffectSink
from tests.support.tool_invariants import check_conversation_tools
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sink(settings):
    with EffectSink() as sink:
        settings.REALTIME_DEMO_EFFECT_URL = sink.url
        settings.REALTIME_DEMO_AGENT_DELAY_MS = 0
        yield sink


def of_type(kind: str, **fields):
    return lambda f: f["type"] == kind and all(f.get(k) == v for k, v in fields.items())


async def asked_to_approve(client: WSClient, text: str = "transfer 3") -> dict:
    await client.message(text)
    [*_, asked] = await client.recv_until(of_type("approval.requested"))
    return asked


async def respond(client: WSClient, call_id: str, decision: str) -> None:
    await client.send({"type": "approval.respond", "call_id": call_id, "decision": decision})


async def check_log(client: WSClient) -> object:
    return await database_sync_to_async(check_conversation_tools)(client.ready["conversation_id"], client.frames)


@database_sync_to_async
def approval_of(call_id: str) -> Approval:
    return Approval.objects.get(call_id=call_id)


async def test_two_devices_approving_at_once_one_wins_the_other_is_told(cluster, user, sink, monkeypatch):
    _, app1 = cluster("node-1")
    _, app2 = cluster("node-2")
    token = access_for(user)
    a = WSClient(app1)
    ready = await a.connect(token, client_id="device-a")
    b = WSClient(app2)
    await b.connect(token, conversation_id=ready["conversation_id"], last_seq=0, client_id="device-b")
    asked = await asked_to_approve(a)
    await b.recv_until(of_type("approval.requested"))

    # Both decisions reach the service together: each waits for the other at a barrier first.
    barrier = threading.Barrier(2, timeout=10)
    resolve = services.resolve_approval

    def together(*args, **kwargs):
        barrier.wait()
        return resolve(*args, **kwargs)

    monkeypatch.setattr(services, "resolve_approval", together)
    await asyncio.gather(respond(a, asked["call_id"], "approve"), respond(b, asked["call_id"], "approve"))

    seen_a = await a.recv_until(of_type("agent.completed"))
    seen_b = await b.recv_until(of_type("agent.completed"))
    resolved = [f for f in seen_a if f["type"] == "approval.resolved"]
    assert len(resolved) == 1 and resolved[0]["decision"] == "approved"
    winner, loser = (seen_a, seen_b) if resolved[0]["by"] == "device-a" else (seen_b, seen_a)
    assert not [f for f in winner if f["type"] == "error"]
    [refused] = [f for f in loser if f["type"] == "error"]
    assert (refused["code"], refused["ref"], refused["decision"]) == ("already_decided", asked["call_id"], "approved")
    assert [f for f in seen_b if "seq" in f and f["type"] == "approval.resolved"] == resolved

    assert [r.key for r in sink.requests] == [asked["call_id"]]
    log = await check_log(a)
    [call] = log.of_tool("demo.transfer")
    assert (call.decision, call.status) == ("approved", "ok")
    assert seen_a[-1]["message"]["text"] == "transferred 3"


async def test_only_the_conversation_can_decide_anyone_else_gets_not_found(cluster, user, other_user, sink):
    _, app = cluster("node-1")
    owner = WSClient(app)
    await owner.connect(access_for(user), client_id="owner")
    asked = await asked_to_approve(owner)
    stranger = WSClient(app)
    await stranger.connect(access_for(other_user), client_id="stranger")

    await respond(stranger, asked["call_id"], "approve")
    refused = await stranger.recv()
    assert (refused["type"], refused["code"], refused["ref"]) == ("error", "not_found", asked["call_id"])
    unknown = "00000000-0000-4000-8000-000000000000"
    await respond(owner, unknown, "approve")
    assert (await owner.recv())["code"] == "not_found"
    assert (await approval_of(asked["call_id"])).status == "pending"
    assert sink.requests == []

    await respond(owner, asked["call_id"], "deny")
    seen = await owner.recv_until(of_type("agent.completed"))
    assert [(f["decision"], f["by"]) for f in seen if f["type"] == "approval.resolved"] == [("denied", "owner")]
    assert seen[-1]["message"]["text"] == "transfer denied"
    await stranger.assert_silent()
    log = await check_log(owner)
    assert [c.status for c in log.of_tool("demo.transfer")] == ["denied"]
    assert sink.requests == []


@pytest.mark.parametrize("found_by", ["sweep", "late_answer"])
async def test_an_approval_nobody_answers_expires(cluster, user, sink, settings, found_by):
    """Expired by every node's sweep, or, when no sweep came by yet, by the first answer that
    arrives after `expires_at` (which is refused)."""
    settings.REALTIME_APPROVAL_TIMEOUT = 1
    _, app = cluster("node-1", sweep_interval=0.1 if found_by == "sweep" else 3600)
    client = WSClient(app)
    await client.connect(access_for(user), client_id="device")
    asked = await asked_to_approve(client)
    assert asked["expires_at"] - time.time() <= 1.5
    if found_by == "late_answer":
        await asyncio.sleep(max(0.0, asked["expires_at"] + 1.1 - time.time()))  # past expires_at (whole seconds)
        await respond(client, asked["call_id"], "approve")
    seen = await client.recv_until(of_type("agent.completed"), timeout=10)
    [resolved] = [f for f in seen if f["type"] == "approval.resolved"]
    assert (resolved["decision"], resolved["by"]) == ("expired", "timeout")
    assert seen[-1]["message"]["text"] == "transfer expired"
    refusals = [f for f in seen if f["type"] == "error"]
    if found_by == "late_answer":
        assert [(f["code"], f["decision"]) for f in refusals] == [("already_decided", "expired")]
    else:
        assert refusals == []
        await respond(client, asked["call_id"], "approve")
        refused = await client.recv()
        assert (refused["code"], refused["decision"]) == ("already_decided", "expired")
    log = await check_log(client)
    [call] = log.of_tool("demo.transfer")
    assert (call.decision, call.by, call.status, call.call_seq) == ("expired", "timeout", "denied", None)
    assert sink.requests == []


async def test_a_cancel_while_the_run_waits_ends_it(cluster, user, sink):
    _, app = cluster("node-1")
    client = WSClient(app)
    await client.connect(access_for(user), client_id="device")
    asked = await asked_to_approve(client)
    await client.send({"type": "cancel", "run_id": asked["run_id"]})
    seen = await client.recv_until(of_type("agent.failed"))
    tools = [f for f in seen if f["type"] in ("approval.resolved", "agent.tool_result", "agent.failed")]
    assert [(f["type"], f.get("decision") or f.get("status") or f.get("cancelled")) for f in tools] == [
        ("approval.resolved", "denied"), ("agent.tool_result", "denied"), ("agent.failed", True)]
    assert tools[0]["by"] == "device"
    run = await database_sync_to_async(AgentRun.objects.get)(pk=asked["run_id"])
    assert (run.status, run.node, run.lease_expires_at) == ("cancelled", "", None)

    await respond(client, asked["call_id"], "approve")  # too late: the cancel decided it
    refused = await client.recv()
    assert (refused["code"], refused["decision"]) == ("already_decided", "denied")
    log = await check_log(client)
    [call] = log.of_tool("demo.transfer")
    assert (call.decision, call.status, call.call_seq) == ("denied", "denied", None)
    assert sink.requests == []
