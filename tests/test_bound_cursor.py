"""`bound_cursor()` (sessions_app/services/sql.py): the statements that pass arrays of hundreds of
values send them apart from the statement's text (server-side binding, adapted in C by psycopg)
and are never prepared, so that they work through pgbouncer's transaction pooling; Django still
sees them (query capture, the database deadline's statement count)."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from django.db import connection

from sessions_app.services.sql import bound_cursor

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def test_parameters_travel_apart_from_the_statement():
    ids = [str(uuid.uuid4()) for _ in range(500)]
    with bound_cursor() as cursor:
        assert not isinstance(cursor.cursor, psycopg.ClientCursor)
        cursor.execute("SELECT count(*), min(x::text) FROM unnest(%s::uuid[]) AS x", [ids])
        assert cursor.fetchone() == (500, min(ids))
        # Bound on the server: the text sent is the statement with $1, not 500 literals.
        assert cursor.cursor._query.query == b"SELECT count(*), min(x::text) FROM unnest($1::uuid[]) AS x"  # noqa: SLF001


def test_a_statement_is_never_prepared_even_where_the_connection_would_prepare_everything():
    """Django turns psycopg's preparing off (`prepare_threshold` None) unless OPTIONS set it; an
    operator who sets it must not break the hot statements behind pgbouncer."""
    connection.ensure_connection()
    raw = connection.connection
    before, raw.prepare_threshold = raw.prepare_threshold, 0  # prepare from the first run
    try:
        with bound_cursor() as cursor:
            for n in range(3):
                cursor.execute("SELECT %s::int + 1", [n])
                assert cursor.fetchone() == (n + 1,)
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            assert cursor.fetchone() == (0,)
    finally:
        raw.prepare_threshold = before


def test_django_sees_its_statements(django_assert_num_queries):
    with django_assert_num_queries(1) as captured, bound_cursor() as cursor:
        cursor.execute("SELECT %s::int", [7])
    assert "SELECT" in captured.captured_queries[0]["sql"]
    assert connection.vendor == "postgresql"
