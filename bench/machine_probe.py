"""A fingerprint of the machine a benchmark ran on, printed beside its figures (issue 12).

    .venv/bin/python bench/machine_probe.py            # about 5 s; JSON on stdout

Issue 12 found the same streaming benchmark 4x slower on one machine than on another of the
same kind, with the same PostgreSQL commit latency and the same CPU speed. A durable stream
costs a node far more thread hand-offs than CPU work: every delta crosses from the event loop
to a database thread and back (realtime/infra/db.py), and 16 database threads and the loop share one
GIL that changes hands every millisecond (realtime/server/drain.py). So this probe measures, next to
the usual suspects, what those hand-offs cost on this machine:

- `python_loop_ms`: a fixed pure-Python loop (CPU speed as Python sees it);
- `thread_pingpong_us`: a round trip between two threads through queues (a wake-up of a
  sleeping thread, twice), with the node's 1 ms switch interval;
- `loop_to_thread_hop_us`: one `run_in_executor` of a no-op from an asyncio loop, as every
  `db()` call does;
- `pg_commit_ms`: a one-row INSERT and COMMIT (autocommit) round trip;
- `redis_ping_us`: a Redis PING round trip;
- `steal_pct` / `busy_pct`: the hypervisor's steal and the machine's busy share of all CPU time
  while the probe ran (from /proc/stat): other tenants and other processes.

Each figure is a median of several rounds. Compare two machines by their probes before
comparing their benchmark figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import statistics
import sys
import threading
import time


def _cpu_times() -> list[int] | None:
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None


def python_loop_ms(rounds: int = 5) -> float:
    def once() -> float:
        start = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i & 7
        return (time.perf_counter() - start) * 1000

    return statistics.median(once() for _ in range(rounds))


def thread_pingpong_us(trips: int = 5000) -> float:
    ping: queue.SimpleQueue = queue.SimpleQueue()
    pong: queue.SimpleQueue = queue.SimpleQueue()

    def echo() -> None:
        while (item := ping.get()) is not None:
            pong.put(item)

    worker = threading.Thread(target=echo, daemon=True)
    worker.start()
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for i in range(trips // 5):
            ping.put(i)
            pong.get()
        samples.append((time.perf_counter() - start) / (trips // 5) * 1e6)
    ping.put(None)
    worker.join()
    return statistics.median(samples)


def loop_to_thread_hop_us(hops: int = 3000) -> float:
    async def run() -> float:
        loop = asyncio.get_running_loop()
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(hops // 5):
                await loop.run_in_executor(None, int)
            samples.append((time.perf_counter() - start) / (hops // 5) * 1e6)
        return statistics.median(samples)

    return asyncio.run(run())


def pg_commit_ms(url: str, commits: int = 300) -> float | None:
    try:
        import psycopg
    except ImportError:
        return None
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TEMP TABLE probe (id serial PRIMARY KEY, v int)")
            samples = []
            for i in range(commits):
                start = time.perf_counter()
                conn.execute("INSERT INTO probe (v) VALUES (%s)", (i,))
                samples.append((time.perf_counter() - start) * 1000)
            return statistics.median(samples)
    except psycopg.Error:
        return None


def redis_ping_us(url: str, pings: int = 2000) -> float | None:
    try:
        import redis
    except ImportError:
        return None
    try:
        client = redis.Redis.from_url(url)
        samples = []
        for _ in range(pings):
            start = time.perf_counter()
            client.ping()
            samples.append((time.perf_counter() - start) * 1e6)
        client.close()
        return statistics.median(samples)
    except redis.RedisError:
        return None


def probe(pg_url: str, redis_url: str) -> dict:
    """Runs every measure once (about 5 s) and returns them with the machine's load."""
    sys.setswitchinterval(0.001)  # as the node runs (realtime/server/drain.py)
    before = _cpu_times()
    load_before = os.getloadavg()[0]
    result = {
        "python_loop_ms": python_loop_ms(),
        "thread_pingpong_us": thread_pingpong_us(),
        "loop_to_thread_hop_us": loop_to_thread_hop_us(),
        "pg_commit_ms": pg_commit_ms(pg_url),
        "redis_ping_us": redis_ping_us(redis_url),
    }
    after = _cpu_times()
    if before and after:
        delta = [a - b for a, b in zip(after, before, strict=True)]
        total = sum(delta) or 1
        idle = delta[3] + delta[4]  # idle + iowait
        result["steal_pct"] = 100 * (delta[7] if len(delta) > 7 else 0) / total
        result["busy_pct"] = 100 * (total - idle) / total
    result["load_avg_1m"] = [load_before, os.getloadavg()[0]]
    result["cpus"] = os.cpu_count()
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    print(json.dumps(probe(args.pg, args.redis), indent=2))


if __name__ == "__main__":
    main()
