"""`tether_open_session`: services.connections.open_session in one round trip on PostgreSQL.

A resume was eleven round trips (standing, conversation, savepoint, replacement, insert,
release, commit with its WAL flush, the log's extent, then the first replay read in another
thread hop); on a loaded 2-core machine that was most of a one-event resume. This function does
the same steps, in the same order, with the same refusals, and returns the first replay batch as
wire frames. The connection row is bookkeeping (a crash that loses it only makes its socket
resume), so its commit does not wait for the WAL flush; the event log's writes still do.
The ORM implementation stays the reference (SQLite, and the parity test
tests/test_open_session_parity.py runs both on PostgreSQL)."""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION tether_open_session(
    p_user integer, p_conversation uuid, p_client varchar, p_channel varchar, p_node varchar,
    p_addr varchar, p_resumed_from bigint, p_sid uuid, p_generation integer, p_replay_limit integer
) RETURNS json LANGUAGE plpgsql AS $fn$
DECLARE
    v_active boolean;
    v_generation integer;
    v_owner integer;
    v_last bigint;
    v_created boolean := false;
    v_conversation uuid := p_conversation;
    v_connection uuid := gen_random_uuid();
    v_replaced text[];
    v_after bigint := coalesce(p_resumed_from, 0);
    v_lowest bigint;
    v_kept bigint;
    v_frames json;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT is_active INTO v_active FROM auth_user WHERE id = p_user;
    IF v_active IS NULL THEN
        RETURN json_build_object('error', 'unauthenticated', 'detail', 'unknown user');
    END IF;
    IF NOT v_active THEN
        RETURN json_build_object('error', 'unauthenticated', 'detail', 'user is deactivated');
    END IF;
    SELECT generation INTO v_generation FROM sessions_app_usertokengeneration WHERE user_id = p_user;
    IF p_generation < coalesce(v_generation, 0) THEN
        RETURN json_build_object('error', 'unauthenticated',
                                 'detail', 'token was revoked (every session of this user was ended)');
    END IF;
    IF p_sid IS NOT NULL AND EXISTS (SELECT 1 FROM sessions_app_revokedsignin WHERE sid = p_sid) THEN
        RETURN json_build_object('error', 'unauthenticated', 'detail', 'token was revoked (signed out)');
    END IF;
    IF v_conversation IS NULL THEN
        INSERT INTO sessions_app_conversation (id, owner_id, title, created_at, updated_at, agent_memory,
                                               last_seq, acked_seq)
        VALUES (gen_random_uuid(), p_user, '', now(), now(), '{}', 0, 0)
        RETURNING id INTO v_conversation;
        v_created := true;
        v_last := 0;
    ELSE
        SELECT owner_id, last_seq INTO v_owner, v_last FROM sessions_app_conversation WHERE id = v_conversation;
        IF NOT FOUND THEN
            RETURN json_build_object('error', 'not_found', 'detail', 'no such conversation');
        END IF;
        IF v_owner <> p_user THEN
            RETURN json_build_object('error', 'forbidden', 'detail', 'not your conversation');
        END IF;
    END IF;
    FOR attempt IN 1..5 LOOP
        BEGIN
            WITH closed AS (
                UPDATE sessions_app_connection SET closed_at = now(), close_code = 4409, close_reason = 'replaced'
                WHERE conversation_id = v_conversation AND client_id = p_client AND closed_at IS NULL
                RETURNING channel_name
            )
            SELECT coalesce(array_agg(channel_name), '{}') INTO v_replaced FROM closed;
            INSERT INTO sessions_app_connection (
                id, user_id, conversation_id, client_id, channel_name, node, remote_addr, opened_at,
                last_seen_at, close_reason, resumed_from_seq, delivered_seq, acked_seq, auth_refreshes,
                auth_refusals, last_auth_refusal, token_sid, token_generation)
            VALUES (
                v_connection, p_user, v_conversation, p_client, p_channel, p_node, left(p_addr, 64), now(),
                now(), '', p_resumed_from, 0, 0, 0, 0, '', p_sid, p_generation);
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            -- Another connect of this client committed its row after our lookup: the next
            -- attempt's UPDATE sees it and closes it.
            IF attempt = 5 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    SELECT min(seq), count(*) FILTER (WHERE seq > v_after AND seq <= v_last)
        INTO v_lowest, v_kept FROM sessions_app_event WHERE conversation_id = v_conversation;
    IF p_replay_limit > 0 AND v_after < v_last THEN
        SELECT json_agg(json_build_array(seq, frame) ORDER BY seq) INTO v_frames FROM (
            SELECT seq, (jsonb_build_object('type', type, 'seq', seq) || payload)::text AS frame
            FROM sessions_app_event
            WHERE conversation_id = v_conversation AND seq > v_after AND seq <= v_last
            ORDER BY seq LIMIT p_replay_limit
        ) AS first_batch;
    END IF;
    RETURN json_build_object(
        'conversation_id', v_conversation, 'created', v_created, 'last_seq', v_last,
        'lowest', v_lowest, 'kept_after', v_kept, 'connection_id', v_connection,
        'replaced_channels', v_replaced, 'frames', coalesce(v_frames, '[]'::json));
END
$fn$;
"""

DROP = "DROP FUNCTION IF EXISTS tether_open_session(integer, uuid, varchar, varchar, varchar, varchar, bigint, uuid, integer, integer);"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0005_event_created_at_set_by_writer")]

    operations = [migrations.RunPython(create, drop)]
