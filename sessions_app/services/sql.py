"""Plain SQL for the hot paths (the delta group commit, the resync): one statement sent with
executemany instead of an ORM expression compiled per row."""

from __future__ import annotations

from typing import Any

from django.db import connection as db_connection


def update_by_pk(model: Any, assignments: str, rows: list[tuple], where: str = "") -> None:
    """One UPDATE per row (`WHERE id = <last item of the row>`), sent with executemany: the
    hot paths' plain-SQL writes, without compiling an ORM expression per row."""
    table = db_connection.ops.quote_name(model._meta.db_table)
    pk = model._meta.pk
    with db_connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET {assignments} WHERE id = %s{where}",
            [(*row[:-1], pk.get_db_prep_value(row[-1], db_connection)) for row in rows],
        )
