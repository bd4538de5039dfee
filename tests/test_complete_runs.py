"""Runs that end together are completed together: `services.complete_runs` completes many runs
in one statement on PostgreSQL, each as `complete_run` would (the ORM reference agrees; a lost
lease fails only its own run), and a node completes an answer right after the group commit of
its last text, beside the commit thread, with the runs that end meanwhile (issue 22)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from channels.db import database_sync_to_async

from realtime.infra.db import commit_executor
from sessions_app import services
from sessions_app.models import AgentRun, Conversation, Event, Message
from tests.support.waiting import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def _claimed(user, text: str, answer: str) -> services.ClaimedRun:
    cid = str(services.create_conversation(user.pk).pk)
    services.post_user_message(cid, uuid.uuid4(), text)
    claim = services.claim_next_run(cid, "node-a", 30)
    services.append_run_deltas([services.DeltaWrite(cid, claim.run_id, claim.fencing_token, answer)], 30)
    return claim


def _facts(outcome) -> list:
    if isinstance(outcome, Exception):
        return [type(outcome).__name__]
    return [(e["type"], e["seq"], e["message"]["text"]) for e in outcome.events]


def test_each_run_is_completed_as_if_alone_and_a_lost_lease_fails_only_its_run(user, sql_or_orm):
    one, two, lost, gone = (_claimed(user, f"q{i}", f"answer {i}") for i in range(4))
    Conversation.objects.filter(pk=gone.conversation_id).delete()

    outcomes = services.complete_runs([
        services.Completion(one.conversation_id, one.run_id, one.fencing_token, {"k": 1}),
        services.Completion(lost.conversation_id, lost.run_id, lost.fencing_token + 1, None),
        services.Completion(gone.conversation_id, gone.run_id, gone.fencing_token, None),
        services.Completion(two.conversation_id, two.run_id, two.fencing_token, None),
    ])

    assert [_facts(o) for o in outcomes] == [
        [("agent.completed", 4, "answer 0")], ["LeaseLost"], ["ConversationNotFound"],
        [("agent.completed", 4, "answer 1")]]
    assert [AgentRun.objects.get(pk=c.run_id).status for c in (one, two, lost)] == ["completed", "completed",
                                                                                     "running"]
    assert Conversation.objects.get(pk=one.conversation_id).agent_memory == {"k": 1}
    assert list(Message.objects.filter(conversation_id=two.conversation_id).order_by("seq")
                .values_list("seq", "role", "text")) == [(1, "user", "q1"), (4, "assistant", "answer 1")]
    assert list(Event.objects.filter(conversation_id=lost.conversation_id).values_list("type", flat=True)
                .order_by("seq")) == ["message.created", "agent.started", "agent.delta"]


def test_any_number_of_completions_is_one_statement(user, django_assert_num_queries):
    claims = [_claimed(user, "q", f"a{i}") for i in range(8)]
    with django_assert_num_queries(1):
        outcomes = services.complete_runs([services.Completion(c.conversation_id, c.run_id, c.fencing_token, None)
                                           for c in claims])
    assert [o.events[0]["message"]["text"] for o in outcomes] == [f"a{i}" for i in range(8)]
    with django_assert_num_queries(0):
        assert services.complete_runs([]) == []


class Silent:
    """An agent that ends at once without a word: its run's end is only its completion."""

    async def stream(self, context):
        return
        yield


async def test_runs_ending_together_are_completed_together_beside_the_commit_thread(cluster, user, monkeypatch):
    """The runs that end while a completion call is in flight are completed together in the
    next one, in the shared database pool: the commit thread goes on with the streams' text."""
    node, _ = cluster("node-a", register=False, agent_factory=Silent, sweep_interval=60)
    # Not started: its sweeper would find the same runs and claim them beside the kicks.
    gate, entered = threading.Event(), threading.Event()
    batches: list[int] = []
    threads: set[str] = set()
    real = services.complete_runs

    def gated(completions):
        batches.append(len(completions))
        threads.add(threading.current_thread().name)
        entered.set()
        if len(batches) == 1:
            assert gate.wait(5), "the test never opened the gate"
        return real(completions)

    monkeypatch.setattr(services, "complete_runs", gated)

    def conversations(n):
        ids = [str(services.create_conversation(user.pk).pk) for _ in range(n)]
        for cid in ids:
            services.post_user_message(cid, uuid.uuid4(), "hi")
        return ids

    first, *rest = await database_sync_to_async(conversations)(8)
    node.supervisor.kick(first)
    await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
    for cid in rest:
        node.supervisor.kick(cid)
    await eventually(lambda: len(node.supervisor.writer._to_complete) == 7, timeout=5,  # noqa: SLF001 - what waits is the point
                     what="seven runs waiting for the next completion call")
    gate.set()

    async def all_completed():
        statuses = await database_sync_to_async(
            lambda: list(AgentRun.objects.filter(conversation_id__in=[first, *rest])
                         .values_list("status", flat=True)))()
        return statuses == ["completed"] * 8

    await eventually(all_completed, timeout=10, what="every run completed")
    assert batches == [1, 7]
    commit_thread = commit_executor()._thread_name_prefix  # noqa: SLF001 - the thread it must not hold
    assert not any(name.startswith(commit_thread) for name in threads), threads


class TwoWords:
    """The first word is written at once (the writer is idle); the second waits for the window."""

    async def stream(self, context):
        yield "first "
        await asyncio.sleep(0.01)
        yield "last"


async def test_an_answer_is_completed_right_after_the_group_commit_of_its_last_text(cluster, user, monkeypatch):
    """Not a window later: the run does not wait for its last text's commit before it asks for
    its completion, and the completion is asked for as soon as that commit is published."""
    node, _ = cluster("node-a", register=False, agent_factory=TwoWords, sweep_interval=60, coalesce_ms=1000)
    calls: list[tuple[str, list[str], float]] = []
    real_append, real_complete = services.append_run_deltas, services.complete_runs

    def appended(writes, lease_seconds=None):
        calls.append(("deltas", [w.text for w in writes], time.monotonic()))
        return real_append(writes, lease_seconds)

    def completed(completions):
        calls.append(("completions", [c.run_id for c in completions], time.monotonic()))
        return real_complete(completions)

    monkeypatch.setattr(services, "append_run_deltas", appended)
    monkeypatch.setattr(services, "complete_runs", completed)

    def conversation():
        cid = str(services.create_conversation(user.pk).pk)
        services.post_user_message(cid, uuid.uuid4(), "hi")
        return cid

    cid = await database_sync_to_async(conversation)()
    node.supervisor.kick(cid)

    async def run_completed():
        return await database_sync_to_async(
            lambda: AgentRun.objects.filter(conversation_id=cid, status="completed").first())()

    run = await eventually(run_completed, timeout=10, what="the run completed")
    assert [(kind, what) for kind, what, _ in calls] == [
        ("deltas", ["first "]), ("deltas", ["last"]), ("completions", [str(run.pk)])]
    assert calls[2][2] - calls[1][2] < 1.0  # within the 1 s window: right after the commit
    types = await database_sync_to_async(lambda: list(
        Event.objects.filter(conversation_id=cid).order_by("seq").values_list("type", flat=True)))()
    assert types == ["message.created", "agent.started", "agent.delta", "agent.delta", "agent.completed"]
