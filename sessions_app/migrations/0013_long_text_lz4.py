"""The three columns that hold a whole answer are compressed with lz4 instead of pglz (issue 22):
the message's text, the event's payload (`agent.completed` carries the text) and the run's text.

Why: an answer's completion writes its text three times, and a text over about 2 KB is compressed
each time. With pglz that compression was about 40% of the completion: 433 runs of 200 deltas
(3.6 KB each) were completed in 254-259 ms, with lz4 in 152-158 ms
(bench/commit_growth_bench.py, docs/benchmarks.md). At the end of 500 answers that ran together,
the last answers waited for it.

Only values written from now on are compressed with lz4; stored ones stay as they are, and both
are read alike. Nothing else changes: no table is rewritten, and nodes of an earlier release read
and write these columns as before. A PostgreSQL built without lz4 (or older than 14) keeps pglz:
the migration says so and goes on, since the only loss is speed. Back out: pglz again."""

from django.db import NotSupportedError, migrations, transaction

COLUMNS = [("sessions_app_message", "text"), ("sessions_app_event", "payload"), ("sessions_app_agentrun", "text")]

# PostgreSQL 14 brought per-column compression.
FIRST_VERSION = 140000


def _compress_with(schema_editor, method: str) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    if connection.pg_version < FIRST_VERSION:
        print(f"\n  PostgreSQL {connection.pg_version} has no per-column compression: the long texts stay pglz.")
        return
    try:
        # In a savepoint: a server built without lz4 refuses the first column, and the
        # migration's transaction goes on.
        with transaction.atomic(using=connection.alias):
            for table, column in COLUMNS:
                schema_editor.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION {method}')
    except NotSupportedError as exc:
        print(f"\n  This PostgreSQL cannot compress with {method} ({exc}): the long texts stay as they were.")


def forward(apps, schema_editor):
    _compress_with(schema_editor, "lz4")


def backward(apps, schema_editor):
    _compress_with(schema_editor, "pglz")


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0012_stop_rewriting_run_text")]

    operations = [migrations.RunPython(forward, backward)]
