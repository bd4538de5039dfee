"""Retention: acknowledged events go after the short window, unacknowledged ones only after
the long one, recent ones stay, and numbering never restarts."""

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from sessions_app import services
from sessions_app.models import Conversation, Event

pytestmark = pytest.mark.django_db


def _log(user, n: int) -> Conversation:
    conversation = services.create_conversation(user.pk)
    for i in range(n):
        services.append_event(
            conversation.pk, "message.created", {"message": {"id": str(uuid.uuid4()), "text": str(i)}}
        )
    return conversation


def _age(conversation: Conversation, days: float, seqs=None) -> None:
    qs = Event.objects.filter(conversation=conversation)
    if seqs is not None:
        qs = qs.filter(seq__in=seqs)
    qs.update(created_at=timezone.now() - timedelta(days=days))


def test_windows(user, settings):
    settings.REALTIME_RETENTION_ACKED_DAYS = 7
    settings.REALTIME_RETENTION_UNACKED_DAYS = 30
    conversation = _log(user, 6)
    Conversation.objects.filter(pk=conversation.pk).update(acked_seq=3)
    _age(conversation, 10, seqs=[1, 2, 4, 5])  # 1,2 acked+old; 4,5 unacked+old; 3,6 recent
    result = services.prune_events()
    assert (result.acked_deleted, result.unacked_deleted) == (2, 0)
    assert list(Event.objects.order_by("seq").values_list("seq", flat=True)) == [3, 4, 5, 6]
    # 3 is recent: nothing above it may go, however old (only a prefix of the log is pruned).
    _age(conversation, 40, seqs=[4])
    result = services.prune_events()
    assert (result.acked_deleted, result.unacked_deleted) == (0, 0)
    assert list(Event.objects.order_by("seq").values_list("seq", flat=True)) == [3, 4, 5, 6]
    # 3 acked and past the acked window, 4 past the unacked window; 5 is unacked and younger.
    _age(conversation, 10, seqs=[3])
    result = services.prune_events()
    assert (result.acked_deleted, result.unacked_deleted) == (1, 1)
    assert list(Event.objects.order_by("seq").values_list("seq", flat=True)) == [5, 6]
    # Numbering continues after pruning: a seq is never reused.
    event = services.append_event(conversation.pk, "message.created", {"message": {"id": "x", "text": "new"}})
    assert event.seq == 7


def test_command(user):
    conversation = _log(user, 3)
    _age(conversation, 100)
    out = StringIO()
    call_command("prune_events", "--acked-days", "1", "--unacked-days", "50", stdout=out)
    assert out.getvalue().strip() == "pruned 0 acknowledged and 3 unacknowledged events"
    assert not Event.objects.exists()


def test_an_inverted_pair_is_never_pruned_through(user):
    """created_at is not monotonic in seq in logs written by nodes with skewed clocks (or
    before issue 9): seq 3 is stamped after the cutoff, seq 4 before it. A time cutoff alone
    deleted 4 and kept 3 (kept [3, 5]): a hole that a client resuming from 2 cannot get past."""
    conversation = _log(user, 5)
    _age(conversation, 40, seqs=[1, 2, 4])
    _age(conversation, 20, seqs=[3, 5])
    result = services.prune_events(acked_days=7, unacked_days=30)
    assert (result.acked_deleted, result.unacked_deleted) == (0, 2)
    kept = list(Event.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True))
    assert kept == [3, 4, 5]


def test_pruning_is_per_conversation(user):
    """One conversation's young event does not hold back another conversation's pruning."""
    old, young = _log(user, 3), _log(user, 3)
    _age(old, 40)
    _age(young, 40, seqs=[1, 3])
    result = services.prune_events(acked_days=7, unacked_days=30)
    assert (result.acked_deleted, result.unacked_deleted) == (0, 4)
    assert not Event.objects.filter(conversation=old).exists()
    assert list(Event.objects.filter(conversation=young).values_list("seq", flat=True)) == [2, 3]


def test_created_at_grows_with_seq_even_when_a_node_clock_lags(user, monkeypatch):
    """Every append path stamps its events under the conversation lock and never before the
    previous append, so a node whose clock is behind (or steps back) cannot stamp seq N+1
    earlier than seq N."""
    conversation = services.create_conversation(user.pk)
    posted = services.post_user_message(conversation.pk, uuid.uuid4(), "hi")
    claim = services.claim_next_run(conversation.pk, "node-fast", lease_seconds=30)
    lagging = timezone.now() - timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: lagging)
    services.append_run_deltas([services.DeltaWrite(claim.conversation_id, claim.run_id, claim.fencing_token, "a")])
    services.append_run_delta(claim.conversation_id, claim.run_id, claim.fencing_token, "b")
    services.complete_run(claim.conversation_id, claim.run_id, claim.fencing_token, None)
    services.append_event(conversation.pk, "note", {})
    stamps = list(Event.objects.filter(conversation=conversation).order_by("seq").values_list("seq", "created_at"))
    assert [seq for seq, _ in stamps] == list(range(1, posted.seq + 6))
    created = [at for _, at in stamps]
    assert created == sorted(created), stamps
