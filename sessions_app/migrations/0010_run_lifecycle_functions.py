"""A run's life in one round trip each on PostgreSQL: `tether_post_message` (a user message, its
`message.created` event and its queued run), `tether_claim_run` (the claim and, on the first,
`agent.started`) and `tether_complete_run` (the assistant message, `agent.completed`, the run
finished).

Why (issue 22): the ORM paths cost the node 3.0, 1.9 and 2.2 ms of CPU per call (measured with
`time.thread_time()` around each service on the benchmark's database), about 7 ms per answer,
almost all of it Django building queries and model instances, not the database. At 100 streams
of 10 s answers that was a third of the node's CPU per delivered event, and in the burst of 500
answers starting together it kept the loop busy long enough for Redis calls to time out waiting
for the loop. Each function keeps every rule of its ORM reference (services/event_log.py,
services/runs.py), which runs on SQLite and is the specification: the conversation locked
first (then the run), seq allocated from last_seq, created_at never before the conversation's
previous append, the fencing token checked under the lock. The frames are built in Python from
what the functions return, as the ORM paths build them. Parity: tests/test_run_lifecycle_sql.py
runs every case on both."""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION tether_post_message(
    p_conv uuid, p_client_msg uuid, p_text text, p_message uuid, p_run uuid, p_title text
) RETURNS TABLE (out_state text, out_seq bigint, out_message uuid, out_run uuid)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_last bigint;
    v_updated timestamptz;
    v_title text;
    v_now timestamptz;
    v_stamp timestamptz;
    v_seq bigint;
BEGIN
    -- A resend: the original, without taking the lock.
    RETURN QUERY SELECT 'duplicate'::text, m.seq, m.id, r.id
        FROM sessions_app_message m LEFT JOIN sessions_app_agentrun r ON r.message_id = m.id
        WHERE m.conversation_id = p_conv AND m.client_msg_id = p_client_msg;
    IF FOUND THEN RETURN; END IF;
    SELECT last_seq, updated_at, title INTO v_last, v_updated, v_title
        FROM sessions_app_conversation WHERE id = p_conv FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, NULL::bigint, NULL::uuid, NULL::uuid;
        RETURN;
    END IF;
    -- Again under the lock: a concurrent sender may have won the race.
    RETURN QUERY SELECT 'duplicate'::text, m.seq, m.id, r.id
        FROM sessions_app_message m LEFT JOIN sessions_app_agentrun r ON r.message_id = m.id
        WHERE m.conversation_id = p_conv AND m.client_msg_id = p_client_msg;
    IF FOUND THEN RETURN; END IF;
    v_now := clock_timestamp();
    v_stamp := greatest(v_now, v_updated);
    v_seq := v_last + 1;
    INSERT INTO sessions_app_message (id, conversation_id, role, text, client_msg_id, seq, created_at)
        VALUES (p_message, p_conv, 'user', p_text, p_client_msg, v_seq, v_now);
    INSERT INTO sessions_app_event (conversation_id, seq, type, payload, run_id, created_at)
        VALUES (p_conv, v_seq, 'message.created',
                jsonb_build_object('message', jsonb_build_object(
                    'id', p_message, 'role', 'user', 'text', p_text, 'client_msg_id', p_client_msg)),
                NULL, v_stamp);
    INSERT INTO sessions_app_agentrun (id, conversation_id, message_id, status, node, fencing_token, claims, text,
                                       next_index, cancel_requested, error, created_at, waited_seconds)
        VALUES (p_run, p_conv, p_message, 'queued', '', 0, 0, '', 0, false, '', v_now, 0);
    -- An untitled conversation is named after its first user message.
    IF v_title = '' AND p_title <> '' AND NOT EXISTS (
        SELECT 1 FROM sessions_app_message
        WHERE conversation_id = p_conv AND role = 'user' AND seq < v_seq
    ) THEN
        v_title := p_title;
    END IF;
    UPDATE sessions_app_conversation SET last_seq = v_seq, updated_at = v_stamp, title = v_title WHERE id = p_conv;
    RETURN QUERY SELECT 'posted'::text, v_seq, p_message, p_run;
END
$fn$;

CREATE OR REPLACE FUNCTION tether_claim_run(p_conv uuid, p_node text, p_lease_seconds double precision)
RETURNS TABLE (out_state text, out_run uuid, out_token bigint, out_takeover boolean, out_elapsed double precision,
               out_seq bigint, out_message uuid)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_last bigint;
    v_updated timestamptz;
    v_run record;
    v_now timestamptz;
    v_seq bigint;
BEGIN
    SELECT last_seq, updated_at INTO v_last, v_updated
        FROM sessions_app_conversation WHERE id = p_conv FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, NULL::uuid, NULL::bigint, NULL::boolean, NULL::double precision,
                            NULL::bigint, NULL::uuid;
        RETURN;
    END IF;
    -- Only the earliest unfinished run is claimable: the runs of a conversation go one at a time.
    SELECT r.* INTO v_run FROM sessions_app_agentrun r JOIN sessions_app_message m ON m.id = r.message_id
        WHERE r.conversation_id = p_conv AND r.status IN ('queued', 'running', 'waiting')
        ORDER BY m.seq LIMIT 1 FOR UPDATE OF r;
    v_now := clock_timestamp();
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'none'::text, NULL::uuid, NULL::bigint, NULL::boolean, NULL::double precision,
                            NULL::bigint, NULL::uuid;
        RETURN;
    END IF;
    IF v_run.status = 'waiting'
       OR (v_run.status = 'running' AND v_run.lease_expires_at IS NOT NULL AND v_run.lease_expires_at > v_now) THEN
        RETURN QUERY SELECT 'none'::text, NULL::uuid, NULL::bigint, NULL::boolean, NULL::double precision,
                            NULL::bigint, NULL::uuid;
        RETURN;
    END IF;
    UPDATE sessions_app_agentrun
        SET status = 'running', node = p_node, fencing_token = fencing_token + 1, claims = claims + 1,
            lease_expires_at = v_now + make_interval(secs => p_lease_seconds),
            started_at = coalesce(started_at, v_now)
        WHERE id = v_run.id
        RETURNING * INTO v_run;
    IF v_run.claims = 1 THEN
        v_seq := v_last + 1;
        INSERT INTO sessions_app_event (conversation_id, seq, type, payload, run_id, created_at)
            VALUES (p_conv, v_seq, 'agent.started',
                    jsonb_build_object('run_id', v_run.id, 'in_reply_to', v_run.message_id),
                    v_run.id, greatest(v_now, v_updated));
        UPDATE sessions_app_conversation SET last_seq = v_seq, updated_at = greatest(v_now, v_updated)
            WHERE id = p_conv;
    END IF;
    RETURN QUERY SELECT 'claimed'::text, v_run.id, v_run.fencing_token, v_run.claims > 1,
        greatest(0.0, extract(epoch FROM v_now - v_run.started_at)::double precision - v_run.waited_seconds),
        v_seq, v_run.message_id;
END
$fn$;

CREATE OR REPLACE FUNCTION tether_complete_run(
    p_conv uuid, p_run uuid, p_token bigint, p_message uuid, p_memory jsonb
) RETURNS TABLE (out_state text, out_seq bigint, out_text text)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_last bigint;
    v_updated timestamptz;
    v_text text;
    v_now timestamptz;
    v_stamp timestamptz;
    v_seq bigint;
BEGIN
    SELECT last_seq, updated_at INTO v_last, v_updated
        FROM sessions_app_conversation WHERE id = p_conv FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, NULL::bigint, NULL::text;
        RETURN;
    END IF;
    SELECT text INTO v_text FROM sessions_app_agentrun
        WHERE id = p_run AND conversation_id = p_conv AND fencing_token = p_token AND status = 'running'
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'lost'::text, NULL::bigint, NULL::text;
        RETURN;
    END IF;
    v_now := clock_timestamp();
    v_stamp := greatest(v_now, v_updated);
    v_seq := v_last + 1;
    -- The assistant message is the committed deltas' text, by construction.
    INSERT INTO sessions_app_message (id, conversation_id, role, text, client_msg_id, seq, created_at)
        VALUES (p_message, p_conv, 'assistant', v_text, NULL, v_seq, v_now);
    INSERT INTO sessions_app_event (conversation_id, seq, type, payload, run_id, created_at)
        VALUES (p_conv, v_seq, 'agent.completed',
                jsonb_build_object('run_id', p_run, 'message',
                                   jsonb_build_object('id', p_message, 'role', 'assistant', 'text', v_text)),
                p_run, v_stamp);
    UPDATE sessions_app_conversation
        SET last_seq = v_seq, updated_at = v_stamp, agent_memory = coalesce(p_memory, agent_memory)
        WHERE id = p_conv;
    UPDATE sessions_app_agentrun
        SET status = 'completed', error = '', finished_at = v_now, lease_expires_at = NULL, waiting_since = NULL
        WHERE id = p_run;
    RETURN QUERY SELECT 'completed'::text, v_seq, v_text;
END
$fn$;
"""

DROP = """
DROP FUNCTION IF EXISTS tether_post_message(uuid, uuid, text, uuid, uuid, text);
DROP FUNCTION IF EXISTS tether_claim_run(uuid, text, double precision);
DROP FUNCTION IF EXISTS tether_complete_run(uuid, uuid, bigint, uuid, jsonb);
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0009_agents_that_act")]

    operations = [migrations.RunPython(create, drop)]
