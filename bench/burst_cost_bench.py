"""The services of a burst of answers, per answer, by how many go in one call (issue 22): what
`post_user_messages`, `claim_runs` (with the contexts), the delta group commit
(`append_run_deltas`) and `complete_runs` cost the calling thread (`time.thread_time()`:
Python, the driver, libpq) and PostgreSQL (the server process's CPU, /proc/PID/schedstat), and
the call's wall time, for batches of 1, 10, 100 and 500 answers; with the parameters bound on the
server (`bound_cursor()`, what the node does) and, beside it, bound on the client (Django's
default cursor: every array element quoted into the statement in Python).

    .venv/bin/python bench/burst_cost_bench.py --rounds 5

Each round, for each batch size: that many new conversations with one message each, posted in
one call, claimed in one call, three group commits of one delta each, completed in one call.
Reported: the median over the rounds of µs per answer for each step (calling thread / PostgreSQL)
and the median wall ms of one call. Needs PostgreSQL on this machine (a scratch database
`tether_bench_burst` is recreated).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._support import DEFAULT_PG, machine_line  # noqa: E402
from bench.service_cost_bench import server_cpu  # noqa: E402
from bench.stream_bench import django_on_scratch_database  # noqa: E402

STEPS = ("post_user_messages", "claim_runs", "append_run_deltas", "complete_runs")


@contextmanager
def client_binding() -> Iterator[None]:
    """Every `bound_cursor()` is Django's default (client-binding) cursor meanwhile."""
    from django.db import connection

    from sessions_app.services import event_log, runs

    saved = event_log.bound_cursor, runs.bound_cursor
    event_log.bound_cursor = runs.bound_cursor = connection.cursor
    try:
        yield
    finally:
        event_log.bound_cursor, runs.bound_cursor = saved


def one_round(size: int, user_pk: int, backend: int) -> dict[str, tuple[float, float, float]]:
    """(thread µs per answer, PostgreSQL µs per answer, wall ms of the call) for each step."""
    from sessions_app import services

    ids = [str(services.create_conversation(user_pk).pk) for _ in range(size)]
    costs: dict[str, tuple[float, float, float]] = {}

    def timed(name: str, fn: Callable, *args: object) -> object:
        server, thread, wall = server_cpu(backend), time.thread_time(), time.perf_counter()
        result = fn(*args)
        costs[name] = (1e6 * (time.thread_time() - thread) / size, 1e6 * (server_cpu(backend) - server) / size,
                       1e3 * (time.perf_counter() - wall))
        return result

    timed("post_user_messages", services.post_user_messages,
          [services.NewMessage(cid, str(uuid.uuid4()), "go") for cid in ids])
    claims = timed("claim_runs", services.claim_runs, ids, "bench", 30.0)
    for _ in range(3):  # the last of three is kept: the run rows are warm, as in a stream
        timed("append_run_deltas", services.append_run_deltas,
              [services.DeltaWrite(c.conversation_id, c.run_id, c.fencing_token, "t1 t2 t3 ") for c in claims], 30)
    timed("complete_runs", services.complete_runs,
          [services.Completion(c.conversation_id, c.run_id, c.fencing_token, None) for c in claims])
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="1,10,100,500")
    parser.add_argument("--pg", default=DEFAULT_PG)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    django_on_scratch_database(args.pg, "tether_bench_burst")
    from django.contrib.auth import get_user_model
    from django.db import connection

    user, _ = get_user_model().objects.get_or_create(username="bench-burst")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    one_round(10, user.pk, backend)  # warm: the functions' plans, the connection
    results: dict[str, dict[int, dict[str, list]]] = {"server": {}, "client": {}}
    for _ in range(args.rounds):
        for binding in ("server", "client"):
            for size in sizes:
                if binding == "client":
                    with client_binding():
                        costs = one_round(size, user.pk, backend)
                else:
                    costs = one_round(size, user.pk, backend)
                for step, values in costs.items():
                    results[binding].setdefault(size, {}).setdefault(step, []).append(values)
    from bench.machine_probe import probe

    machine = probe(args.pg, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    summary = {binding: {size: {step: [statistics.median(v[i] for v in values) for i in range(3)]
                                for step, values in steps.items()} for size, steps in per_size.items()}
               for binding, per_size in results.items()}
    print(json.dumps({"args": vars(args), "summary": summary, "machine": machine}, indent=2))
    print("\n| step | answers per call | bound on the server: thread / PostgreSQL µs per answer, wall ms per call "
          "| bound on the client: the same |")
    print("| --- | --- | --- | --- |")
    for step in STEPS:
        for size in sizes:
            s, c = summary["server"][size][step], summary["client"][size][step]
            print(f"| {step} | {size} | {s[0]:.0f} / {s[1]:.0f}, {s[2]:.1f} | {c[0]:.0f} / {c[1]:.0f}, {c[2]:.1f} |")
    print(f"\n{machine_line(machine)}")


if __name__ == "__main__":
    main()
