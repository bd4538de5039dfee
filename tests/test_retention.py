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
    _age(conversation, 40, seqs=[4])
    result = services.prune_events()
    assert (result.acked_deleted, result.unacked_deleted) == (0, 1)
    assert list(Event.objects.order_by("seq").values_list("seq", flat=True)) == [3, 5, 6]
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
