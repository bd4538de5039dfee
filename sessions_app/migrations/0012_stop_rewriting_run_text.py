"""The group commit stops rewriting a run's text (issue 22), the second of two steps (0011 says
why, and why two): `tether_append_deltas` appends the events and moves `next_index`, nothing
else; the text is read from the log until the run stops streaming and folds it in.

Apply it once every node runs the release that brought 0011: a node of an earlier release reads
`AgentRun.text` directly and would continue a run it takes over from a shorter text (README,
Deployment). Back out: every run's text is folded in first, then the rewriting commit of 0011."""

from importlib import import_module

from django.db import migrations


def _expand():
    return import_module("sessions_app.migrations.0011_run_text_from_log")


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_expand().append_deltas_sql(rewrite_text=False))


def backward(apps, schema_editor):
    _expand().fold_every_run(apps)
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_expand().append_deltas_sql(rewrite_text=True))


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0011_run_text_from_log")]

    operations = [migrations.RunPython(forward, backward)]
