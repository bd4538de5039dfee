"""The batched statements work behind pgbouncer's transaction pooling (issue 22): they bind their
arrays on the server and are never prepared (`bound_cursor()`), because a named prepared
statement lives on one server connection and a transaction pooler hands every transaction to
whichever is free. Three clients share one server connection here; the control, the same
workload with psycopg preparing its statements, fails there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pgbouncer import PgBouncer, pgbouncer_or_skip
from tests.support.postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
DATABASE = "tether_pgbouncer"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pooled_url():
    pgbouncer_or_skip()
    server = PostgresServer().init().start()
    bouncer = None
    try:
        server.create_database(DATABASE)
        bouncer = PgBouncer(server.port, DATABASE, server_connections=1).start()
        yield bouncer.url(DATABASE)
    finally:
        if bouncer is not None:
            bouncer.stop()
        server.destroy()


def _workload(url: str, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "project.settings", "PYTHONPATH": str(ROOT),
           "DB_CONN_MAX_AGE": "60"}
    env.pop("TEST_DB_NAME", None)
    return subprocess.run([sys.executable, "-m", "tests.support.pgbouncer_workload", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_burst_s_statements_run_behind_a_transaction_pooler(pooled_url):
    done = _workload(pooled_url)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stdout + done.stderr[-3000:]


def test_the_same_statements_prepared_fail_there(pooled_url):
    done = _workload(pooled_url, "--prepare")
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "prepared statement" in done.stdout, done.stdout  # e.g. "_pg3_0" already exists, or does not
