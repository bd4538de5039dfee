"""`tether_open_session` reads only the missed events: the lowest kept seq by the first entry of
the (conversation, seq) index, and the count of the missed events over their range of it. The
first version counted over the whole log, so a resume cost grew with the conversation's length
(we measured 10-16 ms inside the node after a few thousand events). The rest is unchanged
(see 0006)."""

from django.db import migrations

FROM = """    SELECT min(seq), count(*) FILTER (WHERE seq > v_after AND seq <= v_last)
        INTO v_lowest, v_kept FROM sessions_app_event WHERE conversation_id = v_conversation;"""
TO = """    SELECT seq INTO v_lowest FROM sessions_app_event WHERE conversation_id = v_conversation
        ORDER BY seq LIMIT 1;
    v_kept := 0;
    IF v_after < v_last THEN
        SELECT count(*) INTO v_kept FROM sessions_app_event
            WHERE conversation_id = v_conversation AND seq > v_after AND seq <= v_last;
    END IF;"""


def _module():
    from importlib import import_module

    return import_module("sessions_app.migrations.0006_open_session_function")


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        create = _module().CREATE
        assert FROM in create
        schema_editor.execute(create.replace(FROM, TO))


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_module().CREATE)


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0007_append_deltas_function")]

    operations = [migrations.RunPython(forward, backward)]
