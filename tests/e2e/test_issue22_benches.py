"""Issue 22's instruments run end to end in tiny versions, so that they cannot rot while the code
they measure changes: bench/stream_bench.py (Tether and the floor per N, the CPU ratios),
bench/service_cost_bench.py (an answer's services, both paths), bench/burst_cost_bench.py (a
burst's services by batch size, both bindings), bench/commit_growth_bench.py (the group commit over
an answer's life, both ways) and bench/idle_bench.py --with-floor (idle
sockets on Tether and on daphne alone). Each must finish, lose nothing and
print figures that make sense."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def run(*args: str, timeout: float = 180) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The JSON blob comes first on stdout, the markdown tables after it.
    report, end = json.JSONDecoder().raw_decode(proc.stdout)
    return report, proc.stdout[end:]


def test_tiny_stream_bench_measures_tether_and_the_floor_over_the_same_streams():
    report, tables = run("bench/stream_bench.py", "--streams", "3", "--seconds", "1", "--skip-baseline")
    [level] = report["runs"]
    floor, tether = level["paths"]["floor"], level["paths"]["durable"]
    for path in (floor, tether):
        assert "error" not in path, path
        assert (path["tokens"], path["lost_tokens"]) == (60, 0)  # 3 streams x 20 tokens, all of them
        assert path["node_us_per_event"] > 0 and path["box_us_per_event"] >= path["node_us_per_event"] * 0.5
    assert level["ratios"]["node_ratio"] == pytest.approx(tether["node_us_per_event"] / floor["node_us_per_event"])
    assert "| N | Tether tokens/s | p99 ms | lost | node µs/event | floor µs/frame | node ratio |" in tables
    # When the answers started and ended, from the start line: what makes the window longer.
    assert 0 < tether["first_delta_s"]["p50"] <= tether["first_delta_s"]["max"] < tether["end_s"]["max"]
    assert tether["end_s"]["max"] == pytest.approx(tether["elapsed_s"], abs=0.05)
    # The client's own loop lag over the window: what of the delays is the benchmark's.
    for path in (floor, tether):
        assert 0 <= path["client_lag_ms"]["p99"] <= path["client_lag_ms"]["max"]


def test_tiny_service_cost_bench_measures_both_paths_of_every_step():
    report, tables = run("bench/service_cost_bench.py", "--answers", "5", "--warmup", "1")
    steps = report["summary"]
    assert set(steps) == {"post_user_message", "claim_next_run", "load_run_context", "append_run_deltas", "record_ack",
                          "complete_run", "close_connection"}
    for paths in steps.values():
        assert paths["orm"]["median_us"] > 0 and paths["sql"]["median_us"] > 0
        # PostgreSQL's own CPU: every step runs at least one statement on the server.
        assert paths["orm"]["server_median_us"] > 0 and paths["sql"]["server_median_us"] > 0
    assert "| one answer (sum of medians) |" in tables


def test_tiny_burst_cost_bench_measures_every_step_by_batch_size_and_binding():
    report, tables = run("bench/burst_cost_bench.py", "--rounds", "1", "--sizes", "1,20")
    for binding in ("server", "client"):
        for size in ("1", "20"):
            steps = report["summary"][binding][size]
            assert set(steps) == {"post_user_messages", "claim_runs", "append_run_deltas", "complete_runs"}
            for thread_us, server_us, wall_ms in steps.values():
                assert thread_us > 0 and server_us > 0 and wall_ms > 0
    assert "| complete_runs | 20 |" in tables


def test_tiny_idle_bench_holds_sockets_on_tether_and_on_the_floor():
    _, tables = run("bench/idle_bench.py", "--conns", "20", "--users", "2", "--idle-seconds", "2", "--settle", "0.5",
                    "--warmup", "2", "--with-floor")
    rows = [line for line in tables.splitlines() if line.startswith(("| Tether", "| floor"))]
    assert len(rows) == 2, tables
    for row in rows:
        assert row.rstrip(" |").endswith("20/20"), row  # every socket still answered its ping
    assert "idle CPU % of one core per 1,000 sockets: Tether" in tables


@pytest.mark.parametrize("flags", [[], ["--rewrite-text"], ["--compression", "pglz"]],
                         ids=["text-from-the-log", "rewrite-text", "pglz"])
def test_tiny_commit_growth_bench_measures_every_tenth_and_the_completion(flags):
    report, tables = run("bench/commit_growth_bench.py", "--runs", "3", "--deltas", "10", *flags)
    assert [t["from_delta"] for t in report["tenths"]] == list(range(10))
    assert all(t["wall_ms"] > 0 and t["server_ms"] > 0 for t in report["tenths"])
    assert report["completion_ms"] > 0
    assert ("rewriting the text (before 0012)" in tables) == ("--rewrite-text" in flags)
    assert ("long texts compressed with pglz" in tables) == ("--compression" in flags)
