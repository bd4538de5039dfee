"""Idle connections benchmark (issue 4): N idle WebSocket connections held by ONE daphne node
with heartbeats running; memory per connection and idle CPU of the node.

    .venv/bin/python bench/idle_bench.py --conns 5000

Every connection authenticates (`connect`, new conversation) and then idles: the client sends
an application `ping` every heartbeat interval (REALTIME_HEARTBEAT_INTERVAL_MS, 25 s by default;
pings spread evenly over the interval) and answers the node's WebSocket protocol pings
(DAPHNE_PING_INTERVAL, 20 s by default). Connections are opened from this one client process
(asyncio + `websockets`, --open-concurrency handshakes in flight), spread over --users users;
the connect rate limits and the per-user connection cap are raised so they do not engage.

Measured on the node process (/proc/<pid>/status VmRSS, /proc/<pid>/stat utime+stime):
  * RSS after warm-up (--warmup connections opened and closed, then a pause), after all N are
    ready (+ --settle s), and at the end of the idle window; KB per connection =
    (max(after, end of window) - baseline) / N;
  * CPU of the node over an idle window of --idle-seconds (30) with all N open (percent of one core);
  * the time to open all N (first handshake to the last `ready`);
  * at the end a `ping` on every socket must come back as a `pong` (sockets still open).
Also the database writes while idle (issue 22): rows updated in the connection table, and rows
written in any table, per minute in the scratch database over the idle window (from 15 s into
it: PostgreSQL's statistics lag a backend's writes by up to 10 s).
Targets: <= 50 KB per idle connection, 5,000 idle connections on one node.
Needs PostgreSQL (scratch database `tether_bench_idle`, dropped at the end) and Redis.

The floor (issue 22: how much of the idle CPU is daphne's own?), as bench/floor_bench.py
measures it for streams: the same client and scenario against bench/floor_asgi.py (no Django,
no Channels, no database, no Redis) under plain daphne, with the daphne options Tether's node
gets from realtime/serve.py (--ping-interval --daphne-ping, --ping-timeout, frame limit,
application close and connect timeouts, listen backlog), so that only the app differs:

    .venv/bin/python bench/idle_bench.py --conns 2000 --floor          # the floor alone
    .venv/bin/python bench/idle_bench.py --conns 10000 --open-concurrency 200 --with-floor

--floor measures the floor process the same way (open time, RSS and KB per connection, idle
CPU and CPU per 1,000 sockets, pongs at end) and prints "–" for the database columns.
--with-floor runs Tether, then the floor, for the same N in one invocation and prints one
table with a row per path, then Tether's and the floor's CPU % per 1,000 sockets and their
ratio. (The floor's daphne has no lingering close of realtime.server.daphne_server: it only
acts when a socket closes, outside the idle window.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from unittest import mock

import websockets
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import (
    DEFAULT_PG,
    ROOT,
    BenchRun,
    Node,
    ProcessReadings,
    free_port,
    make_users,
    print_report,
    raise_nofile,
    wait_port,
)
from bench.floor_bench import APP as FLOOR_APP
from bench.floor_bench import log_problems, stop


class Conn:
    __slots__ = ("index", "ws", "reader", "next_ping", "waiters", "pongs", "closed_code", "other")

    def __init__(self, index: int, ws, interval: float):
        self.index = index
        self.ws = ws
        self.reader: asyncio.Task | None = None
        # First ping somewhere in the first interval, so the pings are spread evenly.
        self.next_ping = time.monotonic() + random.uniform(0, interval)
        self.waiters: dict[str, asyncio.Future] = {}
        self.pongs = 0
        self.closed_code: int | None = None
        self.other: list[str] = []

    async def read(self) -> None:
        """Consumes every frame (so the library keeps answering protocol pings) and matches pongs."""
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame.get("type") == "pong":
                    self.pongs += 1
                    waiter = self.waiters.pop(str(frame.get("id")), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(True)
                else:
                    self.other.append(frame.get("type"))
        except ConnectionClosed:
            pass
        finally:
            self.closed_code = self.ws.close_code or 1006
            for waiter in self.waiters.values():
                if not waiter.done():
                    waiter.set_result(False)


async def open_one(index: int, url: str, token: str, interval: float, sem: asyncio.Semaphore,
                   failures: list[str]) -> Conn | None:
    async with sem:
        for attempt in range(5):
            try:
                ws = await websockets.connect(url, ping_interval=None, open_timeout=60, close_timeout=5,
                                              compression=None, proxy=None, max_size=2**20)
                break
            except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
                if attempt == 4:
                    failures.append(f"open {index}: {exc!r}")
                    return None
                await asyncio.sleep(0.2 * (attempt + 1))
        try:
            await ws.send(json.dumps({"type": "connect", "token": token, "conversation_id": None,
                                      "last_seq": None, "client_id": str(uuid.uuid4())}))
            ready = json.loads(await asyncio.wait_for(ws.recv(), 60))
        except (ConnectionClosed, TimeoutError) as exc:
            failures.append(f"connect {index}: {exc!r}")
            await ws.close()
            return None
        if ready.get("type") != "ready":
            failures.append(f"connect {index}: {ready}")
            await ws.close()
            return None
    conn = Conn(index, ws, interval)
    conn.reader = asyncio.create_task(conn.read())
    return conn


async def heartbeat(conns: list[Conn], interval: float, stop: asyncio.Event, sent: list[int]) -> None:
    """One task for all sockets: each gets an application `ping` every `interval` seconds."""
    while not stop.is_set():
        now = time.monotonic()
        for conn in list(conns):
            if conn.closed_code is None and now >= conn.next_ping:
                conn.next_ping += interval
                try:
                    await conn.ws.send(json.dumps({"type": "ping", "id": f"hb-{conn.index}-{sent[0]}"}))
                    sent[0] += 1
                except ConnectionClosed:
                    pass
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def final_check(conns: list[Conn], timeout: float) -> tuple[int, list[int]]:
    """A ping on every socket; returns (pongs received, indexes of sockets that failed)."""
    loop = asyncio.get_running_loop()
    futures = {}
    for conn in conns:
        if conn.closed_code is not None:
            continue
        fut = loop.create_future()
        conn.waiters[f"final-{conn.index}"] = fut
        futures[conn.index] = fut
        try:
            await conn.ws.send(json.dumps({"type": "ping", "id": f"final-{conn.index}"}))
        except ConnectionClosed:
            fut.set_result(False)
    if futures:
        await asyncio.wait(futures.values(), timeout=timeout)
    ok = [i for i, f in futures.items() if f.done() and f.result()]
    failed = sorted({c.index for c in conns} - set(ok))
    return len(ok), failed


def open_rows() -> int:
    from sessions_app.models import Connection

    return Connection.objects.filter(closed_at__isnull=True).count()


WRITES_LAG = 15.0


def database_writes() -> tuple[int, int]:
    """(rows updated in the connection table, rows inserted, updated or deleted in any table)
    in the scratch database so far, from PostgreSQL's statistics (issue 22: does an idle
    socket cost periodic writes?)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(
            "SELECT coalesce(sum(n_tup_upd) FILTER (WHERE relname = 'sessions_app_connection'), 0),"
            " coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
        )
        updated, written = cur.fetchone()
    return int(updated), int(written)


class FloorNode(ProcessReadings):
    """The floor app under plain daphne, with the same reading methods as bench._support.Node
    (ws_url, rss_kb, cpu_seconds, threads), so `scenario` measures both the same way."""

    database = False

    def __init__(self, daphne_ping: int) -> None:
        self.port = free_port()
        self.daphne_ping = daphne_ping
        self.log_dir = Path(tempfile.mkdtemp(prefix="tether-bench-idle-floor-"))
        self.log_path = self.log_dir / "floor.log"
        self.proc: subprocess.Popen | None = None
        self.argv: list[str] = []

    def daphne_argv(self) -> list[str]:
        """realtime.serve's daphne options for a node with this port and ping interval, with the
        floor app in place of project.asgi: only the app differs from Tether's node."""
        from realtime.serve import daphne_args

        # daphne_args reads the node's environment; these are what Node.start and main give it.
        with mock.patch.dict(os.environ, {"PORT": str(self.port), "BIND": "127.0.0.1",
                                          "DAPHNE_PING_INTERVAL": str(self.daphne_ping)}):
            argv = daphne_args([])
        assert argv[-1] == "project.asgi:application", argv
        return [*argv[:-1], FLOOR_APP]

    def start(self) -> FloorNode:
        self.argv = self.daphne_argv()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "daphne", *self.argv], cwd=ROOT,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)},
                                         stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


async def scenario(node: Node | FloorNode, tokens: list[str], args: argparse.Namespace) -> dict:
    from asgiref.sync import sync_to_async

    # The floor has no database: its database figures are None ("–" in the table).
    database = getattr(node, "database", True)

    interval = args.heartbeat_ms / 1000
    failures: list[str] = []
    url = node.ws_url

    # Warm-up: the whole path once (imports, thread pool, DB and Redis pools), then a pause.
    sem = asyncio.Semaphore(args.open_concurrency)
    warm = await asyncio.gather(*(open_one(-1 - i, url, tokens[i % len(tokens)], interval, sem, failures)
                                  for i in range(args.warmup)))
    await asyncio.gather(*(c.ws.close() for c in warm if c))
    await asyncio.gather(*(c.reader for c in warm if c))
    await asyncio.sleep(args.settle)
    rss_base = node.rss_kb()
    failures.clear()

    conns: list[Conn] = []
    stop = asyncio.Event()
    sent = [0]
    pinger = asyncio.create_task(heartbeat(conns, interval, stop, sent))

    async def open_and_keep(i: int) -> None:
        conn = await open_one(i, url, tokens[i % len(tokens)], interval, sem, failures)
        if conn is not None:
            conns.append(conn)

    t0 = time.monotonic()
    await asyncio.gather(*(open_and_keep(i) for i in range(args.conns)))
    open_seconds = time.monotonic() - t0
    print(f"opened {len(conns)}/{args.conns} in {open_seconds:.1f}s", file=sys.stderr)
    await asyncio.sleep(args.settle)
    rss_open = node.rss_kb()
    server_rows = await sync_to_async(open_rows)() if database else None

    cpu0, w0 = node.cpu_seconds(), time.monotonic()
    pongs0 = sum(c.pongs for c in conns)
    # PostgreSQL's statistics show a backend's writes up to PGSTAT_IDLE_INTERVAL (10 s) late:
    # counted from WRITES_LAG into the window, the opens' writes are not taken for idle ones.
    await asyncio.sleep(min(WRITES_LAG, args.idle_seconds / 2))
    writes0, ww0 = (await sync_to_async(database_writes)() if database else None), time.monotonic()
    await asyncio.sleep(max(0.0, w0 + args.idle_seconds - time.monotonic()))
    cpu1, w1 = node.cpu_seconds(), time.monotonic()
    pongs1 = sum(c.pongs for c in conns)
    writes1 = await sync_to_async(database_writes)() if database else None
    rss_idle = node.rss_kb()

    ok, failed = await final_check(conns, timeout=60)
    stop.set()
    await pinger
    closed_early = [(c.index, c.closed_code) for c in conns if c.closed_code is not None and c.index in failed]
    other_frames: dict[str, int] = {}
    for c in conns:
        for t in c.other:
            other_frames[t] = other_frames.get(t, 0) + 1

    # Close everything and see what the node gives back (informational).
    t_close = time.monotonic()
    for i in range(0, len(conns), 500):
        await asyncio.gather(*(c.ws.close() for c in conns[i:i + 500]), return_exceptions=True)
    await asyncio.gather(*(c.reader for c in conns), return_exceptions=True)
    close_seconds = time.monotonic() - t_close
    await asyncio.sleep(args.settle)
    rss_closed = node.rss_kb()

    n = len(conns)
    rss_peak = max(rss_open, rss_idle)
    return {
        "connections_requested": args.conns,
        "connections_ready": n,
        "open_failures": failures[:20],
        "open_failure_count": len(failures),
        "server_open_rows": server_rows,
        "open_seconds": open_seconds,
        "opens_per_second": n / open_seconds if open_seconds else 0,
        "rss_baseline_kb": rss_base,
        "rss_after_open_kb": rss_open,
        "rss_end_of_idle_kb": rss_idle,
        "rss_after_close_kb": rss_closed,
        "kb_per_connection": (rss_peak - rss_base) / n if n else None,
        "idle_window_s": w1 - w0,
        "idle_cpu_percent_of_one_core": 100 * (cpu1 - cpu0) / (w1 - w0),
        "idle_cpu_percent_per_1000_connections": 100 * (cpu1 - cpu0) / (w1 - w0) / n * 1000 if n else None,
        "idle_connection_row_updates_per_minute": 60 * (writes1[0] - writes0[0]) / (w1 - ww0) if database else None,
        "idle_row_writes_per_minute": 60 * (writes1[1] - writes0[1]) / (w1 - ww0) if database else None,
        "idle_cpu_ms_per_connection_per_s": 1000 * (cpu1 - cpu0) / (w1 - w0) / n if n else None,
        "app_pings_sent_total": sent[0],
        "pongs_in_idle_window": pongs1 - pongs0,
        "node_threads": node.threads(),
        "final_ping_ok": ok,
        "final_ping_failed": len(failed),
        "closed_during_run": closed_early[:20],
        "other_frames": other_frames,
        "close_all_seconds": close_seconds,
    }


HEADER = ["conns", "ready", "open time s", "RSS base MB", "RSS open MB", "KB/conn", "idle CPU % (1 core)",
          "CPU % per 1,000", "connection row updates/min", "row writes/min (all tables)", "pongs at end"]


def table_row(conns: int, r: dict) -> list:
    """One row of the table; "–" where the path has no database (the floor)."""
    def per_minute(value: float | None) -> str:
        return "–" if value is None else f"{value:.0f}"

    return [conns, r["connections_ready"], f"{r['open_seconds']:.1f}", f"{r['rss_baseline_kb'] / 1024:.0f}",
            f"{max(r['rss_after_open_kb'], r['rss_end_of_idle_kb']) / 1024:.0f}",
            f"{r['kb_per_connection']:.1f}" if r["kb_per_connection"] is not None else "-",
            f"{r['idle_cpu_percent_of_one_core']:.1f}",
            f"{r['idle_cpu_percent_per_1000_connections']:.2f}" if r["connections_ready"] else "-",
            per_minute(r["idle_connection_row_updates_per_minute"]), per_minute(r["idle_row_writes_per_minute"]),
            f"{r['final_ping_ok']}/{r['connections_ready']}"]


def run_tether(args: argparse.Namespace) -> tuple[dict, bool]:
    """The Tether node's run (scratch database, Redis, one `realtime.serve` node); (results, ok)."""
    with BenchRun("idle", args.pg, keep=args.keep) as run:
        tokens = [t for _, t in make_users(args.users)]
        huge = str(max(100_000, args.conns * 10))
        env = {
            "REALTIME_HEARTBEAT_INTERVAL_MS": str(args.heartbeat_ms),
            "DAPHNE_PING_INTERVAL": str(args.daphne_ping),
            "REALTIME_RATE_CONNECT_USER": f"{huge}/60",
            "REALTIME_RATE_CONNECT_IP": f"{huge}/60",
            "REALTIME_MAX_CONNECTIONS_PER_USER": huge,
        }
        if args.resync_interval is not None:
            env["REALTIME_RESYNC_INTERVAL"] = str(args.resync_interval)
        node = Node(run, "idle", env).start()
        result = asyncio.run(scenario(node, tokens, args))
        result["node_log_problems"] = run.log_problems()
        result["node_env"] = env
        ok = result["connections_ready"] == args.conns and result["final_ping_failed"] == 0
        result["all_open_at_end"] = ok
        run.failed = not ok
    return result, ok


def run_floor(args: argparse.Namespace) -> tuple[dict, bool]:
    """The floor's run: the same scenario against bench/floor_asgi.py under plain daphne; (results, ok)."""
    node = FloorNode(args.daphne_ping)
    result: dict | None = None
    try:
        node.start()
        print(f"floor: daphne {' '.join(node.argv)} (pid {node.pid})", file=sys.stderr)
        # The floor does not look at the token; the users only spread Tether's sockets.
        result = asyncio.run(scenario(node, ["floor"] * args.users, args))
    finally:
        node.stop()
        problems = log_problems(node.log_path)
        ok = (result is not None and not problems and result["connections_ready"] == args.conns
              and result["final_ping_failed"] == 0)
        if ok and not args.keep:
            shutil.rmtree(node.log_dir, ignore_errors=True)
        elif not ok:
            print(f"floor log kept in {node.log_path}", file=sys.stderr)
    result["node_log_problems"] = problems
    result["daphne_argv"] = node.argv
    result["all_open_at_end"] = ok
    return result, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=5000, help="idle connections to hold (default 5000)")
    parser.add_argument("--users", type=int, default=100, help="users the connections are spread over")
    parser.add_argument("--heartbeat-ms", type=int, default=25000,
                        help="REALTIME_HEARTBEAT_INTERVAL_MS; the client pings this often (Tether and floor)")
    parser.add_argument("--daphne-ping", type=int, default=20,
                        help="DAPHNE_PING_INTERVAL (protocol pings), s; daphne's --ping-interval for the floor too")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="CPU measurement window")
    parser.add_argument("--settle", type=float, default=5.0, help="pause before each RSS reading, s")
    parser.add_argument("--warmup", type=int, default=50, help="connections opened and closed before the baseline")
    parser.add_argument("--open-concurrency", type=int, default=100, help="handshakes in flight at once")
    parser.add_argument("--resync-interval", type=float, default=None,
                        help="REALTIME_RESYNC_INTERVAL for the node (default: the project's, 10 s)")
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database and node logs")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--floor", action="store_true",
                      help="the floor only: bench/floor_asgi.py under plain daphne, no database")
    mode.add_argument("--with-floor", action="store_true",
                      help="Tether, then the floor, for the same N; one table with a row per path")
    args = parser.parse_args()

    nofile = raise_nofile(args.conns * 2 + 1000)
    if nofile < args.conns + 500:
        sys.exit(f"open files limit {nofile} too low for {args.conns} sockets; run `ulimit -n 20000` first")
    if args.floor or args.with_floor:
        main_with_floor(args)
        return
    result, ok = run_tether(args)
    r = result
    print_report("idle", vars(args), r, HEADER, [table_row(args.conns, r)])
    print(f"\ntargets: <= 50 KB/conn: {'met' if (r['kb_per_connection'] or 1e9) <= 50 else 'MISSED'}; "
          f"{args.conns} idle connections all open at the end: {'yes' if ok else 'NO'}")
    sys.exit(0 if ok else 1)


def main_with_floor(args: argparse.Namespace) -> None:
    """--floor and --with-floor: one row per path; Tether first, then the floor, one after the
    other (never at once: they would share the machine's two cores)."""
    results: dict[str, dict] = {}
    oks: dict[str, bool] = {}
    if args.with_floor:
        database_url = os.environ.get("DATABASE_URL")
        results["tether"], oks["tether"] = run_tether(args)
        # BenchRun points DATABASE_URL at its scratch database, dropped by now: the machine
        # probe under the table measures PostgreSQL through the one it was before.
        if database_url is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = database_url
    results["floor"], oks["floor"] = run_floor(args)
    labels = {"tether": "Tether (realtime.serve)", "floor": "floor (daphne + floor_asgi)"}
    print_report("idle-floor" if args.floor else "idle-with-floor", vars(args), results, ["path", *HEADER],
                 [[labels[path], *table_row(args.conns, r)] for path, r in results.items()])
    print()
    for path, r in results.items():
        kb = r["kb_per_connection"]
        print(f"{labels[path]}: <= 50 KB/conn: {'met' if (kb or 1e9) <= 50 else 'MISSED'}; "
              f"{args.conns} idle connections all open at the end: {'yes' if oks[path] else 'NO'}")
    floor = results["floor"]["idle_cpu_percent_per_1000_connections"]
    if args.with_floor:
        tether = results["tether"]["idle_cpu_percent_per_1000_connections"]
        ratio = f"{tether / floor:.2f}" if tether is not None and floor else "-"
        print(f"idle CPU % of one core per 1,000 sockets: Tether {tether:.3f}, floor {floor:.3f}, "
              f"ratio Tether/floor {ratio}")
    else:
        print(f"idle CPU % of one core per 1,000 sockets: floor {floor:.3f}")
    sys.exit(0 if all(oks.values()) else 1)


if __name__ == "__main__":
    main()
