"""Runs that become claimable together are claimed together: `services.claim_runs` claims many
conversations' runs and reads their contexts in two statements on PostgreSQL, keeping every
rule of `claim_next_run` (the ORM reference agrees), and the supervisor sends the claims that
arrive while one is under way in one call (issue 22: 500 answers starting together made 1,000
database calls for their claims and contexts)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from sessions_app import services
from sessions_app.models import AgentRun, Conversation, Event
from sessions_app.services import runs
from tests.support.waiting import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def _conversation(user, *texts: str) -> str:
    cid = str(services.create_conversation(user.pk).pk)
    for text in texts:
        services.post_user_message(cid, uuid.uuid4(), text)
    return cid


def _facts(outcome) -> list:
    """What a claim outcome says, ids named by what they belong to."""
    if outcome is None or isinstance(outcome, Exception):
        return [type(outcome).__name__]
    context = outcome.context
    return [outcome.fencing_token, outcome.takeover, [e["type"] for e in outcome.events],
            context.run_id == outcome.run_id, context.conversation_id == outcome.conversation_id,
            context.history, context.memory, context.partial_text, context.next_index, context.cancel_requested]


def test_many_conversations_claimed_at_once_each_as_claim_next_run_would(user, sql_or_orm):
    fresh = _conversation(user, "hello")
    busy = _conversation(user, "one")
    services.claim_next_run(busy, "node-b", 30)  # a live lease elsewhere: not claimable
    lapsed = _conversation(user, "two")
    first = services.claim_next_run(lapsed, "node-b", 30)
    services.append_run_deltas([services.DeltaWrite(lapsed, first.run_id, first.fencing_token, "Half ")], 30)
    AgentRun.objects.filter(pk=first.run_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    idle = _conversation(user)
    gone = _conversation(user, "bye")
    Conversation.objects.filter(pk=gone).delete()

    outcomes = services.claim_runs([fresh, busy, lapsed, idle, gone, fresh], "node-a", 30)

    assert [_facts(o) for o in outcomes] == [
        [1, False, ["agent.started"], True, True, [{"role": "user", "text": "hello"}], {}, "", 0, False],
        ["NoneType"],
        [2, True, [], True, True, [{"role": "user", "text": "two"}], {}, "Half ", 1, False],
        ["NoneType"],
        ["ConversationNotFound"],
        ["NoneType"],  # listed twice: claimed once
    ]
    assert list(AgentRun.objects.filter(conversation_id__in=[fresh, lapsed]).order_by("claims")
                .values_list("status", "node", "fencing_token", "claims")) == [
        ("running", "node-a", 1, 1), ("running", "node-a", 2, 2)]
    assert list(Event.objects.filter(conversation_id=fresh).order_by("seq").values_list("seq", "type")) == [
        (1, "message.created"), (2, "agent.started")]


def test_the_batched_claim_and_the_one_by_one_claim_store_the_same(user, monkeypatch):
    """The same conversations claimed by `claim_runs` and, in a twin set, by `claim_next_run`
    then `load_run_context`: the same outcomes and the same rows, ids aside."""
    def twin_sets():
        return [_conversation(user, "a"), _conversation(user, "b", "c")]

    batched_ids, single_ids = twin_sets(), twin_sets()
    batched = services.claim_runs(batched_ids, "node-a", 30)
    single = []
    for cid in single_ids:
        claim = services.claim_next_run(cid, "node-a", 30)
        single.append(runs.replace(claim, context=services.load_run_context(claim.run_id)))
    assert [_facts(o) for o in batched] == [_facts(o) for o in single]

    def rows(ids):
        return [list(AgentRun.objects.filter(conversation_id=cid).order_by("created_at").values_list(
            "status", "node", "fencing_token", "claims", "text")) for cid in ids]

    assert rows(batched_ids) == rows(single_ids)


def test_no_conversation_no_statement(user, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert services.claim_runs([], "node-a", 30) == []


def test_a_burst_of_claims_takes_two_statements_whatever_its_size(user, django_assert_num_queries):
    ids = [_conversation(user, f"m{i}") for i in range(12)]
    with django_assert_num_queries(2):  # the claims, the contexts
        outcomes = services.claim_runs(ids, "node-a", 30)
    assert all(o.context.history[0]["text"] == f"m{i}" for i, o in enumerate(outcomes))


class Quick:
    """An agent that answers at once."""

    async def stream(self, context):
        yield "ok"


async def test_kicks_arriving_while_a_claim_is_under_way_go_in_one_call(cluster, user, monkeypatch):
    node, _ = cluster("node-a", register=False, agent_factory=Quick, sweep_interval=60)
    # Not started: its sweeper would find the same runs and claim them beside the kicks.
    gate, entered = threading.Event(), threading.Event()
    batches: list[int] = []
    real = services.claim_runs

    def gated(conversation_ids, *args, **kwargs):
        batches.append(len(conversation_ids))
        entered.set()
        if len(batches) == 1:
            assert gate.wait(5), "the test never opened the gate"
        return real(conversation_ids, *args, **kwargs)

    monkeypatch.setattr(services, "claim_runs", gated)
    ids = await database_sync_to_async(lambda: [_conversation(user, f"m{i}") for i in range(10)])()
    node.supervisor.kick(ids[0])
    await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
    for cid in ids[1:]:
        node.supervisor.kick(cid)
    await eventually(lambda: node.supervisor.claims.waiting == 9, timeout=5, what="nine claims waiting")
    gate.set()

    async def all_completed():
        statuses = await database_sync_to_async(
            lambda: list(AgentRun.objects.filter(conversation_id__in=ids).values_list("status", flat=True)))()
        return statuses == ["completed"] * 10

    await eventually(all_completed, timeout=10, what="every run completed")
    assert batches[:2] == [1, 9], batches
    assert sum(batches) >= 10
