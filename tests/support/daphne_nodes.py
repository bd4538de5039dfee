"""Real daphne nodes as subprocesses on loopback, sharing the test database and Redis; killed
(SIGKILL), stopped gracefully (SIGTERM), or frozen and thawed (SIGSTOP, SIGCONT)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def key_env() -> dict[str, str]:
    """The keys a server process needs (it refuses to start without SECRET_KEY, project/keys.py):
    this test process's own, so that the tokens the tests mint are the nodes' tokens."""
    return {"SECRET_KEY": settings.SECRET_KEY, "JWT_SIGNING_KEY": settings.SIMPLE_JWT["SIGNING_KEY"]}


def test_database_url() -> str:
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class DaphneNode:
    def __init__(self, node_id: str, env: dict[str, str]):
        self.node_id = node_id
        self.port = free_port()
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"{node_id}-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/v1/"

    def start(self, timeout: float = 30) -> DaphneNode:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
            "DB_CONN_MAX_AGE": "0",
            "REALTIME_NODE_ID": self.node_id,
            "REALTIME_PUBLIC_WS_URL": self.ws_url,
            "PORT": str(self.port),
            "BIND": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            **key_env(),
            **self.env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "realtime.serve"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.node_id} exited early:\n{self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.node_id} not listening after {timeout}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as when a machine dies."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the process freezes mid-instruction, its sockets and database sessions
        open, as a VM paused by its host or a process stalled in a long GC: a zombie once
        its leases lapse."""
        assert self.proc is not None and self.proc.poll() is None, f"{self.node_id} is not running"
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: the frozen process goes on from where it stopped, unaware of the time lost."""
        assert self.proc is not None and self.proc.poll() is None, f"{self.node_id} is not running"
        self.proc.send_signal(signal.SIGCONT)

    def terminate(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> DaphneNode:
        self.terminate()
        return self.start()

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])
