"""What the resync reads of each socket's row (services.connections.resync_rows_*): on PostgreSQL
one plain statement with the batch's ids as one array, since the ORM's `pk__in` prepared each id
in Python, a third of an idle node's CPU at 2,000 sockets (issue 22). The ORM read is the
reference: both return the same rows, open or closed, for active and deactivated users, and
nothing for an unknown id."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from sessions_app import services
from sessions_app.models import Connection
from sessions_app.services import connections

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_the_plain_read_returns_what_the_orm_read_returns(user):
    other = get_user_model().objects.create_user("deactivated", password="x", is_active=False)
    first, second = services.create_conversation(user.pk), services.create_conversation(other.pk)
    for i in range(3):
        services.append_event(first.pk, "note", {"i": i})
    rows = [
        Connection.objects.create(user=user, conversation=first, client_id="a", channel_name="ws.a", node="n",
                                  delivered_seq=2, acked_seq=1, token_sid=uuid.uuid4(), token_generation=3),
        Connection.objects.create(user=user, conversation=first, client_id="b", channel_name="ws.b", node="n",
                                  closed_at=timezone.now(), close_reason="replaced"),
        Connection.objects.create(user=other, conversation=second, client_id="c", channel_name="ws.c", node="n"),
    ]
    ids = [str(r.pk) for r in rows] + [str(uuid.uuid4())]

    plain = sorted(connections.resync_rows_sql(ids), key=lambda r: str(r[0]))
    reference = sorted(connections.resync_rows_orm(ids), key=lambda r: str(r[0]))
    assert plain == reference
    assert len(plain) == 3
    by_client = {Connection.objects.get(pk=r[0]).client_id: r for r in plain}
    assert by_client["a"][2:4] == (True, 3) and by_client["a"][7:] == (3, 2, 1)
    assert by_client["b"][1] is not None and by_client["b"][4] == "replaced"
    assert by_client["c"][2] is False
