"""A private PostgreSQL server for tests that stop, start or partition their database.

The machine's PostgreSQL (127.0.0.1:5432) is shared with other developers and CI: a test must
never stop it. `PostgresServer` initialises a cluster of its own in a temporary directory, on a
free port, runs it as the `postgres` OS user (PostgreSQL refuses to run as root) with durability
off (fsync, synchronous commit: a test's data need not survive a crash of the machine), and
migrates a database in it. `register_alias` lets the test process read it through the ORM as
another database alias (`Model.objects.using(alias)`)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.db import connections

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tether-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{self.tail()}")

    def init(self) -> PostgresServer:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> PostgresServer:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w",
                  "-t", "30", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast`: what an operator's restart does; every session is told and disconnected."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def url(self, name: str, port: int | None = None) -> str:
        return f"postgres://postgres@127.0.0.1:{port or self.port}/{name}"

    def create_database(self, name: str) -> None:
        """A database migrated by the project's own migrations."""
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": self.url(name)}
        env.pop("TEST_DB_NAME", None)
        done = subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{done.stdout}\n{done.stderr}")

    def register_alias(self, alias: str, name: str) -> str:
        """The database as another alias of this process (a copy of the default's settings)."""
        connections.settings[alias] = {
            **connections.settings["default"], "NAME": name, "HOST": "127.0.0.1", "PORT": str(self.port),
        }
        return alias

    def forget_alias(self, alias: str) -> None:
        """Undoes `register_alias` (this thread's connection closed first)."""
        if alias in connections.settings:
            connections[alias].close()
            del connections[alias]
            del connections.settings[alias]

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(RuntimeError):  # it was stopping anyway
                self.stop("immediate")
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
