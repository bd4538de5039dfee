"""The columns that hold a whole answer compress it with lz4 (migration 0013, issue 22: pglz was
about 40% of an answer's completion), and a PostgreSQL that cannot keeps its compression while the
migration goes on."""

from __future__ import annotations

import uuid
from importlib import import_module

import pytest
from django.db import NotSupportedError, connection, transaction

from sessions_app import services
from sessions_app.models import AgentRun, Event, Message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

MIGRATION = import_module("sessions_app.migrations.0013_long_text_lz4")
# Long enough to be compressed (over about 2 KB), and compressible.
LONG = "t1796502762.123456 " * 300


def _methods() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("""SELECT c.relname, a.attcompression FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                          WHERE (c.relname, a.attname) IN (('sessions_app_message', 'text'),
                                ('sessions_app_event', 'payload'), ('sessions_app_agentrun', 'text'))""")
        return dict(cursor.fetchall())


def _stored_with(table: str, column: str, pk) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT pg_column_compression("{column}") FROM "{table}" WHERE id = %s', [pk])
        return cursor.fetchone()[0]


class _Editor:
    """A schema editor on this connection whose every statement the server refuses, as a server
    built without lz4 refuses `SET COMPRESSION lz4` (feature_not_supported): the transaction is
    aborted on the server, as it would be."""

    def __init__(self) -> None:
        self.connection = connection
        self.tried: list[str] = []

    def execute(self, sql: str) -> None:
        self.tried.append(sql)
        with connection.cursor() as cursor:
            cursor.execute("DO $$ BEGIN RAISE EXCEPTION 'compression method lz4 not supported'"
                           " USING ERRCODE = 'feature_not_supported'; END $$")


def test_the_three_columns_holding_an_answer_compress_with_lz4():
    assert _methods() == {"sessions_app_message": "l", "sessions_app_event": "l", "sessions_app_agentrun": "l"}


def test_a_long_answer_is_stored_compressed_with_lz4_in_each_of_its_three_copies(user):
    conversation_id = str(services.create_conversation(user.pk).pk)
    services.post_user_messages([services.NewMessage(conversation_id, str(uuid.uuid4()), "go")])
    [claim] = services.claim_runs([conversation_id], "node-1", 30.0)
    for _ in range(3):
        services.append_run_deltas([services.DeltaWrite(conversation_id, claim.run_id, claim.fencing_token, LONG)], 30)
    [done] = services.complete_runs([services.Completion(conversation_id, claim.run_id, claim.fencing_token, None)])

    [completed] = done.events
    assert completed["message"]["text"] == LONG * 3
    event = Event.objects.get(conversation_id=conversation_id, seq=completed["seq"])
    assert _stored_with("sessions_app_message", "text", completed["message"]["id"]) == "lz4"
    assert _stored_with("sessions_app_event", "payload", event.pk) == "lz4"
    assert _stored_with("sessions_app_agentrun", "text", claim.run_id) == "lz4"
    assert AgentRun.objects.get(pk=claim.run_id).text == LONG * 3
    assert Message.objects.get(pk=completed["message"]["id"]).text == LONG * 3


def test_backing_out_puts_pglz_back():
    with connection.schema_editor() as editor:
        MIGRATION.backward(None, editor)
    try:
        assert set(_methods().values()) == {"p"}
    finally:
        with connection.schema_editor() as editor:
            MIGRATION.forward(None, editor)
    assert set(_methods().values()) == {"l"}


def test_a_server_without_lz4_keeps_its_compression_and_the_migration_goes_on(capsys):
    editor = _Editor()
    with transaction.atomic():  # the migration's own transaction
        MIGRATION.forward(None, editor)
        with connection.cursor() as cursor:  # still usable: only the savepoint was rolled back
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
    assert editor.tried == ['ALTER TABLE "sessions_app_message" ALTER COLUMN "text" SET COMPRESSION lz4']
    assert "cannot compress with lz4" in capsys.readouterr().out
    assert set(_methods().values()) == {"l"}  # as migrated: nothing was changed


def test_the_refusal_is_the_one_the_migration_expects():
    with pytest.raises(NotSupportedError), transaction.atomic():
        _Editor().execute("ALTER TABLE x")
