"""A run's text can be read from the log (issue 22), the first of two steps: `AgentRun.text`
holds the text of the deltas below `text_upto`, and the rest is read from the log
(`tether_run_text` here, `services.committed_text` in the ORM reference). Migration 0012 then
stops the group commit from rewriting the text.

Why: `tether_append_deltas` set `text = text || delta` on every run of every group commit, so
PostgreSQL wrote each run's whole text again (a new row version, compressed and TOASTed past
2 KB, and its WAL) about twenty times a second. Measured with 200 runs and one delta of two
tokens each per commit: the commit took 40 ms at the start of the answers and 90-145 ms by the
200th delta; without the rewrite, 28-45 ms throughout. The text is folded in where the run stops
streaming (`tether_complete_run` here; the failure and the wait for an approval in
services/runs.py and services/tools.py).

Why two steps: nodes of the previous release read `AgentRun.text` directly (the context of a run
they take over, the journal of an acting run). Until every node reads the text through
`tether_run_text` / `committed_text`, the group commit must keep the whole text in the row, or an
old node taking a run over during the rolling deploy would continue it from a shorter text and say
part of the answer twice. So here the group commit still rewrites the text and keeps `text_upto`
at `next_index` (both kinds of reader are right); 0012 stops the rewrite, once every node runs
this release (README, Deployment).

Existing runs already hold their whole text: their `text_upto` starts at their `next_index`.
Back out: the earlier functions come back (the text is whole in every row in this state)."""

from importlib import import_module

from django.db import migrations, models
from django.db.models import F

RUN_TEXT = r"""
CREATE OR REPLACE FUNCTION tether_run_text(p_run uuid) RETURNS text
LANGUAGE sql STABLE AS $fn$
    SELECT CASE WHEN r.text_upto >= r.next_index THEN r.text ELSE r.text || coalesce((
        -- The run's deltas all come after its user message in the conversation's log: a range
        -- of the (conversation, seq) index, not a scan of the whole log.
        SELECT string_agg(e.payload->>'text', '' ORDER BY e.seq)
        FROM sessions_app_event e
        WHERE e.conversation_id = r.conversation_id AND e.seq > m.seq
          AND e.run_id = r.id AND e.type = 'agent.delta'
          AND (e.payload->>'index')::integer >= r.text_upto), '') END
    FROM sessions_app_agentrun r JOIN sessions_app_message m ON m.id = r.message_id
    WHERE r.id = p_run
$fn$;
"""

APPEND_FROM = """        SET text = r.text || ok.txt, next_index = r.next_index + 1,"""
APPEND_REWRITING = """        SET text = r.text || ok.txt, next_index = r.next_index + 1, text_upto = r.next_index + 1,"""
APPEND_FROM_LOG = """        SET next_index = r.next_index + 1,"""

COMPLETE_FROM = """    SELECT text INTO v_text FROM sessions_app_agentrun
        WHERE id = p_run AND conversation_id = p_conv AND fencing_token = p_token AND status = 'running'
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'lost'::text, NULL::bigint, NULL::text;
        RETURN;
    END IF;"""
COMPLETE_TO = """    PERFORM 1 FROM sessions_app_agentrun
        WHERE id = p_run AND conversation_id = p_conv AND fencing_token = p_token AND status = 'running'
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'lost'::text, NULL::bigint, NULL::text;
        RETURN;
    END IF;
    v_text := tether_run_text(p_run);"""
FOLD_FROM = """        SET status = 'completed', error = '', finished_at = v_now,"""
FOLD_TO = """        SET status = 'completed', error = '', text = v_text, text_upto = next_index, finished_at = v_now,"""


def _earlier(name: str) -> str:
    return import_module(f"sessions_app.migrations.{name}").CREATE


def _replaced(sql: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert sql.count(old) == 1, old
        sql = sql.replace(old, new)
    return sql


def append_deltas_sql(rewrite_text: bool) -> str:
    """`tether_append_deltas` rewriting the whole text at every delta (this step; `text_upto`
    kept at `next_index`) or not (0012)."""
    return _replaced(_earlier("0007_append_deltas_function"),
                     (APPEND_FROM, APPEND_REWRITING if rewrite_text else APPEND_FROM_LOG))


def fold_every_run(apps) -> None:
    """Every run's text whole in its row again (`text_upto` = `next_index`): before going back to
    a group commit that rewrites the text."""
    AgentRun = apps.get_model("sessions_app", "AgentRun")
    Event = apps.get_model("sessions_app", "Event")
    for run in AgentRun.objects.filter(text_upto__lt=F("next_index")):
        deltas = Event.objects.filter(conversation_id=run.conversation_id, run_id=run.id, type="agent.delta")
        run.text += "".join(p["text"] for p in deltas.order_by("seq").values_list("payload", flat=True)
                            if p["index"] >= run.text_upto)
        run.text_upto = run.next_index
        run.save(update_fields=["text", "text_upto"])


def forward(apps, schema_editor):
    apps.get_model("sessions_app", "AgentRun").objects.update(text_upto=F("next_index"))
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(RUN_TEXT)
        schema_editor.execute(append_deltas_sql(rewrite_text=True))
        schema_editor.execute(_replaced(_earlier("0010_run_lifecycle_functions"),
                                        (COMPLETE_FROM, COMPLETE_TO), (FOLD_FROM, FOLD_TO)))


def backward(apps, schema_editor):
    fold_every_run(apps)  # a run failed or folded by this release's code: already whole
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_earlier("0007_append_deltas_function"))
        schema_editor.execute(_earlier("0010_run_lifecycle_functions"))
        schema_editor.execute("DROP FUNCTION IF EXISTS tether_run_text(uuid);")


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0010_run_lifecycle_functions")]

    operations = [
        migrations.AddField(
            model_name="agentrun",
            name="text_upto",
            field=models.IntegerField(db_default=0, default=0),
        ),
        migrations.RunPython(forward, backward),
    ]
