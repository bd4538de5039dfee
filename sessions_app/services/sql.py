"""Plain SQL for the hot paths (the delta group commit, the resync, the services that do many
items in one statement): one statement sent with executemany instead of an ORM expression
compiled per row, and the item-by-item outcomes of the ORM reference paths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connection as db_connection
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorWrapper


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


def bound_cursor() -> CursorWrapper:
    """A cursor whose parameters travel apart from the statement (server-side binding, never
    prepared), for single statements (`execute`) that pass arrays of hundreds of values.

    Why: Django's PostgreSQL cursor binds on the client: psycopg writes every parameter into the
    statement's text as a literal, and PostgreSQL parses it back. For the statements that pass
    500 items at once that costs the server: the group commit of 500 runs, run every coalescing
    window, took 55 µs of PostgreSQL's CPU per run bound on the client and 49 bound apart, 31.4
    against 28.1 ms per call (bench/burst_cost_bench.py, issue 22); the calling thread's CPU
    was the same either way.

    Never prepared (`prepare=False` on each execute): a named prepared statement lives on one
    server connection, and a transaction pooler (pgbouncer before 1.21) hands each transaction
    to whichever is free; an unnamed one is sent with its statement
    (tests/e2e/test_pgbouncer_transaction_pooling.py runs both behind pgbouncer). The cursor is
    Django's wrapper around it, so Django's execute wrappers (the database deadline's statement
    count, query capture in tests) see its statements as any other."""
    if db_connection.vendor != "postgresql":
        return db_connection.cursor()
    db_connection.close_if_health_check_failed()
    db_connection.ensure_connection()
    db_connection.validate_thread_sharing()
    with db_connection.wrap_database_errors:
        raw = _UnpreparedBindingCursor(db_connection.connection)
    return db_connection.make_debug_cursor(raw) if db_connection.queries_logged else db_connection.make_cursor(raw)


class _UnpreparedBindingCursor(ServerBindingCursor):
    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                binary: bool | None = None) -> Any:
        return super().execute(query, params, prepare=False, binary=binary)
