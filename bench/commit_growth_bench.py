"""The delta group commit over an answer's life (issue 22): does a commit cost more as the runs'
answers grow? N runs, then D group commits of one delta each for every run (two bench tokens,
38 characters, as a busy node's events carry), then one call completing them all; for each tenth
of the commits, the median wall time of one commit and PostgreSQL's CPU for it
(/proc/PID/schedstat of the connection's server process); then the completion's wall time.

    .venv/bin/python bench/commit_growth_bench.py --runs 200 --deltas 200
    .venv/bin/python bench/commit_growth_bench.py --runs 200 --deltas 200 --rewrite-text   # before 0012
    .venv/bin/python bench/commit_growth_bench.py --runs 433 --deltas 200 --compression pglz   # before 0013

--rewrite-text puts back, in the scratch database only, the group commit as it was before
migration 0012 (`tether_append_deltas` rewriting every run's whole text at every delta, as 0011
and the migrations before it did), to compare both in one sitting. --compression pglz puts back
the long texts' compression as it was before migration 0013 (lz4 since). Needs PostgreSQL on this
machine (a scratch database `tether_bench_growth` is recreated)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._support import DEFAULT_PG, machine_line  # noqa: E402
from bench.service_cost_bench import server_cpu  # noqa: E402
from bench.stream_bench import django_on_scratch_database  # noqa: E402


def measure(runs: int, deltas: int, rewrite_text: bool, compression: str | None = None) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from sessions_app import services

    user, _ = get_user_model().objects.get_or_create(username="bench-growth")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
        if rewrite_text:
            cursor.execute(import_module("sessions_app.migrations.0011_run_text_from_log").append_deltas_sql(True))
        for table, column in import_module("sessions_app.migrations.0013_long_text_lz4").COLUMNS if compression else ():
            cursor.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION {compression}')
    ids = [str(services.create_conversation(user.pk).pk) for _ in range(runs)]
    services.post_user_messages([services.NewMessage(c, str(uuid.uuid4()), "go") for c in ids])
    claims = services.claim_runs(ids, "bench", 30.0)
    walls, server = [], []
    for _ in range(deltas):
        writes = [services.DeltaWrite(c.conversation_id, c.run_id, c.fencing_token,
                                      f"t{time.time():.6f} t{time.time():.6f} ") for c in claims]
        cpu, wall = server_cpu(backend), time.perf_counter()
        outcomes = services.append_run_deltas(writes, 30)
        walls.append(1e3 * (time.perf_counter() - wall))
        server.append(1e3 * (server_cpu(backend) - cpu))
        assert all(isinstance(o, list) for o in outcomes.values()), "a write was refused"
    wall = time.perf_counter()
    done = services.complete_runs([services.Completion(c.conversation_id, c.run_id, c.fencing_token, None)
                                   for c in claims])
    completion_ms = 1e3 * (time.perf_counter() - wall)
    texts = [d.events[0]["message"]["text"] for d in done]
    assert all(len(t.split()) == 2 * deltas for t in texts), "a completed text is not its deltas"
    step = max(1, deltas // 10)
    return {
        "tenths": [{"from_delta": i, "wall_ms": statistics.median(walls[i:i + step]),
                    "server_ms": statistics.median(server[i:i + step])} for i in range(0, deltas, step)],
        "completion_ms": completion_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--deltas", type=int, default=200)
    parser.add_argument("--rewrite-text", action="store_true", help="the group commit as before migration 0012")
    parser.add_argument("--compression", choices=["pglz", "lz4"],
                        help="the long texts' compression (default: as migrated, lz4 since 0013)")
    parser.add_argument("--pg", default=DEFAULT_PG)
    args = parser.parse_args()
    django_on_scratch_database(args.pg, "tether_bench_growth")
    result = measure(args.runs, args.deltas, args.rewrite_text, args.compression)
    from bench.machine_probe import probe

    machine = probe(args.pg, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    print(json.dumps({"args": vars(args), **result, "machine": machine}, indent=2))
    label = "rewriting the text (before 0012)" if args.rewrite_text else "the text read from the log"
    if args.compression:
        label += f", long texts compressed with {args.compression}"
    print(f"\n{args.runs} runs, {label}\n\n| deltas so far | wall ms per commit | PostgreSQL ms per commit |")
    print("| --- | --- | --- |")
    for tenth in result["tenths"]:
        print(f"| {tenth['from_delta']} | {tenth['wall_ms']:.1f} | {tenth['server_ms']:.1f} |")
    print(f"\ncompleting all {args.runs} runs in one call: {result['completion_ms']:.0f} ms")
    print(f"\n{machine_line(machine)}")


if __name__ == "__main__":
    main()
