"""A resume replays the log in seq order whatever order the rows lie in on disk (issue 25,
item 7).

PostgreSQL returns rows in the order of the plan that read them: an index scan happens to give
seq order, a sequential scan gives the table's physical order. The log read behind a replay
(`services.frames_after`) must say `ORDER BY seq`; without it every in-process test passed,
because rows inserted in seq order and read through the (conversation, seq) index come back
sorted anyway. Here the rows are deleted and re-inserted in reverse order and the table is
analysed, so the planner reads the small table sequentially, in that reversed order."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.db import connection, transaction

from sessions_app import services
from sessions_app.models import Event
from tests.support.ws import WSClient, sequenced

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

EVENTS = 40


def _conversation_with_scrambled_rows(user) -> str:
    conversation = services.create_conversation(user.pk)
    for n in range(1, EVENTS + 1):
        services.append_event(conversation.pk, "note", {"n": n})
    with transaction.atomic():
        rows = list(Event.objects.filter(conversation=conversation).order_by("seq"))
        Event.objects.filter(conversation=conversation).delete()
        for row in reversed(rows):  # the highest seq first on disk
            row.pk = None
            row.save(force_insert=True)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Event._meta.db_table}")
        # The scramble took: read without an order, the rows come back highest seq first.
        cursor.execute(f"SELECT seq FROM {Event._meta.db_table} WHERE conversation_id = %s", [conversation.pk])
        assert [seq for (seq,) in cursor.fetchall()] == list(range(EVENTS, 0, -1))
    return str(conversation.pk)


async def test_a_resume_replays_scrambled_rows_in_seq_order(settings, node_app, user, token):
    # Small batches: the replay is read by frames_after, batch after batch, not only by the
    # connect's first read.
    settings.REALTIME_REPLAY_BATCH = 7
    conversation_id = await database_sync_to_async(_conversation_with_scrambled_rows)(user)

    client = WSClient(node_app)
    ready = await client.connect(token, conversation_id=conversation_id, last_seq=3)
    assert (ready["resumed"], ready["replay_count"]) == (True, EVENTS - 3)
    frames = sequenced(await client.recv_until(lambda f: f.get("seq") == EVENTS))
    assert [(f["seq"], f["n"]) for f in frames] == [(n, n) for n in range(4, EVENTS + 1)]


def test_frames_after_reads_scrambled_rows_in_seq_order(user):
    conversation_id = _conversation_with_scrambled_rows(user)
    assert [seq for seq, _ in services.frames_after(conversation_id, 10, None, 5)] == [11, 12, 13, 14, 15]
    assert [seq for seq, _ in services.frames_after(conversation_id, 0, 20, 100)] == list(range(1, 21))
