"""One open Connection row per (conversation, client_id), enforced by the database.

Two concurrent connects of one client could both insert an open row (issue 9, item 3), so a
database migrated from an earlier version may hold such pairs: all but the newest open row of
each identity are closed as replaced (4409) before the partial unique index is built."""

from django.db import migrations, models
from django.db.models import Count


def close_duplicate_open_rows(apps, schema_editor):
    Connection = apps.get_model("sessions_app", "Connection")
    open_rows = Connection.objects.filter(closed_at__isnull=True)
    duplicated = (
        open_rows.values("conversation_id", "client_id").annotate(n=Count("id")).filter(n__gt=1)
    )
    for identity in duplicated:
        rows = open_rows.filter(conversation_id=identity["conversation_id"], client_id=identity["client_id"])
        newest = rows.order_by("-opened_at", "-id").values_list("id", flat=True).first()
        rows.exclude(id=newest).update(
            closed_at=models.F("last_seen_at"), close_code=4409, close_reason="replaced"
        )


class Migration(migrations.Migration):

    dependencies = [
        ("sessions_app", "0003_token_revocation"),
    ]

    operations = [
        migrations.RunPython(close_duplicate_open_rows, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="connection",
            constraint=models.UniqueConstraint(
                condition=models.Q(("closed_at__isnull", True)),
                fields=("conversation", "client_id"),
                name="uniq_open_connection_per_client",
            ),
        ),
    ]
