"""Debian's pgbouncer on loopback in transaction pooling, in front of a test's PostgreSQL: the
pooler that a named prepared statement does not survive (pgbouncer before 1.21 does not track
them; the machine's is 1.18). It runs as the `postgres` OS user (it refuses to run as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.executables import installed_or_skip, stop_process, wait_listening
from tests.support.ports import free_port


def pgbouncer_or_skip() -> str:
    """The pgbouncer executable (tests/support/executables.py: a skip outside CI, a failure under it)."""
    return installed_or_skip("pgbouncer")


class PgBouncer:
    """`server_connections` server connections for every client: with one, every client's
    transactions run on the same server connection, one after the other."""

    def __init__(self, pg_port: int, database: str, server_connections: int = 1) -> None:
        self.executable = pgbouncer_or_skip()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tether-pgbouncer-"))
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(f"""[databases]
{database} = host=127.0.0.1 port={pg_port} dbname={database} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/users.txt
pool_mode = transaction
default_pool_size = {server_connections}
max_client_conn = 100
ignore_startup_parameters = extra_float_digits,options
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
""")
        if os.geteuid() == 0:
            for path in (self.dir, *self.dir.iterdir()):
                shutil.chown(path, "postgres", "postgres")
        self.proc: subprocess.Popen | None = None

    def start(self) -> PgBouncer:
        command = [self.executable, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_listening(self.proc, self.port, 15, self.tail)
        return self

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.dir / "pgbouncer.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
