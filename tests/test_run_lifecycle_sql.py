"""A run's life in one round trip each on PostgreSQL (migration 0010, issue 22) keeps every rule of
the ORM reference: each case runs on both, and what the services return and what the database
holds afterwards are the same, ids and clocks aside."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from sessions_app import services
from sessions_app.models import AgentRun, Conversation, Event, Message
from sessions_app.services import event_log, runs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture(params=["sql", "orm"])
def implementation(request, monkeypatch):
    if request.param == "orm":
        monkeypatch.setattr(event_log, "post_user_message_in_one_trip", event_log.post_user_message_orm)
        monkeypatch.setattr(runs, "claim_next_run_in_one_trip", runs.claim_next_run_orm)
        monkeypatch.setattr(runs, "load_run_context_raw", runs.load_run_context_orm)
        monkeypatch.setattr(runs, "complete_run_in_one_trip", runs.complete_run_orm)
    return request.param


def _names(conversation: Conversation) -> dict[str, str]:
    """Stable names for the ids of a conversation's messages and runs, in seq order."""
    names = {str(conversation.pk): "conv"}
    for i, message in enumerate(Message.objects.filter(conversation=conversation).order_by("seq")):
        names[str(message.pk)] = f"message{i}"
        names[str(message.client_msg_id)] = f"client{i}"
    for i, run in enumerate(AgentRun.objects.filter(conversation=conversation).order_by("created_at")):
        names[str(run.pk)] = f"run{i}"
    return names


def _named(value, names: dict[str, str]):
    if isinstance(value, dict):
        return {k: _named(v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_named(v, names) for v in value]
    if isinstance(value, uuid.UUID):
        value = str(value)
    return names.get(value, value) if isinstance(value, str) else value


def _state(conversation: Conversation) -> dict:
    names = _names(conversation)
    conversation.refresh_from_db()
    events = list(Event.objects.filter(conversation=conversation).order_by("seq"))
    stamps = [e.created_at for e in events]
    return _named({
        "conversation": [conversation.title, conversation.last_seq, conversation.agent_memory,
                         conversation.updated_at >= stamps[-1] if stamps else True],
        "events": [[e.seq, e.type, e.payload, e.run_id] for e in events],
        "created_at grows with seq": stamps == sorted(stamps),
        "messages": list(Message.objects.filter(conversation=conversation).order_by("seq")
                         .values_list("seq", "role", "text", "client_msg_id")),
        "runs": [[*row[:8], *(stamp is None for stamp in row[8:])]
                 for row in AgentRun.objects.filter(conversation=conversation).order_by("created_at").values_list(
                     "message_id", "status", "node", "fencing_token", "claims", "text", "next_index", "error",
                     "started_at", "finished_at", "lease_expires_at")],
    }, names)


def _scenario(user) -> dict:
    """One answered message, a resend, a second message claimed, lost and taken over."""
    conversation = services.create_conversation(user.pk)
    cid = str(conversation.pk)
    seen: list = []
    first_id, second_id = uuid.uuid4(), uuid.uuid4()
    posted = services.post_user_message(cid, first_id, "  Plan   my\n trip to Lisbon  ")
    seen.append(["posted", posted.seq, posted.duplicate, posted.events])
    again = services.post_user_message(cid, first_id, "  Plan   my\n trip to Lisbon  ")
    seen.append(["again", again.seq, again.duplicate, again.message_id == posted.message_id,
                 again.run_id == posted.run_id, again.events])
    claim = services.claim_next_run(cid, "node-a", 30)
    seen.append(["claim", claim.fencing_token, claim.takeover, claim.events, claim.elapsed_seconds < 1])
    seen.append(["busy", services.claim_next_run(cid, "node-b", 30)])
    context = services.load_run_context(claim.run_id)
    seen.append(["context", context.history, context.memory, context.partial_text, context.next_index,
                 context.cancel_requested])
    services.append_run_deltas([services.DeltaWrite(cid, claim.run_id, claim.fencing_token, "Sure: ")], 30)
    with pytest.raises(services.LeaseLost):
        services.complete_run(cid, claim.run_id, claim.fencing_token + 1, None)
    done = services.complete_run(cid, claim.run_id, claim.fencing_token, {"city": "Lisbon"})
    seen.append(["completed", done.events])

    second = services.post_user_message(cid, second_id, "And Porto?")
    seen.append(["second", second.seq, second.events])
    first_claim = services.claim_next_run(cid, "node-a", 30)
    services.append_run_deltas([services.DeltaWrite(cid, first_claim.run_id, first_claim.fencing_token, "Por")], 30)
    AgentRun.objects.filter(pk=first_claim.run_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    takeover = services.claim_next_run(cid, "node-b", 30)
    seen.append(["takeover", takeover.fencing_token, takeover.takeover, takeover.events])
    context = services.load_run_context(takeover.run_id)
    seen.append(["context", context.history, context.memory, context.partial_text, context.next_index])
    with pytest.raises(services.LeaseLost):
        services.complete_run(cid, first_claim.run_id, first_claim.fencing_token, None)
    services.complete_run(cid, takeover.run_id, takeover.fencing_token, None)
    seen.append(["idle", services.claim_next_run(cid, "node-a", 30)])
    names = _names(conversation)
    return {"returned": _named(seen, names), "database": _state(conversation)}


def test_a_runs_life_keeps_every_rule(user, implementation):
    """The scenario's facts on each implementation (both agreeing on something wrong fails)."""
    got = _scenario(user)
    db = got["database"]
    assert db["conversation"] == ["Plan my", 8, {"city": "Lisbon"}, True]
    assert [e[1] for e in db["events"]] == [
        "message.created", "agent.started", "agent.delta", "agent.completed",
        "message.created", "agent.started", "agent.delta", "agent.completed"]
    assert db["events"][3][2] == {"run_id": "run0", "message": {"id": "message1", "role": "assistant",
                                                                "text": "Sure: "}}
    assert db["created_at grows with seq"]
    assert db["messages"] == [[1, "user", "  Plan   my\n trip to Lisbon  ", "client0"],
                              [4, "assistant", "Sure: ", None],
                              [5, "user", "And Porto?", "client2"],
                              [8, "assistant", "Por", None]]
    assert db["runs"] == [["message0", "completed", "node-a", 1, 1, "Sure: ", 1, "", False, False, True],
                          ["message2", "completed", "node-b", 2, 2, "Por", 1, "", False, False, True]]
    returned = got["returned"]
    assert returned[1] == ["again", 1, True, True, True, []]
    assert returned[3] == ["busy", None]
    assert returned[4] == ["context", [{"role": "user", "text": "  Plan   my\n trip to Lisbon  "}], {}, "", 0, False]
    assert returned[7][:3] == ["takeover", 2, True] and returned[7][3] == []
    assert returned[8] == ["context", [{"role": "user", "text": "  Plan   my\n trip to Lisbon  "},
                                       {"role": "assistant", "text": "Sure: "}, {"role": "user", "text": "And Porto?"}],
                           {"city": "Lisbon"}, "Por", 1]
    assert returned[-1] == ["idle", None]


def test_the_functions_and_the_orm_reference_agree_on_everything(user, monkeypatch):
    """The same scenario on each: what they return and what they store are the same."""
    sql = _scenario(user)
    monkeypatch.setattr(event_log, "post_user_message_in_one_trip", event_log.post_user_message_orm)
    monkeypatch.setattr(runs, "claim_next_run_in_one_trip", runs.claim_next_run_orm)
    monkeypatch.setattr(runs, "load_run_context_raw", runs.load_run_context_orm)
    monkeypatch.setattr(runs, "complete_run_in_one_trip", runs.complete_run_orm)
    orm = _scenario(user)
    assert sql == orm
    assert connection.vendor == "postgresql"


def test_a_deleted_conversation_is_not_found_and_an_unknown_run_does_not_exist(user, implementation):
    conversation = services.create_conversation(user.pk)
    cid = str(conversation.pk)
    services.post_user_message(cid, uuid.uuid4(), "hi")
    claim = services.claim_next_run(cid, "node-a", 30)
    Conversation.objects.filter(pk=cid).delete()
    with pytest.raises(services.ConversationNotFound):
        services.post_user_message(cid, uuid.uuid4(), "hi")
    with pytest.raises(services.ConversationNotFound):
        services.claim_next_run(cid, "node-a", 30)
    with pytest.raises(services.ConversationNotFound):
        services.complete_run(cid, claim.run_id, claim.fencing_token, None)
    with pytest.raises(AgentRun.DoesNotExist):
        services.load_run_context(claim.run_id)


def test_a_run_waiting_for_a_person_holds_back_the_claim(user, implementation):
    conversation = services.create_conversation(user.pk)
    cid = str(conversation.pk)
    services.post_user_message(cid, uuid.uuid4(), "one")
    services.post_user_message(cid, uuid.uuid4(), "two")
    AgentRun.objects.filter(conversation_id=cid, message__seq=1).update(status=AgentRun.Status.WAITING)
    assert services.claim_next_run(cid, "node-a", 30) is None
