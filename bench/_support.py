"""Shared plumbing for the connection benchmarks (idle, storm, resume, rolling restart).

Follows bench/stream_bench.py's conventions and reuses its helpers: a scratch PostgreSQL
database recreated per run (`prepare_database`), daphne nodes started through
`python -m realtime.serve`, a Redis key prefix unique to the run. Unlike stream_bench, every
benchmark here also removes what it made when it ends: its nodes (only the processes it
started, by pid), the scratch database, the Redis keys under its prefix and the node logs
(kept, and their path printed, when the run failed).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stream_bench import cpu_seconds, free_port, prepare_database, wait_port  # noqa: E402

__all__ = ["ROOT", "BenchRun", "Node", "free_port", "percentile", "prepare_database", "summary", "wait_port"]

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/postgres"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): with 20 samples p99 is the maximum, never an
    extrapolation beyond what was measured."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float], scale: float = 1000.0) -> dict:
    """p50/p99/max/mean of `values` (seconds) in ms (scale 1000)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50) * scale,
        "p99_ms": percentile(values, 99) * scale,
        "max_ms": max(values) * scale,
        "mean_ms": sum(values) / len(values) * scale,
    }


class ResumeTimes:
    """The clock readings of measured resumes (perf_counter seconds), summarised the way every
    resume benchmark reports them: open -> last event, the handshake alone, open -> `ready`,
    and the replay alone."""

    def __init__(self) -> None:
        self.total: list[float] = []
        self.handshake: list[float] = []
        self.to_ready: list[float] = []
        self.replay: list[float] = []

    def add(self, t0: float, t_open: float, t_ready: float, t_done: float) -> None:
        self.total.append(t_done - t0)
        self.handshake.append(t_open - t0)
        self.to_ready.append(t_ready - t0)
        self.replay.append(t_done - t_ready)

    def summaries(self) -> dict:
        return {"total": summary(self.total), "handshake": summary(self.handshake),
                "to_ready": summary(self.to_ready), "replay_only": summary(self.replay)}


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


class ProcessReadings:
    """What a benchmark reads off a server process it started (Tether's node, the floor's
    daphne): its address and its RSS, threads and CPU from /proc. Needs `port` and `proc`."""

    port: int
    proc: subprocess.Popen | None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/v1/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        raise RuntimeError(f"no {key} in /proc/{self.pid}/status")

    def rss_kb(self) -> int:
        return self._status("VmRSS:")

    def threads(self) -> int:
        return self._status("Threads:")

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads), in seconds."""
        return cpu_seconds(self.pid)


class Node(ProcessReadings):
    """One daphne node (`python -m realtime.serve`) as a child process of the benchmark."""

    def __init__(self, run: BenchRun, name: str, env: dict[str, str], port: int | None = None):
        self.run = run
        self.name = name
        self.port = port or free_port()
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.generation = 0
        self.log_path = run.log_dir / f"{name}.log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60) -> Node:
        """Starts the node and waits until /readyz answers 200."""
        self.generation += 1
        env = {
            **os.environ,
            **self.run.node_env,
            **self.env,
            "PORT": str(self.port),
            "BIND": "127.0.0.1",
            "REALTIME_NODE_ID": f"{self.name}-{self.generation}",
            "REALTIME_PUBLIC_WS_URL": self.ws_url,
        }
        log = open(self.log_path, "a")  # noqa: SIM115 - lives as long as the node
        log.write(f"--- start {self.generation} at {time.strftime('%H:%M:%S')}\n")
        log.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "realtime.serve"], cwd=ROOT, env=env,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.run.nodes.add(self)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds until /readyz answered 200 (the node is accepting sockets)."""
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"node {self.name} exited early:\n{self.tail()}")
            if self.readyz() == 200:
                return time.monotonic() - start
            time.sleep(0.05)
        raise RuntimeError(f"node {self.name} not ready after {timeout}s:\n{self.tail()}")

    def readyz(self) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def sigterm(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def sigkill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (graceful drain), SIGKILL if it does not exit in time."""
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        if self.wait_exit(timeout) is None:
            self.sigkill()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_problems(self) -> list[str]:
        """Tracebacks and ERROR lines in the node's log (a healthy run has none)."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in text if "Traceback" in line or " ERROR " in line or " CRITICAL " in line]


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


class BenchRun:
    """Scratch database, Redis prefix, node processes and logs of one benchmark run; a
    context manager that removes all of them at the end."""

    def __init__(self, name: str, pg: str, keep: bool = False, token_lifetime: int = 6 * 3600):
        self.name = name
        self.pg = pg
        self.keep = keep
        self.db_name = f"tether_bench_{name}"
        self.prefix = f"bench-{name}-{os.getpid()}"
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"tether-bench-{name}-"))
        self.nodes: set[Node] = set()
        self.failed = False
        self.token_lifetime = token_lifetime
        self.node_env: dict[str, str] = {}

    def __enter__(self) -> BenchRun:
        # A SIGTERM to the benchmark unwinds like Ctrl-C, so the cleanup below still runs.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
        # Nodes refuse to start without a key (project/keys.py); the benchmark's own tokens
        # must be theirs: one key for the run, handed down through the environment.
        os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
        os.environ["DATABASE_URL"] = prepare_database(self.pg, self.db_name)
        os.environ["REDIS_KEY_PREFIX"] = self.prefix
        # Tokens the benchmark mints must outlive the run (the node checks their exp claim).
        os.environ["ACCESS_TOKEN_LIFETIME"] = str(self.token_lifetime)
        self.node_env = {
            "DATABASE_URL": os.environ["DATABASE_URL"],
            "DB_CONN_MAX_AGE": "60",
            "REDIS_KEY_PREFIX": self.prefix,
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            # BENCH_LOG_LEVELS=realtime.phases=DEBUG: the per-phase connect timing, without the
            # per-frame DEBUG lines of daphne that would slow the node down.
            "LOG_LEVELS": os.environ.get("BENCH_LOG_LEVELS", ""),
            "PYTHONPATH": str(ROOT),
            # Benchmarks open many conversations per user, and the new-conversation limit
            # (issue 24, 30 a minute per user) is not what they measure: above it, 4,101 of
            # 10,000 idle_bench sockets were refused `rate_limited`. A benchmark's own env wins.
            "REALTIME_RATE_NEW_CONVERSATIONS_USER": "1000000/60",
        }
        import django

        django.setup()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.failed = True
        self.stop_nodes()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        self.clean_redis()
        if not self.keep:
            self.drop_database()
        if self.failed or self.keep:
            print(f"node logs kept in {self.log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def stop_nodes(self) -> None:
        for node in list(self.nodes):
            with contextlib.suppress(Exception):
                node.stop(timeout=30)
            if node.alive():  # pragma: no cover - last resort, this node's pid only
                with contextlib.suppress(Exception):
                    node.proc.kill()
                    node.proc.wait(5)

    def clean_redis(self) -> int:
        import redis

        removed = 0
        try:
            client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
            batch = []
            for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += client.delete(*batch)
                    batch = []
            if batch:
                removed += client.delete(*batch)
            client.close()
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
            print(f"redis cleanup failed: {exc!r}", file=sys.stderr)
        return removed

    def drop_database(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        except Exception as exc:  # noqa: BLE001
            print(f"dropping {self.db_name} failed: {exc!r}", file=sys.stderr)

    def log_problems(self) -> dict[str, list[str]]:
        return {node.name: problems[:20] for node in self.nodes if (problems := node.log_problems())}


def make_users(count: int, prefix: str = "bench") -> list[tuple[int, str]]:
    """`count` users (id, access token); tokens live as long as ACCESS_TOKEN_LIFETIME says."""
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import AccessToken

    user_model = get_user_model()
    existing = {u.username: u for u in user_model.objects.filter(username__startswith=f"{prefix}")}
    missing = [user_model(username=f"{prefix}{i}") for i in range(count) if f"{prefix}{i}" not in existing]
    user_model.objects.bulk_create(missing)
    users = {u.username: u for u in user_model.objects.filter(username__startswith=f"{prefix}")}
    out = []
    for i in range(count):
        user = users[f"{prefix}{i}"]
        out.append((user.pk, str(AccessToken.for_user(user))))
    return out


def append_events(conversation_id: str, count: int, text: str, start_index: int = 0) -> list[dict]:
    """Appends `count` agent.delta-shaped events to a conversation in ONE transaction, through
    the same service code as `services.append_event` (lock the conversation row, allocate the
    seqs from last_seq, insert), just batched so that setting up thousands of events does not
    take minutes. Returns the frames as the server will replay them."""
    from django.db import transaction

    from sessions_app.services.conversations import lock_conversation
    from sessions_app.services.event_log import append_locked

    entries = [("agent.delta", {"run_id": None, "index": start_index + i, "text": text}, None)
               for i in range(count)]
    with transaction.atomic():
        events = append_locked(lock_conversation(conversation_id), entries)
    return [{"type": e.type, "seq": e.seq, **e.payload} for e in events]


def create_conversations(user_ids: list[int]) -> list[str]:
    from sessions_app.models import Conversation

    rows = Conversation.objects.bulk_create([Conversation(owner_id=uid) for uid in user_ids])
    return [str(c.pk) for c in rows]


def abort_socket(ws) -> None:
    """Drops a client WebSocket like a network failure: RST, no closing handshake."""
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


def machine_line(machine: dict) -> str:
    """The machine probe's figures in one line, printed under every benchmark's table."""
    return ("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items() if k not in ("load_avg_1m", "cpus"))
            + f", load {machine['load_avg_1m'][0]:.1f}")


def print_report(title: str, args: dict, results: dict, header: list[str], rows: list[list]) -> None:
    """JSON of everything measured, the markdown table for docs/benchmarks.md, and the machine
    probe (bench/machine_probe.py) taken right after the run."""
    from bench.machine_probe import probe

    machine = probe(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
                    os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    print(json.dumps({"bench": title, "args": args, "results": results, "machine": machine}, indent=2, default=str))
    print()
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print()
    print(machine_line(machine))
