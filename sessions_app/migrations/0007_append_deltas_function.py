"""`tether_append_deltas`: the delta group commit (services.runs.append_run_deltas) in one round
trip on PostgreSQL.

Streaming is this statement, run for every batch of every node. The ORM path sends six
statements (lock the conversations, lock and read the runs, insert the events, grow the runs,
move the conversations' last_seq, commit) and builds a model instance per event; we found its
Python side and round trips, not the database, were most of a batch's time. The function takes
the batch as arrays and keeps every rule of the ORM reference: conversations locked before runs
and both in key order (no deadlock with any other writer), the fencing token and the cancel flag
checked under the lock, seq allocated from last_seq, created_at never before the conversation's
previous append, the lease pushed forward. One write per run per batch (the delta writer keeps
at most one in flight per run). Its commit waits for the WAL flush like every log write.
Parity with the ORM reference: tests/test_delta_group_commit.py runs on both."""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION tether_append_deltas(
    p_conversations uuid[], p_runs uuid[], p_tokens bigint[], p_texts text[], p_lease_seconds double precision
) RETURNS TABLE (out_run uuid, out_outcome text, out_seq bigint, out_index integer)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_now timestamptz;
BEGIN
    PERFORM 1 FROM sessions_app_conversation WHERE id = ANY (p_conversations) ORDER BY id FOR NO KEY UPDATE;
    PERFORM 1 FROM sessions_app_agentrun WHERE id = ANY (p_runs) ORDER BY id FOR UPDATE;
    -- Stamped once the locks are held, not before waiting for them.
    v_now := clock_timestamp();
    RETURN QUERY
    WITH w AS (
        SELECT * FROM unnest(p_conversations, p_runs, p_tokens, p_texts)
            WITH ORDINALITY AS batch (conv, run, token, txt, ord)
    ), checked AS (
        SELECT w.*, r.next_index, coalesce(r.cancel_requested, false) AS cancelled,
               (r.id IS NOT NULL AND r.fencing_token = w.token AND r.status = 'running'
                AND r.conversation_id = w.conv) AS held
        FROM w LEFT JOIN sessions_app_agentrun r ON r.id = w.run
    ), ok AS (
        SELECT c.*, row_number() OVER (PARTITION BY c.conv ORDER BY c.ord) AS nth,
               count(*) OVER (PARTITION BY c.conv) AS n
        FROM checked c WHERE c.held AND NOT c.cancelled
    ), moved AS (
        UPDATE sessions_app_conversation k
        SET last_seq = k.last_seq + x.n, updated_at = greatest(v_now, k.updated_at)
        FROM (SELECT DISTINCT ok.conv, ok.n FROM ok) x
        WHERE k.id = x.conv
        RETURNING k.id, k.last_seq AS new_last, x.n, k.updated_at AS stamp
    ), inserted AS (
        INSERT INTO sessions_app_event (conversation_id, seq, type, payload, run_id, created_at)
        SELECT ok.conv, moved.new_last - moved.n + ok.nth, 'agent.delta',
               jsonb_build_object('run_id', ok.run, 'index', ok.next_index, 'text', ok.txt), ok.run, moved.stamp
        FROM ok JOIN moved ON moved.id = ok.conv
        RETURNING sessions_app_event.run_id, sessions_app_event.seq
    ), grown AS (
        UPDATE sessions_app_agentrun r
        SET text = r.text || ok.txt, next_index = r.next_index + 1,
            lease_expires_at = v_now + make_interval(secs => p_lease_seconds)
        FROM ok WHERE r.id = ok.run
    )
    SELECT c.run,
           CASE WHEN NOT c.held THEN 'lost' WHEN c.cancelled THEN 'cancelled' ELSE 'ok' END,
           i.seq, c.next_index
    FROM checked c LEFT JOIN inserted i ON i.run_id = c.run
    ORDER BY c.ord;
END
$fn$;
"""

DROP = "DROP FUNCTION IF EXISTS tether_append_deltas(uuid[], uuid[], bigint[], text[], double precision);"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0006_open_session_function")]

    operations = [migrations.RunPython(create, drop)]
