"""The Socket.IO comparison (bench/compare_socketio.py, issue 12) runs end to end in a tiny
version, so that the instrument cannot rot while the servers it measures change: a real Tether
node and a real Socket.IO 4.8 server, every workload on both, figures for each, nothing lost,
and everything it started or created is gone afterwards.

Needs PostgreSQL, Redis, Node and npm (`make install-dev`, so CI too, runs `npm ci` in bench/socketio;
without them it is skipped here, never in CI)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def admin_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/postgres"


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_tiny_comparison_end_to_end(tmp_path):
    if not (shutil.which("node") and shutil.which("npm")):
        if os.environ.get("CI"):
            pytest.fail("CI must have node and npm for the Socket.IO comparison")
        pytest.skip("node/npm not installed: the Socket.IO side cannot run")
    out = tmp_path / "compare.json"
    cmd = [sys.executable, "bench/compare_socketio.py", "--streams", "2", "--seconds", "1", "--missed", "5",
           "--reps", "2", "--warmup", "1", "--runs", "1", "--json", str(out), "--pg", admin_url()]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["problems"] == [] and report["node_log_problems"] == {}
    [run] = report["runs"]
    for system in ("tether", "socketio"):
        [resume] = run["resume"]
        [lost] = run["lost"]
        [streams] = run["streams"]
        # Every measured repetition recovered exactly the 5 missed events (the client checks
        # seqs/indexes/texts, Socket.IO's `recovered` flag) and produced a figure.
        for level in (resume[system], lost[system]):
            assert level["problem_count"] == 0
            assert level["open_to_last"]["n"] == 2 and level["lost_to_last"]["n"] == 2
            assert level["lost_to_last"]["p50_ms"] >= level["open_to_last"]["p50_ms"] > 0
        # 2 streams x 20 tokens, every one delivered, each with a delay.
        assert streams[system]["tokens"] == 40 and streams[system]["lost_tokens"] == 0
        assert 0 < streams[system]["p50_ms"] <= streams[system]["max_ms"]

    table = proc.stdout
    for row in ("| resume, open → last missed, K=5 | p50 ms |", "| disconnect → all missed, K=5 | p99 ms |",
                "| streams, N=2 | p99 ms delay |"):
        assert row in table, table

    # Cleaned up: both servers stopped, the scratch database dropped.
    assert not listening(run["ports"]["tether"]) and not listening(run["ports"]["socketio"])
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [report["scratch_database"]]).fetchall()
    assert left == []
