"""A stored ack (services.record_ack) is cumulative: it never moves back and never passes the
log's end, and it stamps the row's last_seen_at. On PostgreSQL it is one plain statement
(issue 22); the ORM expression is the reference and both run here."""

from __future__ import annotations

import uuid

import pytest

from sessions_app import services
from sessions_app.models import Connection, Conversation
from sessions_app.services import connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["sql", "orm"])
def implementation(request, monkeypatch):
    if request.param == "orm":
        monkeypatch.setattr(connections, "record_ack_sql", connections.record_ack_orm)
    return request.param


def test_an_ack_only_moves_forward_and_never_past_the_log(user, implementation):
    conversation = services.create_conversation(user.pk)
    for i in range(5):
        services.append_event(conversation.pk, "note", {"i": i})
    row = Connection.objects.create(user=user, conversation=conversation, client_id="c", channel_name="ws.a",
                                    node="node-1")
    seen = row.last_seen_at

    services.record_ack(row.pk, conversation.pk, 3)
    after_three = Connection.objects.get(pk=row.pk)
    services.record_ack(row.pk, conversation.pk, 2)  # late, out of order: ignored
    after_two = Connection.objects.get(pk=row.pk).acked_seq
    services.record_ack(row.pk, conversation.pk, 99)  # beyond the log: capped at its end
    capped = Connection.objects.get(pk=row.pk).acked_seq

    assert (after_three.acked_seq, after_two, capped) == (3, 3, 5)
    assert after_three.last_seen_at > seen
    assert Conversation.objects.get(pk=conversation.pk).acked_seq == 0  # the conversation follows at close


def test_an_ack_for_an_unknown_row_changes_nothing(user, implementation):
    conversation = services.create_conversation(user.pk)
    services.record_ack(uuid.uuid4(), conversation.pk, 1)
    assert not Connection.objects.exists()
