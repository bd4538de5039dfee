"""Approvals (docs/protocol.md, "Tools and approvals"): a run that waits for a person holds no
lease, no node and no task, and holds back the later runs of its conversation; its wait does not
count towards its timeout; the first decision wins, from any socket of the conversation; nobody
else's socket can decide; an approval expires; a cancel ends a waiting run.

End to end (every node restarted during the wait, another device answers): tests/e2e/."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from sessions_app import services
from sessions_app.models import AgentRun, Approval, ToolCall
from tests.conftest import access_for
from tests.support.held_tools import CALLS
from tests.support.waiting import eventually
from tests.support.ws import WSClient, sequenced

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("fast_agent", "held_tools", "tool_invariants")]


async def ask_transfer(client: WSClient, amount: int = 5) -> dict:
    await client.message(f"transfer {amount}")
    return (await client.recv_until(lambda f: f["type"] == "approval.requested"))[-1]


def finished(frame: dict) -> bool:
    return frame["type"] in ("agent.completed", "agent.failed")


async def test_a_waiting_run_holds_nothing_and_holds_back_the_next_run(cluster, token):
    _, app = cluster("node-1")
    client = WSClient(app)
    await client.connect(token)
    requested = await ask_transfer(client)
    assert set(requested) == {"type", "seq", "run_id", "call_id", "tool", "arguments", "reason", "expires_at"}
    assert (requested["tool"], requested["arguments"], requested["reason"]) == ("demo.transfer", {"n": 5}, "policy")
    run = await database_sync_to_async(AgentRun.objects.get)(pk=requested["run_id"])
    assert (run.status, run.node, run.lease_expires_at) == ("waiting", "", None)
    assert CALLS.made == []  # nothing happened yet

    await client.message("count 3")  # its run waits behind the transfer's
    await client.recv_until(lambda f: f["type"] == "message.created" and f["message"]["text"] == "count 3")
    await client.assert_silent(0.5)
    await client.send({"type": "approval.respond", "call_id": requested["call_id"], "decision": "approve"})
    frames = sequenced(await client.recv_until(
        lambda f: f["type"] == "agent.completed" and f["message"]["text"] == "w1 w2 w3"))
    completed = [f["message"]["text"] for f in frames if f["type"] == "agent.completed"]
    assert completed == ["transferred 5", "w1 w2 w3"]  # in message order
    assert len(CALLS.of("demo.transfer")) == 1
    await client.drop()


async def test_time_spent_waiting_does_not_count_towards_the_run_timeout(cluster, token, settings):
    settings.REALTIME_RUN_TIMEOUT = 5
    _, app = cluster("node-1")
    client = WSClient(app)
    await client.connect(token)
    requested = await ask_transfer(client)
    # The person took ten minutes to answer (the run started well over its timeout ago).
    await database_sync_to_async(AgentRun.objects.filter(pk=requested["run_id"]).update)(
        started_at=timezone.now() - timedelta(seconds=600), waiting_since=timezone.now() - timedelta(seconds=599))
    await client.send({"type": "approval.respond", "call_id": requested["call_id"], "decision": "approve"})
    frames = await client.recv_until(finished)
    assert frames[-1]["message"]["text"] == "transferred 5"
    run = await database_sync_to_async(AgentRun.objects.get)(pk=requested["run_id"])
    assert run.waited_seconds >= 599
    await client.drop()


async def test_the_first_decision_wins_and_every_other_is_told_which_stands(cluster, token):
    _, app = cluster("node-1")
    tabs = [WSClient(app) for _ in range(3)]
    ready = await tabs[0].connect(token, client_id="tab-0")
    for i, tab in enumerate(tabs[1:], 1):
        await tab.connect(token, conversation_id=ready["conversation_id"], last_seq=0, client_id=f"tab-{i}")
    requested = await ask_transfer(tabs[0])
    call_id = requested["call_id"]
    decisions = ["approve", "deny", "approve"]
    await asyncio.gather(*(tab.send({"type": "approval.respond", "call_id": call_id, "decision": d})
                           for tab, d in zip(tabs, decisions, strict=True)))
    resolved = []
    refusals = []
    for tab in tabs:
        frames = await tab.recv_until(finished)
        resolved += [f for f in frames if f["type"] == "approval.resolved"]
        refusals += [f for f in frames if f["type"] == "error"]
    # Every socket saw the one decision; the two others were refused with it.
    assert len({(f["seq"], f["decision"], f["by"]) for f in resolved}) == 1 and len(resolved) == 3
    winner = resolved[0]
    assert winner["by"] in ("tab-0", "tab-1", "tab-2")
    assert len(refusals) == 2
    assert {(r["code"], r["ref"], r["decision"]) for r in refusals} == {
        ("already_decided", call_id, winner["decision"])}
    approval = await database_sync_to_async(Approval.objects.get)(call_id=call_id)
    assert (approval.status, approval.decided_by) == (winner["decision"], winner["by"])
    for tab in tabs:
        await tab.drop()


async def test_only_a_socket_of_the_calls_conversation_can_decide(cluster, token, user, other_user):
    _, app = cluster("node-1")
    owner = WSClient(app)
    await owner.connect(token)
    requested = await ask_transfer(owner)
    respond = {"type": "approval.respond", "call_id": requested["call_id"], "decision": "approve"}
    stranger = WSClient(app)  # another user's socket
    await stranger.connect(await database_sync_to_async(access_for)(other_user))
    elsewhere = WSClient(app)  # the same user, another conversation
    await elsewhere.connect(token)
    for socket in (stranger, elsewhere):
        await socket.send(respond)
        assert await socket.recv() == {"type": "error", "code": "not_found",
                                       "detail": "no approval for this call in this conversation",
                                       "ref": requested["call_id"]}
    await owner.send({**respond, "call_id": "00000000-0000-0000-0000-000000000000"})
    assert (await owner.recv())["code"] == "not_found"
    await owner.send({**respond, "decision": "maybe"})
    assert (await owner.recv())["code"] == "bad_frame"
    approval = await database_sync_to_async(Approval.objects.get)(call_id=requested["call_id"])
    assert approval.status == "pending"
    for socket in (owner, stranger, elsewhere):
        await socket.drop()


async def test_an_approval_expires_and_the_run_goes_on_without_the_call(cluster, token, settings):
    settings.REALTIME_APPROVAL_TIMEOUT = 0.5
    _, app = cluster("node-1", sweep_interval=0.2)
    client = WSClient(app)
    await client.connect(token)
    requested = await ask_transfer(client)
    frames = sequenced(await client.recv_until(finished))
    kinds = [(f["type"], f.get("decision") or f.get("status")) for f in frames
             if f["type"] in ("approval.resolved", "agent.tool_result", "agent.tool_call")]
    assert kinds == [("approval.resolved", "expired"), ("agent.tool_result", "denied")]
    assert next(f for f in frames if f["type"] == "approval.resolved")["by"] == "timeout"
    assert frames[-1]["message"]["text"] == "transfer expired"
    # Too late: the approval stands expired.
    await client.send({"type": "approval.respond", "call_id": requested["call_id"], "decision": "approve"})
    assert (await client.recv())["decision"] == "expired"
    assert CALLS.made == []
    await client.drop()


def test_a_decision_after_the_approval_expired_finds_it_expired_even_before_any_sweep(user):
    conversation = services.create_conversation(user.pk)
    services.post_user_message(conversation.pk, "00000000-0000-0000-0000-0000000000a1", "transfer 1")
    claim = services.claim_next_run(conversation.pk, "node-a", lease_seconds=30)
    begun = services.begin_call(claim.conversation_id, claim.run_id, claim.fencing_token, step=0,
                                tool="demo.transfer", effect="once", arguments={"n": 1}, text_offset=0,
                                needs_approval=True)
    later = timezone.now() + timedelta(seconds=601)
    answer = services.resolve_approval(conversation.pk, begun.call.call_id, "approve", "tab-1", now=later)
    assert (answer.outcome, answer.decision) == ("already_decided", "expired")
    assert [e["type"] for e in answer.events] == ["approval.resolved", "agent.tool_result"]
    assert AgentRun.objects.get(pk=claim.run_id).status == "queued"


async def test_a_cancel_ends_a_waiting_run_and_its_approval(cluster, token):
    _, app = cluster("node-1")
    client = WSClient(app)
    await client.connect(token, client_id="tab-9")
    requested = await ask_transfer(client)
    await client.send({"type": "cancel", "run_id": requested["run_id"]})
    frames = sequenced(await client.recv_until(finished))
    assert [(f["type"], f.get("decision") or f.get("status") or f.get("error")) for f in frames] == [
        ("approval.resolved", "denied"), ("agent.tool_result", "denied"), ("agent.failed", "cancelled")]
    assert frames[0]["by"] == "tab-9" and frames[1]["error"] == "run cancelled"
    assert frames[2]["cancelled"] is True
    run = await database_sync_to_async(AgentRun.objects.get)(pk=requested["run_id"])
    assert run.status == "cancelled"
    call = await database_sync_to_async(ToolCall.objects.get)(pk=requested["call_id"])
    assert call.status == "denied"

    async def nothing_claimed():
        return await database_sync_to_async(AgentRun.objects.filter(status__in=AgentRun.UNFINISHED).count)() == 0

    await eventually(nothing_claimed, what="no unfinished run")
    assert CALLS.made == []
    await client.drop()
