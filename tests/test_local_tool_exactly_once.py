"""A `local` tool writes Tether's database inside the transaction that records its result
(services.run_local_call): its write and its result commit together, so it happens exactly
once, or not at all. A tool that fails takes back only its own writes; a run that dies before
the commit leaves nothing, and its continuation writes once."""

from __future__ import annotations

import uuid

import pytest
from django.db import DatabaseError

from sessions_app import services
from sessions_app.models import DemoEffect, Event, ToolCall

pytestmark = pytest.mark.django_db(transaction=True)


def claimed(user) -> services.ClaimedRun:
    conversation = services.create_conversation(user.pk)
    services.post_user_message(conversation.pk, uuid.uuid4(), "effect 1")
    return services.claim_next_run(conversation.pk, "node-a", lease_seconds=30)


def run_local(claim, fn, step: int = 0) -> services.CallWritten:
    return services.run_local_call(
        claim.conversation_id, claim.run_id, claim.fencing_token, step=step, tool="demo.effect",
        arguments={"n": step + 1}, text_offset=0, fn=fn, timeout_seconds=5,
    )


def write(ctx, n):
    services.record_demo_effect(ctx.conversation_id, ctx.run_id, ctx.call_id, n)
    return {"n": n}


def events(claim) -> list[tuple[str, str | None]]:
    rows = Event.objects.filter(conversation_id=claim.conversation_id, type__startswith="agent.tool")
    return [(t, p.get("status")) for t, p in rows.order_by("seq").values_list("type", "payload")]


def test_the_write_the_result_and_both_events_commit_together(user):
    claim = claimed(user)
    written = run_local(claim, write)
    assert [e["type"] for e in written.events] == ["agent.tool_call", "agent.tool_result"]
    assert written.events[0]["effect"] == "local" and written.events[1]["result"] == {"n": 1}
    assert DemoEffect.objects.count() == 1
    assert ToolCall.objects.get().status == "ok"


def test_a_failing_tool_takes_back_its_own_writes_and_its_result_is_an_error(user):
    claim = claimed(user)

    def write_then_fail(ctx, n):
        write(ctx, n)
        raise ValueError("no such account")

    written = run_local(claim, write_then_fail)
    assert written.events[1]["status"] == "error" and written.events[1]["error"] == "ValueError: no such account"
    assert DemoEffect.objects.count() == 0
    assert events(claim) == [("agent.tool_call", None), ("agent.tool_result", "error")]


def test_a_run_that_dies_before_the_commit_leaves_nothing_and_its_continuation_writes_once(user, monkeypatch):
    """The crash: the tool wrote, then the transaction failed before its commit (the node died
    in the middle). Nothing of the call exists; the continuation makes it, once."""
    claim = claimed(user)
    finish = services.journal.finish_call

    def dies_before_commit(*args, **kwargs):
        finish(*args, **kwargs)
        raise DatabaseError("server closed the connection unexpectedly")

    monkeypatch.setattr(services.journal, "finish_call", dies_before_commit)
    with pytest.raises(DatabaseError):
        run_local(claim, write)
    monkeypatch.setattr(services.journal, "finish_call", finish)
    assert (DemoEffect.objects.count(), ToolCall.objects.count(), events(claim)) == (0, 0, [])
    run_local(claim, write)
    assert DemoEffect.objects.count() == 1
    # Recorded now: it can never run again (the runtime hands its recorded result back instead).
    with pytest.raises(services.ServiceError, match="cannot run again"):
        run_local(claim, write)
    assert DemoEffect.objects.count() == 1
