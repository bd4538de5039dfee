"""The floor benchmark (bench/floor_bench.py) runs end to end in a tiny version, so that the
instrument cannot rot while the benchmarks it is the floor of change: plain daphne serving
bench/floor_asgi.py, both workloads, every replayed event and every token received, figures
that make sense, and the node it started stopped afterwards.

Marked `pure` as well as `e2e`: it starts no Tether node and needs no database or Redis (the
machine probe it prints tolerates their absence), so the Redis keyspace fixture is skipped."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.pure]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_tiny_floor_bench_end_to_end():
    cmd = [sys.executable, "bench/floor_bench.py", "--missed", "1,5", "--reps", "3", "--warmup", "1",
           "--streams", "3", "--seconds", "1"]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The JSON blob comes first on stdout, the markdown tables after it.
    report, _ = json.JSONDecoder().raw_decode(proc.stdout)
    results = report["results"]

    assert report["node_log_problems"] == []
    assert [level["missed"] for level in results["resume"]] == [1, 5]
    for level in results["resume"]:
        # Every measured resume got `ready` with replay_count K and exactly the K frames.
        assert level["problem_count"] == 0, level["problems"]
        total, handshake, to_ready = level["total"], level["handshake"], level["to_ready"]
        assert total["n"] == handshake["n"] == to_ready["n"] == 3
        assert 0 < handshake["p50_ms"] <= to_ready["p50_ms"] <= total["p50_ms"] <= total["max_ms"] < 5000
        assert level["replay_only"]["p50_ms"] >= 0

    [streams] = results["streams"]
    # 3 streams x 20 tokens, every one delivered in order, each with a delay.
    assert streams["streams"] == 3 and streams["expected_tokens"] == 60
    assert streams["tokens"] == 60 and streams["lost_tokens"] == 0
    assert 0 < streams["p50_ms"] <= streams["max_ms"] < 5000
    assert streams["node_cpu_s"] >= 0 and streams["node_cpu_ms_per_1000_frames"] >= 0

    rows = ("| floor (daphne only): resume, K missed (python client) |", "| 5 | 3 |", "| 3 x 20 tokens/s |",
            "machine: ")
    for row in rows:
        assert row in proc.stdout, proc.stdout
    assert not listening(report["port"])
    assert took < 30, f"the tiny run took {took:.0f} s"


def test_tiny_floor_bench_with_the_node_client():
    """Both workloads with compare_socketio's Node client: the client that measured Tether and
    Socket.IO, so the floor compares with both."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have node and npm for the Node client")
        pytest.skip("node/npm not installed")
    cmd = [sys.executable, "bench/floor_bench.py", "--client", "node", "--missed", "1,5", "--reps", "3",
           "--warmup", "1", "--streams", "2", "--seconds", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report, _ = json.JSONDecoder().raw_decode(proc.stdout)
    levels = report["results"]["resume"]
    assert [(level["missed"], level["client"], level["problem_count"]) for level in levels] == [
        (1, "node", 0), (5, "node", 0)]
    for level in levels:
        assert level["total"]["n"] == 3
        assert 0 < level["to_ready"]["p50_ms"] <= level["total"]["p50_ms"] < 5000
    [streams] = report["results"]["streams"]
    assert (streams["client"], streams["tokens"], streams["lost_tokens"], streams["problem_count"]) == (
        "node", 40, 0, 0)
    assert 0 < streams["p50_ms"] <= streams["max_ms"] < 5000
    assert not listening(report["port"])
