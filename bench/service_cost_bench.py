"""The CPU a node spends in the services of one answer (issue 22): for each step of a run's life,
the calling thread's CPU time (`time.thread_time()`: Python, the driver, libpq) and PostgreSQL's
(the CPU time of the server process serving the connection, from /proc/PID/schedstat: the
server must run on this machine) through the one-round-trip path the node takes on PostgreSQL
and through the ORM reference beside it, in one sitting.

    .venv/bin/python bench/service_cost_bench.py --answers 300

Each answer: a conversation, a user message, its claim, the agent's context, three one-delta
group commits (the same function on both paths), a stored ack, the completion, the socket's
close. The first --warmup answers are not counted.
Reported per step: median and p90 µs of the node's CPU, for both paths, and their ratio;
median µs of PostgreSQL's CPU for both paths. Needs PostgreSQL
(a scratch database `tether_bench_services` is recreated).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._support import DEFAULT_PG, machine_line  # noqa: E402
from bench.stream_bench import django_on_scratch_database  # noqa: E402


def measure(answers: int, warmup: int, orm: bool) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    from django.contrib.auth import get_user_model
    from django.db import connection as db_connection

    from sessions_app import services
    from sessions_app.models import Connection
    from sessions_app.services import connections, event_log, runs

    post = event_log.post_user_message_orm if orm else event_log.post_user_message_in_one_trip
    claim_run = runs.claim_next_run_orm if orm else runs.claim_next_run_in_one_trip
    load = runs.load_run_context_orm if orm else runs.load_run_context_raw
    complete = runs.complete_run_orm if orm else runs.complete_run_in_one_trip
    store_ack = connections.record_ack_orm if orm else connections.record_ack_sql
    close = connections.close_connection_orm if orm else connections.close_connection_sql
    user, _ = get_user_model().objects.get_or_create(username="bench-services")
    costs: dict[str, list[float]] = {}
    server_costs: dict[str, list[float]] = {}
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def timed(name: str, fn: Callable, *args: object) -> object:
        server_started = server_cpu(backend)
        started = time.thread_time()
        result = fn(*args)
        costs.setdefault(name, []).append(time.thread_time() - started)
        server_costs.setdefault(name, []).append(server_cpu(backend) - server_started)
        return result

    for _ in range(answers + warmup):
        conversation = services.create_conversation(user.pk)
        cid = str(conversation.pk)
        row = Connection.objects.create(user=user, conversation=conversation, client_id="bench", channel_name="ws.b",
                                        node="bench")
        timed("post_user_message", post, cid, uuid.uuid4(), "hello")
        claim = timed("claim_next_run", claim_run, cid, "bench", 30.0)
        timed("load_run_context", load, claim.run_id)
        for _ in range(3):
            timed("append_run_deltas", services.append_run_deltas,
                  [services.DeltaWrite(cid, claim.run_id, claim.fencing_token, "tok ")], 30)
        timed("record_ack", store_ack, row.pk, cid, 3)
        timed("complete_run", complete, cid, claim.run_id, claim.fencing_token, None)
        timed("close_connection", close, row.pk, 1000, "bench", 3)
    skip = {"append_run_deltas": 3 * warmup}
    return ({name: values[skip.get(name, warmup):] for name, values in costs.items()},
            {name: values[skip.get(name, warmup):] for name, values in server_costs.items()})


def server_cpu(pid: int) -> float:
    """Seconds of CPU the server process `pid` has used (the kernel's own count, in ns)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--pg", default=DEFAULT_PG)
    args = parser.parse_args()
    django_on_scratch_database(args.pg, "tether_bench_services")
    # Both paths in one sitting, on the same database, one after the other.
    measured = {path: measure(args.answers, args.warmup, orm=path == "orm") for path in ("orm", "sql")}
    results = {path: node for path, (node, _) in measured.items()}
    server = {path: pg for path, (_, pg) in measured.items()}
    from bench.machine_probe import probe

    machine = probe(args.pg, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    summary = {
        step: {path: {"median_us": 1e6 * statistics.median(results[path][step]),
                      "p90_us": 1e6 * sorted(results[path][step])[int(0.9 * len(results[path][step]))],
                      "server_median_us": 1e6 * statistics.median(server[path][step])}
               for path in results}
        for step in results["sql"]
    }
    print(json.dumps({"args": vars(args), "summary": summary, "machine": machine}, indent=2))
    print("\n| step | ORM µs CPU (median / p90) | one round trip µs CPU (median / p90) | ORM ÷ one trip "
          "| PostgreSQL µs CPU, ORM / one trip (median) |")
    print("| --- | --- | --- | --- | --- |")
    total = {"orm": 0.0, "sql": 0.0, "orm_pg": 0.0, "sql_pg": 0.0}
    for step, paths in summary.items():
        orm, sql = paths["orm"], paths["sql"]
        # One answer writes three group commits: counted three times in the answer's total.
        times = 3 if step == "append_run_deltas" else 1
        total["orm"] += times * orm["median_us"]
        total["sql"] += times * sql["median_us"]
        total["orm_pg"] += times * orm["server_median_us"]
        total["sql_pg"] += times * sql["server_median_us"]
        print(f"| {step} | {orm['median_us']:.0f} / {orm['p90_us']:.0f} | {sql['median_us']:.0f} / {sql['p90_us']:.0f} "
              f"| {orm['median_us'] / sql['median_us']:.1f} "
              f"| {orm['server_median_us']:.0f} / {sql['server_median_us']:.0f} |")
    ratio = total["orm"] / total["sql"]
    print(f"| one answer (sum of medians) | {total['orm']:.0f} | {total['sql']:.0f} | {ratio:.1f} "
          f"| {total['orm_pg']:.0f} / {total['sql_pg']:.0f} |")
    print(f"\n{machine_line(machine)}")


if __name__ == "__main__":
    main()
