"""The tool journal (sessions_app/services/tools.py): a call is recorded before it starts and
announced with it, ends with exactly one result, and only the run's holder writes: a node that
lost its lease (or whose run was cancelled) never starts a call, and its late outcome is
refused. A call's id is the same on every claim."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from sessions_app import services
from sessions_app.models import AgentRun, Event, ToolCall

pytestmark = pytest.mark.django_db


def claimed(user, text: str = "effect 1", node: str = "node-a") -> services.ClaimedRun:
    conversation = services.create_conversation(user.pk)
    services.post_user_message(conversation.pk, uuid.uuid4(), text)
    return services.claim_next_run(conversation.pk, node, lease_seconds=30)


def begin(claim, step: int = 0, *, effect: str = "idempotent", approval: bool = False, token: int | None = None):
    return services.begin_call(
        claim.conversation_id, claim.run_id, claim.fencing_token if token is None else token, step=step,
        tool="demo.effect", effect=effect, arguments={"n": step + 1}, text_offset=0, needs_approval=approval,
    )


def log_types(claim) -> list[str]:
    events = Event.objects.filter(conversation_id=claim.conversation_id).order_by("seq")
    return list(events.values_list("type", flat=True))


def test_a_call_is_recorded_started_and_announced_then_ends_with_one_result(user):
    claim = claimed(user)
    begun = begin(claim)
    call_id = services.call_id_for(claim.run_id, 0)
    assert begun.call.call_id == call_id and begun.fencing_token == claim.fencing_token
    assert [e["type"] for e in begun.events] == ["agent.tool_call"]
    assert begun.events[0] | {"seq": 0} == {
        "type": "agent.tool_call", "seq": 0, "run_id": claim.run_id, "call_id": call_id, "tool": "demo.effect",
        "arguments": {"n": 1}, "effect": "idempotent"}
    row = ToolCall.objects.get(pk=call_id)
    assert (row.status, row.attempts, row.started_token) == ("started", 1, claim.fencing_token)
    finished = services.finish_call(claim.conversation_id, claim.run_id, claim.fencing_token, call_id, "ok", {"n": 1})
    assert finished.events[0] | {"seq": 0} == {
        "type": "agent.tool_result", "seq": 0, "run_id": claim.run_id, "call_id": call_id, "status": "ok",
        "result": {"n": 1}}
    with pytest.raises(services.LeaseLost):  # one result per call: a second outcome is refused
        services.finish_call(claim.conversation_id, claim.run_id, claim.fencing_token, call_id, "error", None, "x")
    assert log_types(claim) == ["message.created", "agent.started", "agent.tool_call", "agent.tool_result"]


def test_the_call_id_is_the_same_for_the_same_run_step_and_retry_on_any_node():
    run = uuid.uuid4()
    assert services.call_id_for(run, 3) == services.call_id_for(str(run), 3, 0)
    assert len({services.call_id_for(run, 3), services.call_id_for(run, 4), services.call_id_for(run, 3, 1),
                services.call_id_for(uuid.uuid4(), 3)}) == 4


def test_a_stale_owner_starts_no_call_and_writes_nothing(user):
    claim = claimed(user)
    AgentRun.objects.filter(pk=claim.run_id).update(fencing_token=claim.fencing_token + 1)  # another node took it
    with pytest.raises(services.LeaseLost):
        begin(claim)
    assert ToolCall.objects.count() == 0
    assert log_types(claim) == ["message.created", "agent.started"]


def test_an_owner_whose_lease_lapsed_starts_no_call_even_if_nobody_took_the_run_yet(user):
    """A paused node wakes up with its token still current: it must not start a call under a
    lease any other node may claim at any moment."""
    claim = claimed(user)
    AgentRun.objects.filter(pk=claim.run_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(services.LeaseLost, match="lapsed"):
        begin(claim)
    assert ToolCall.objects.count() == 0


def test_a_run_whose_cancel_was_asked_starts_no_call(user):
    claim = claimed(user)
    services.request_cancel(claim.conversation_id, claim.run_id)
    with pytest.raises(services.RunCancelled):
        begin(claim)
    assert ToolCall.objects.count() == 0


def test_a_late_outcome_from_a_node_that_lost_the_run_is_refused(user):
    claim = claimed(user)
    call_id = begin(claim).call.call_id
    AgentRun.objects.filter(pk=claim.run_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    again = services.claim_next_run(claim.conversation_id, "node-b", lease_seconds=30)
    assert again.fencing_token == claim.fencing_token + 1 and again.takeover
    with pytest.raises(services.LeaseLost):
        services.finish_call(claim.conversation_id, claim.run_id, claim.fencing_token, call_id, "ok", {})
    restarted = services.start_call(again.conversation_id, again.run_id, again.fencing_token, call_id)
    assert restarted.call.call_id == call_id and restarted.events == []  # announced once, at its first start
    row = ToolCall.objects.get(pk=call_id)
    assert (row.attempts, row.started_token) == (2, again.fencing_token)
    # The new owner's outcome is the one result.
    services.finish_call(again.conversation_id, again.run_id, again.fencing_token, call_id, "ok", {"n": 1})
    assert log_types(claim).count("agent.tool_result") == 1


@pytest.mark.parametrize("effect", ["once", "local"])
def test_a_once_or_local_call_is_never_started_twice(user, effect):
    claim = claimed(user)
    call_id = begin(claim, effect=effect).call.call_id
    with pytest.raises(services.ServiceError, match="cannot be started again"):
        services.start_call(claim.conversation_id, claim.run_id, claim.fencing_token, call_id)


def test_a_failed_run_gives_each_open_call_its_one_result(user):
    claim = claimed(user)
    idem = begin(claim, 0).call.call_id
    once = begin(claim, 1, effect="once").call.call_id
    services.fail_run(claim.conversation_id, claim.run_id, claim.fencing_token, "agent did not finish within 1 s")
    results = {
        e.payload["call_id"]: (e.payload["status"], e.payload["error"])
        for e in Event.objects.filter(conversation_id=claim.conversation_id, type="agent.tool_result")
    }
    assert results == {idem: ("error", "run ended: agent did not finish within 1 s"),
                       once: ("unknown", "outcome unknown: run ended: agent did not finish within 1 s")}
    assert log_types(claim)[-1] == "agent.failed"


def test_a_large_result_is_kept_whole_in_the_journal_and_truncated_on_the_wire(user, settings):
    settings.REALTIME_TOOL_RESULT_MAX_BYTES = 100
    claim = claimed(user)
    call_id = begin(claim).call.call_id
    big = {"blob": "x" * 500}
    event = services.finish_call(claim.conversation_id, claim.run_id, claim.fencing_token, call_id, "ok", big).events[0]
    assert event["truncated"] is True and "result" not in event
    assert ToolCall.objects.get(pk=call_id).result == big
