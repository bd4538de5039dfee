"""Plain SQL for the hot paths (the delta group commit, the resync, the services that do many
items in one statement): one statement sent with executemany instead of an ORM expression
compiled per row, and the item-by-item outcomes of the ORM reference paths."""

from __future__ import annotations

from collections.abc import Callable
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


def outcome_of(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`, or the exception it raised: one item's outcome in a service that does many
    items (`post_user_messages`, `claim_runs`, `complete_runs`), for that item's caller alone."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - handed to that item's caller, who raises it
        return exc
