"""Closing a connection row (services.close_connection): the first close stamps it (code,
reason, closed_at, last_seen_at) and returns True; a later close returns False and changes only
delivered_seq, which never moves back; either way the conversation's acked_seq moves up to the
best ack of its connections. On PostgreSQL it is two plain statements (issue 22: the ORM's cost
the node 3.9 ms of CPU per close); the ORM version is the reference and both run here, with
the stored rows compared."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection as db_connection

from sessions_app import services
from sessions_app.models import Connection, Conversation
from sessions_app.services import connections

pytestmark = pytest.mark.django_db(transaction=True)

COLUMNS = ("closed_at", "close_code", "close_reason", "delivered_seq", "acked_seq", "last_seen_at")


@pytest.fixture(params=["sql", "orm"])
def implementation(request, monkeypatch):
    if request.param == "orm":
        monkeypatch.setattr(connections, "close_connection_sql", connections.close_connection_orm)
    elif db_connection.vendor != "postgresql":
        pytest.skip("the plain statements are PostgreSQL's")
    return request.param


def _open(user, conversation, client_id: str) -> Connection:
    return Connection.objects.create(user=user, conversation=conversation, client_id=client_id,
                                     channel_name=f"ws.{client_id}", node="node-1")


def _row(pk) -> dict:
    return Connection.objects.filter(pk=pk).values(*COLUMNS).get()


def test_the_first_close_stamps_the_row_and_later_ones_only_raise_delivered(user, implementation):
    conversation = services.create_conversation(user.pk)
    for i in range(6):
        services.append_event(conversation.pk, "note", {"i": i})
    row = _open(user, conversation, "a")
    opened = _row(row.pk)

    assert services.close_connection(row.pk, 4408, "heartbeat_timeout" + "x" * 80, 4) is True
    first = _row(row.pk)
    assert services.close_connection(row.pk, 1000, "client_close", 2) is False  # late and lower
    second = _row(row.pk)
    assert services.close_connection(row.pk, 1000, "client_close", 6) is False
    third = _row(row.pk)

    assert first["closed_at"] is not None and first["last_seen_at"] > opened["last_seen_at"]
    assert (first["close_code"], first["close_reason"], first["delivered_seq"]) == (
        4408, ("heartbeat_timeout" + "x" * 80)[:64], 4)
    assert second == first  # nothing moved back, nothing re-stamped
    assert third == {**first, "delivered_seq": 6}


def test_a_close_moves_the_conversation_up_to_its_best_ack(user, implementation):
    conversation = services.create_conversation(user.pk)
    for i in range(9):
        services.append_event(conversation.pk, "note", {"i": i})
    first, second = _open(user, conversation, "a"), _open(user, conversation, "b")
    services.record_ack(first.pk, conversation.pk, 7)
    services.record_ack(second.pk, conversation.pk, 3)

    services.close_connection(second.pk, 1000, "client_close", 3)
    assert Conversation.objects.get(pk=conversation.pk).acked_seq == 7  # the best of any row, open or not
    Conversation.objects.filter(pk=conversation.pk).update(acked_seq=8)
    services.close_connection(first.pk, 1000, "client_close", 9)
    assert Conversation.objects.get(pk=conversation.pk).acked_seq == 8  # never moved back


def test_closing_an_unknown_row_changes_nothing(user, implementation):
    conversation = services.create_conversation(user.pk)
    assert services.close_connection(uuid.uuid4(), 1000, "client_close", 1) is False
    assert Conversation.objects.get(pk=conversation.pk).acked_seq == 0
