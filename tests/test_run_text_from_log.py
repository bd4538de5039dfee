"""A run's committed text is `AgentRun.text` followed by its deltas in the log from `text_upto`
on (services.committed_text, `tether_run_text`): the delta group commit appends events and
never rewrites the text (issue 22: the rewrite made every commit cost more as answers grew).
The text is folded into the row where the run stops streaming: completion, failure, a wait for
an approval. Each test runs on the plain-SQL path and on the ORM reference (`sql_or_orm`)."""

import uuid
from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.utils import timezone

from sessions_app import services
from sessions_app.models import AgentRun, Event, Message

pytestmark = pytest.mark.django_db(transaction=True)


def _claimed(user, text: str = "hi") -> services.ClaimedRun:
    conversation = services.create_conversation(user.pk)
    services.post_user_message(conversation.pk, uuid.uuid4(), text)
    return services.claim_next_run(conversation.pk, "node-1", lease_seconds=30)


def _append(claim: services.ClaimedRun, *pieces: str) -> None:
    for piece in pieces:
        outcome = services.append_run_deltas(
            [services.DeltaWrite(claim.conversation_id, claim.run_id, claim.fencing_token, piece)], 30)
        assert isinstance(outcome[claim.run_id], list), outcome


def _row(run_id: str) -> tuple[str, int, int]:
    run = AgentRun.objects.get(pk=run_id)
    return run.text, run.text_upto, run.next_index


def _committed(run_id: str) -> str:
    return services.committed_text(AgentRun.objects.get(pk=run_id))


def _completed_text(claim: services.ClaimedRun) -> str:
    """Completes the run; the text of its assistant message."""
    done = services.complete_run(claim.conversation_id, claim.run_id, claim.fencing_token, None)
    return done.events[0]["message"]["text"]


def test_the_group_commit_appends_the_deltas_and_leaves_the_runs_text_alone(user, sql_or_orm):
    claim = _claimed(user)
    _append(claim, "one ", "two ", "three ")
    assert _row(claim.run_id) == ("", 0, 3)
    assert _committed(claim.run_id) == "one two three "


def test_a_takeover_continues_from_the_text_read_from_the_log(user, sql_or_orm):
    claim = _claimed(user)
    _append(claim, "one ", "two ")
    assert services.release_run(claim.run_id, claim.fencing_token)
    again = services.claim_runs([claim.conversation_id], "node-2", 30)[0]
    assert (again.run_id, again.takeover) == (claim.run_id, True)
    context = again.context or services.load_run_context(again.run_id)
    assert (context.partial_text, context.next_index) == ("one two ", 2)


def test_completion_writes_the_text_once_into_the_run_and_the_message(user, sql_or_orm):
    claim = _claimed(user)
    _append(claim, "one ", "two")
    assert _completed_text(claim) == "one two"
    assert _row(claim.run_id) == ("one two", 2, 2)
    assert Message.objects.get(conversation_id=claim.conversation_id, role="assistant").text == "one two"


def test_a_failed_run_keeps_what_it_said_in_its_row(user, sql_or_orm):
    claim = _claimed(user)
    _append(claim, "half ")
    services.fail_run(claim.conversation_id, claim.run_id, claim.fencing_token, "boom")
    assert _row(claim.run_id) == ("half ", 1, 1)


def test_a_run_that_waits_for_a_person_is_folded_and_goes_on_from_there(user, sql_or_orm):
    claim = _claimed(user, "transfer 1")
    _append(claim, "asking ")
    begun = services.begin_call(claim.conversation_id, claim.run_id, claim.fencing_token, step=0,
                                tool="demo.transfer", effect="once", arguments={"n": 1}, text_offset=7,
                                needs_approval=True)
    assert begun.waiting
    assert _row(claim.run_id) == ("asking ", 1, 1)
    services.resolve_approval(claim.conversation_id, begun.call.call_id, "deny", "tab-1")
    again = services.claim_runs([claim.conversation_id], "node-2", 30)[0]
    _append(again, "denied")
    assert (_row(claim.run_id), _committed(claim.run_id)) == (("asking ", 1, 2), "asking denied")
    assert services.load_journal(claim.run_id).text == "asking denied"
    assert _completed_text(again) == "asking denied"


def test_retention_keeps_the_deltas_an_unfinished_run_still_reads_its_text_from(user):
    claim = _claimed(user)
    _append(claim, "one ", "two ")
    Event.objects.filter(conversation_id=claim.conversation_id).update(created_at=timezone.now() - timedelta(days=60))
    services.prune_events()
    assert _committed(claim.run_id) == "one two "
    services.complete_run(claim.conversation_id, claim.run_id, claim.fencing_token, None)
    Event.objects.filter(conversation_id=claim.conversation_id).update(created_at=timezone.now() - timedelta(days=60))
    services.prune_events()
    assert not Event.objects.filter(conversation_id=claim.conversation_id).exists()
    assert AgentRun.objects.get(pk=claim.run_id).text == "one two "


def test_runs_written_before_the_migration_keep_their_whole_text(user):
    claim = _claimed(user)
    # A row as the earlier group commit left it: the whole text in the row, nothing folded.
    AgentRun.objects.filter(pk=claim.run_id).update(text="one two ", next_index=2, text_upto=0)
    with connection.schema_editor() as editor:
        import_module("sessions_app.migrations.0011_run_text_from_log").forward(django_apps, editor)
    assert _row(claim.run_id) == ("one two ", 2, 2)
    assert _committed(claim.run_id) == "one two "


@pytest.mark.postgres
def test_between_the_two_migrations_a_node_of_the_earlier_release_reads_the_whole_text_in_the_row(user):
    """The rolling deploy's state: 0011 applied, 0012 not yet. An earlier node reads
    `AgentRun.text` directly (its context, its journal) when it takes a run over; this release
    reads `committed_text`: both must find the whole text."""
    expand = import_module("sessions_app.migrations.0011_run_text_from_log")
    with connection.cursor() as cursor:
        cursor.execute(expand.append_deltas_sql(rewrite_text=True))
    try:
        claim = _claimed(user)
        _append(claim, "one ", "two ")
        assert (_row(claim.run_id), _committed(claim.run_id)) == (("one two ", 2, 2), "one two ")
        assert services.load_run_context(claim.run_id).partial_text == "one two "
        assert _completed_text(claim) == "one two "
    finally:
        with connection.cursor() as cursor:
            cursor.execute(expand.append_deltas_sql(rewrite_text=False))
