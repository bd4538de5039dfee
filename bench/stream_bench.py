"""Streaming benchmark (issue 3): N concurrent conversations each streaming T tokens/s through
one daphne node, next to the same load through the floor (bench/floor_asgi.py under plain
daphne: no Tether logic, no database, no Redis) and through a plain Channels group_send with
no durability (the baseline), in the same run, for every N of --streams.

    .venv/bin/python bench/stream_bench.py --streams 100 --rate 20 --seconds 10
    .venv/bin/python bench/stream_bench.py --streams 100,500 --skip-baseline --repeat 3   # CPU ratios, spread
    .venv/bin/python bench/stream_bench.py --streams 100 --skip-floor        # Tether and baseline only
    .venv/bin/python bench/stream_bench.py --streams 100 --agent-workers 1   # agents off the web node

For each repetition (--repeat K) of the --streams list and each N, in this order, each on a
fresh node: the floor (skip it with --skip-floor), Tether (the durable path; users are made
for the largest N), the baseline (skip it with --skip-baseline); the floor and Tether run one
right after the other, on an equally warm machine. Every phase opens its N sockets first
(Tether and the floor: `connect`, then `ready`); the streams start together once all of them
are ready, and not before 2 s after the phase began. Every rate and CPU figure covers the
window from that start to the end of the last stream: the connect burst is outside it.

Reported for each N and path: delivered tokens/s and events/s (Tether coalesces tokens into
events, --coalesce-ms; the floor and the baseline send one frame per token), events written/s
(Tether), p50/p99/max delay from a token's creation (in the agent) to its arrival at the
client, lost tokens, and CPU over the window:
- node µs/event: user + system time of the node process (/proc/PID/stat) per delivered event
  (per frame for the floor); with --agent-workers the workers' CPU is not in it;
- box µs/event: busy time of the whole machine (/proc/stat, all cores: user + nice + system +
  irq + softirq + steal) per delivered event: the node plus PostgreSQL, Redis, the benchmark
  client and whatever else runs at the time. The per-path table splits it: node, client (this
  process) and rest (PostgreSQL and Redis for Tether; for the floor, which uses neither, about 0
  unless something else ran beside the benchmark: then no box figure of that row is worth much);
- node ratio: Tether's node µs/event over the floor's node µs/frame for the same N (the
  issue's target: at most 2.5x); box ratio: the same for the box figures;
- the client's own loop lag (p99 and max of how late a 5 ms sleep wakes in this process over
  the window): one process reads every socket, and its own backlog would count as delay.
  BENCH_DUMP_DELAYS=FILE writes every token's (creation, delay) and the lag samples in time.

Printed: a JSON blob with everything; a table with one row per path and N; the CPU table with
one row per N (and repetition): Tether tokens/s, p99, lost, node and box µs per event/frame of
Tether and the floor and both ratios; with --repeat above 1, the min–max of the ratios per N;
the machine probe (bench/machine_probe.py). Needs PostgreSQL (a scratch database
`tether_bench` is recreated) and Redis. Client and server share the machine (2 cores here):
run nothing else beside it, the box figures count everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def prepare_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": url})
    return url


def django_on_scratch_database(admin_url: str, name: str) -> None:
    """Django set up in this process on the scratch database `name`, recreated and migrated
    (`prepare_database`): what a benchmark that calls the services directly needs first."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ["DATABASE_URL"] = prepare_database(admin_url, name)
    import django

    django.setup()


def make_tokens(count: int) -> list[str]:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import AccessToken

    user_model = get_user_model()
    tokens = []
    for i in range(count):
        user, _ = user_model.objects.get_or_create(username=f"bench{i}")
        tokens.append(str(AccessToken.for_user(user)))
    return tokens


def count_events() -> int:
    from sessions_app.models import Event

    return Event.objects.count()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (ended ones too): how much work
    the node did, whatever else ran on the machine (its wall-clock figures move with the load;
    this moves much less).

    Read from the process's CPU clock (Linux's `clock_getcpuclockid`: nanoseconds), not from
    /proc/PID/stat, which counts in ticks of 10 ms: the tiny run of the end-to-end test
    (60 frames on daphne alone, a few ms) read 0 there on a fast machine."""
    try:
        return time.clock_gettime(_process_cpu_clock(pid))
    except OSError:  # not Linux's clock ids: the ticks
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _process_cpu_clock(pid: int) -> int:
    """The clock id glibc's `clock_getcpuclockid(pid)` makes: the whole process's scheduler
    time (Linux's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED))."""
    return (~pid << 3) | 2


def box_busy_seconds() -> float:
    """Busy CPU time of the whole machine so far, all cores (user + nice + system + irq + softirq
    + steal of /proc/stat's first line; guest time is already in user): what the node,
    PostgreSQL, Redis and the client cost together, which the node's own figure leaves out."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class CpuWindow:
    """The CPU spent between start() and stop() by one process (the node), by this process (the
    benchmark client) and by the whole machine. run_phase calls both as its hooks, so the window
    is the streaming alone: not the node's start, not the connect burst."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.begin: tuple[float, ...] | None = None
        self.end: tuple[float, ...] | None = None

    def sample(self) -> tuple[float, ...]:
        return time.monotonic(), cpu_seconds(self.pid), time.process_time(), box_busy_seconds()

    def start(self) -> None:
        self.begin = self.sample()

    def stop(self) -> None:
        self.end = self.sample()

    def figures(self, events: int) -> dict:
        """CPU seconds over the window, and µs of it per delivered event (frame)."""
        assert self.begin is not None and self.end is not None, "the window was never opened and closed"
        wall, node, client, box = (b - a for a, b in zip(self.begin, self.end, strict=True))
        per_event = 1e6 / max(1, events)
        # The rest of the box: PostgreSQL and Redis for Tether; for the floor, which uses
        # neither, close to 0 unless something else ran beside the benchmark.
        rest = box - node - client
        return {"cpu_window_s": wall, "node_cpu_s": node, "client_cpu_s": client, "box_cpu_s": box,
                "rest_cpu_s": rest, "node_us_per_event": node * per_event,
                "client_us_per_event": client * per_event, "rest_us_per_event": rest * per_event,
                "box_us_per_event": box * per_event}


def start_agent_worker(index: int, env: dict) -> subprocess.Popen:
    log = open(ROOT / f"bench-agents-{index}.log", "w")  # noqa: SIM115 - lives as long as the worker
    return subprocess.Popen([sys.executable, "manage.py", "run_agents", "--grace", "0"], cwd=ROOT,
                            env={**os.environ, **env, "REALTIME_NODE_ID": f"bench-agents-{index}"},
                            stdout=log, stderr=subprocess.STDOUT)


def start_node(asgi: str, port: int, env: dict) -> subprocess.Popen:
    log = open(ROOT / f"bench-node-{port}.log", "w")  # noqa: SIM115 - lives as long as the node
    cmd = [sys.executable, "-m", "realtime.serve"] if asgi == "project.asgi:application" else [
        sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), asgi]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env, "PORT": str(port), "BIND": "127.0.0.1"},
                            stdout=log, stderr=subprocess.STDOUT)



class StartLine:
    """What the N streams of one phase share: they start together, once every socket is ready
    (and not before `start_at`), and the phase ends with the last of them. The two moments are
    the window every figure covers; `on_start` and `on_end` are called right at them, so that a
    caller's CPU samples cover the same window (and not the connect burst before it)."""

    def __init__(self, count: int, start_at: float, on_start: Callable[[], object] | None = None,
                 on_end: Callable[[], object] | None = None) -> None:
        self.to_open = self.running = count
        self.start_at = start_at
        self.on_start = on_start
        self.on_end = on_end
        self.go = asyncio.Event()
        self.all_open_at = self.started_at = self.ended_at = self.started_wall = float("nan")

    async def ready(self) -> None:
        """Called by each stream once its socket is ready; returns when the streams start."""
        self.to_open -= 1
        if self.to_open == 0:
            # The last socket to get ready starts them all: before, late sockets started their
            # streams alone and the connect burst overlapped the first tokens.
            self.all_open_at = time.monotonic()
            await asyncio.sleep(max(0.0, self.start_at - self.all_open_at))
            self.started_at = time.monotonic()
            self.started_wall = time.time()
            if self.on_start is not None:
                self.on_start()
            self.go.set()
        await self.go.wait()

    def finished(self) -> None:
        """Called by each stream when its last frame arrived (before its socket closes)."""
        self.running -= 1
        if self.running == 0:
            self.ended_at = time.monotonic()
            if self.on_end is not None:
                self.on_end()


async def one_stream(url: str, token: str, durable: bool, expected: int, line: StartLine) -> dict:
    delays: list[float] = []
    created: list[float] = []  # each token's creation (wall clock), in the order of `delays`
    tokens = events = 0
    assembled: list[str] = []
    async with websockets.connect(url, max_size=None, open_timeout=30, ping_interval=None) as ws:
        if durable:
            await ws.send(json.dumps({"type": "connect", "token": token, "conversation_id": None,
                                      "last_seq": None, "client_id": str(uuid.uuid4())}))
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready", ready
        await line.ready()
        message = json.dumps({"type": "message", "client_msg_id": (msg_id := str(uuid.uuid4())), "text": "go"})
        await ws.send(message)
        resent = 0
        first_at = float("nan")
        next_index = 0
        last_ack = time.monotonic()
        history: list[tuple] = []
        while True:
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30 if durable else 5))
            except TimeoutError:
                if durable:
                    raise
                break  # the baseline's final frame can be dropped by the layer too
            kind = frame["type"]
            history.append((kind, frame.get("seq"), frame.get("index")))
            if kind == "agent.delta":
                now = time.time()
                if durable:
                    # The durable path must never skip; the baseline may (layer drops), and
                    # what it skipped shows up as lost tokens.
                    assert frame["index"] == next_index, (frame["index"], next_index, history[-6:])
                next_index = frame["index"] + 1
                if events == 0:
                    first_at = time.monotonic()
                events += 1
                for tok in frame["text"].split():
                    delays.append(now - float(tok[1:]))
                    created.append(float(tok[1:]))
                    tokens += 1
                assembled.append(frame["text"])
                if durable and time.monotonic() - last_ack > 1.0:
                    await ws.send(json.dumps({"type": "ack", "seq": frame["seq"]}))
                    last_ack = time.monotonic()
            elif kind == "agent.completed":
                if durable:
                    assert frame["message"]["text"] == "".join(assembled), "completed text != deltas"
                break
            elif kind == "error" and frame.get("ref") == msg_id and frame["code"] in ("unavailable", "rate_limited"):
                # Not stored: sent again after retry_after_ms, as the protocol asks of a client
                # (the same client_msg_id: stored at most once). Before this, a node that refused
                # messages in the start burst left its streams waiting until the phase timed out.
                resent += 1
                await asyncio.sleep(frame.get("retry_after_ms", 1000) / 1000)
                await ws.send(message)
            elif kind == "agent.failed":
                raise RuntimeError(frame)
        line.finished()
    # From the start line: when the stream's first delta arrived, and when its answer ended.
    return {"tokens": tokens, "events": events, "delays": delays, "lost": expected - tokens, "resent": resent,
            "created": created, "first_s": first_at - line.started_at, "end_s": time.monotonic() - line.started_at}


async def loop_lag(samples: list[tuple[float, float]], period: float = 0.005) -> None:
    """The benchmark client's own loop lag: how late a 5 ms sleep wakes, with the wall time. One
    process reads every socket; a client behind its sockets counts its own backlog as delay."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(period)
        samples.append((time.time(), loop.time() - before - period))


async def run_phase(url: str, tokens: list[str], durable: bool, rate: float, seconds: float,
                    on_start: Callable[[], object] | None = None,
                    on_end: Callable[[], object] | None = None) -> dict:
    """One stream per token against `url`: all sockets open first, then every stream starts
    together; rates are over the window from that start to the end of the last stream, and
    `on_start` / `on_end` (CpuWindow.start / stop) are called right at its two ends."""
    expected = int(rate * seconds)
    t0 = time.monotonic()
    line = StartLine(len(tokens), t0 + 2.0, on_start, on_end)
    lag: list[tuple[float, float]] = []
    lagging = asyncio.get_running_loop().create_task(loop_lag(lag))
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(one_stream(url, t, durable, expected, line) for t in tokens)), seconds + 120)
    finally:
        lagging.cancel()
    elapsed = line.ended_at - line.started_at
    delays = sorted(d for r in results for d in r["delays"])
    q = statistics.quantiles(delays, n=100)
    # The answers' start is a burst (every message at once): the delay of the tokens made in the
    # first second apart from the rest's, to tell the burst from the steady streaming.
    if os.environ.get("BENCH_DUMP_DELAYS"):  # every token's (creation, delay), to look at the tail in time
        with open(os.environ["BENCH_DUMP_DELAYS"], "w") as dump:
            pairs = [(c, d) for r in results for c, d in zip(r["created"], r["delays"], strict=True)]
            json.dump({"start": line.started_wall, "tokens": pairs, "client_lag": lag}, dump)
    early = sorted(d for r in results for d, c in zip(r["delays"], r["created"], strict=True)
                   if c < line.started_wall + 1.0)
    late = sorted(d for r in results for d, c in zip(r["delays"], r["created"], strict=True)
                  if c >= line.started_wall + 1.0)
    within = sorted(d for t, d in lag if line.started_wall <= t)
    return {
        "p99_ms_first_second": 1000 * early[int(0.99 * (len(early) - 1))] if early else None,
        # The client's own loop lag over the window (p99, max): the part of every delay above
        # that is the benchmark's, not the server's.
        "client_lag_ms": {"p99": 1000 * within[int(0.99 * (len(within) - 1))] if within else None,
                          "max": 1000 * within[-1] if within else None},
        "p99_ms_after_first_second": 1000 * late[int(0.99 * (len(late) - 1))] if late else None,
        "tokens_per_s": sum(r["tokens"] for r in results) / elapsed,
        "events_per_s": sum(r["events"] for r in results) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": delays[-1] * 1000,
        "lost_tokens": sum(r["lost"] for r in results),
        "messages_resent": sum(r.get("resent", 0) for r in results),
        "elapsed_s": elapsed,
        # The start of the answers (message sent at the start line -> first delta), and their
        # ends: what makes the window longer than --seconds.
        "first_delta_s": _spread_of([r["first_s"] for r in results]),
        "end_s": _spread_of([r["end_s"] for r in results]),
        "tokens": sum(r["tokens"] for r in results),
        "events": sum(r["events"] for r in results),
        # From the phase's start to the last socket ready: the connect burst, outside the window.
        "connect_s": line.all_open_at - t0,
    }


def _spread_of(values: list[float]) -> dict:
    values = sorted(values)
    return {"p50": values[len(values) // 2], "p90": values[int(len(values) * 0.9)], "max": values[-1]}


def measure(url: str, pid: int, tokens: list[str], durable: bool, args: argparse.Namespace) -> dict:
    """run_phase with the CPU of `pid`, of this client and of the machine over its window."""
    window = CpuWindow(pid)
    result = asyncio.run(run_phase(url, tokens, durable, args.rate, args.seconds, window.start, window.stop))
    result.update(window.figures(result["events"]))
    return result


def floor_phase(count: int, args: argparse.Namespace) -> dict:
    """The floor for `count` streams: bench/floor_bench.py's app on a fresh plain daphne node,
    the same rate and length, measured like Tether (durable semantics: `connect`, `ready`,
    strict order, completed text = the deltas; the floor does not look at the token)."""
    from bench.floor_bench import log_problems, start_floor, stop

    port = free_port()
    log_path = ROOT / f"bench-floor-{port}.log"
    node = start_floor(port, {"BENCH_RATE": str(args.rate), "BENCH_SECONDS": str(args.seconds)}, log_path)
    try:
        wait_port(port)
        result = measure(f"ws://127.0.0.1:{port}/ws/v1/", node.pid, ["floor"] * count, True, args)
    finally:
        stop(node)
    result["node_log_problems"] = log_problems(log_path)
    return result


def channels_phase(name: str, count: int, tokens: list[str], env: dict, args: argparse.Namespace) -> dict:
    """Tether (`durable`) or the plain Channels baseline for `count` streams, on a fresh node."""
    from bench.floor_bench import stop

    asgi = {"durable": "project.asgi:application", "baseline": "bench.baseline_asgi:application"}[name]
    durable = name == "durable"
    port = free_port()
    workers = [start_agent_worker(i, env) for i in range(args.agent_workers)] if durable else []
    node_env = {**env, "REALTIME_RUN_AGENTS_IN_SERVER": "0"} if workers else env
    node = start_node(asgi, port, node_env)
    try:
        wait_port(port)
        before = count_events()
        result = measure(f"ws://127.0.0.1:{port}/ws/v1/", node.pid, tokens[:count], durable, args)
        result["written_per_s"] = (count_events() - before) / result["elapsed_s"]
    finally:
        for process in (node, *workers):
            stop(process)
    return result


def ratios(paths: dict) -> dict:
    """Tether's CPU per event over the floor's CPU per frame, for the node and for the box."""
    durable, floor = paths.get("durable", {}), paths.get("floor", {})
    out = {}
    for key, name in (("node_us_per_event", "node_ratio"), ("box_us_per_event", "box_ratio")):
        if key in durable and floor.get(key):
            out[name] = durable[key] / floor[key]
    return out


def spread(runs: list[dict], counts: list[int]) -> dict:
    """Per N, the min and max of each ratio over the repetitions: how far one sitting's figure
    can be trusted on this (shared) machine."""
    out: dict[str, dict] = {}
    for count in counts:
        values = [run["ratios"] for run in runs if run["streams"] == count]
        out[str(count)] = {name: [min(v), max(v)] for name in ("node_ratio", "box_ratio")
                           if (v := [r[name] for r in values if name in r])}
        # Runs whose Tether or floor phase failed have no ratio: say how many of them did.
        out[str(count)]["runs"] = len(values)
        out[str(count)]["measured"] = sum("node_ratio" in r for r in values)
    return out


def fmt(result: dict, key: str, spec: str) -> str:
    """A figure of a table cell, or "–" when the phase was skipped or failed."""
    value = result.get(key)
    return "–" if value is None else format(value, spec)


def report(args: argparse.Namespace, runs: list[dict], spreads: dict, machine: dict) -> None:
    """JSON of everything; the per-path table; the CPU table (one row per N and repetition);
    the ratios' spread when repeated; the machine probe's line."""
    from bench._support import machine_line

    print(json.dumps({"args": vars(args), "runs": runs, "spread": spreads, "machine": machine}, indent=2))

    run_col = args.repeat > 1  # a column for the repetition only when there is more than one
    lead, lead_rule = ("| run ", "| --- ") if run_col else ("", "")
    print(f"\n{lead}| N | path | tokens/s | events/s delivered | events written/s | p50 ms | p99 ms | max ms | lost "
          "| connect s | node µs/event | client µs/event | rest µs/event | box µs/event |")
    print(f"{lead_rule}| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        for name, r in run["paths"].items():
            cell = f"| {run['repeat']} " if run_col else ""
            print(f"{cell}| {run['streams']} | {name} | {fmt(r, 'tokens_per_s', '.0f')} "
                  f"| {fmt(r, 'events_per_s', '.0f')} | {fmt(r, 'written_per_s', '.0f')} | {fmt(r, 'p50_ms', '.1f')} "
                  f"| {fmt(r, 'p99_ms', '.1f')} "
                  f"| {fmt(r, 'max_ms', '.1f')} | {fmt(r, 'lost_tokens', 'd')} | {fmt(r, 'connect_s', '.1f')} "
                  f"| {fmt(r, 'node_us_per_event', '.0f')} | {fmt(r, 'client_us_per_event', '.0f')} "
                  f"| {fmt(r, 'rest_us_per_event', '.0f')} | {fmt(r, 'box_us_per_event', '.0f')} |")

    print(f"\n{lead}| N | Tether tokens/s | p99 ms | lost | node µs/event | floor µs/frame | node ratio "
          "| box µs/event (Tether) | box µs/frame (floor) | box ratio |")
    print(f"{lead_rule}| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        d, f, q = run["paths"].get("durable", {}), run["paths"].get("floor", {}), run["ratios"]
        cell = f"| {run['repeat']} " if run_col else ""
        print(f"{cell}| {run['streams']} | {fmt(d, 'tokens_per_s', '.0f')} | {fmt(d, 'p99_ms', '.1f')} "
              f"| {fmt(d, 'lost_tokens', 'd')} | {fmt(d, 'node_us_per_event', '.0f')} "
              f"| {fmt(f, 'node_us_per_event', '.0f')} | {fmt(q, 'node_ratio', '.2f')} "
              f"| {fmt(d, 'box_us_per_event', '.0f')} | {fmt(f, 'box_us_per_event', '.0f')} "
              f"| {fmt(q, 'box_ratio', '.2f')} |")
    if run_col and not args.skip_floor:
        print("\n| N | runs measured | node ratio min–max | box ratio min–max |")
        print("| --- | --- | --- | --- |")
        for count, s in spreads.items():
            node, box = s.get("node_ratio"), s.get("box_ratio")
            print(f"| {count} | {s['measured']} of {s['runs']} | {f'{node[0]:.2f}–{node[1]:.2f}' if node else '–'} "
                  f"| {f'{box[0]:.2f}–{box[1]:.2f}' if box else '–'} |")
    print(f"\n{machine_line(machine)}")
    for run in runs:
        d, b = run["paths"].get("durable", {}), run["paths"].get("baseline", {})
        if d.get("tokens_per_s") and b.get("tokens_per_s"):
            print(f"durable/baseline delivered tokens/s, N={run['streams']}"
                  + (f" run {run['repeat']}" if run_col else "") + f": {d['tokens_per_s'] / b['tokens_per_s']:.2%}")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="100", help="concurrent streams, comma-separated: one level per N")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second per stream")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--coalesce-ms", type=int, default=50)
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--skip-baseline", action="store_true", help="leave out the plain Channels baseline")
    parser.add_argument("--skip-floor", action="store_true", help="leave out the floor (daphne alone)")
    parser.add_argument("--repeat", type=int, default=1, help="run the whole --streams list this many times")
    parser.add_argument("--agent-workers", type=int, default=0,
                        help="run agents on this many `manage.py run_agents` processes instead of the web node")
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",") if n.strip()]
    if not counts or min(counts) < 1 or args.repeat < 1:
        parser.error("--streams needs at least one N >= 1 and --repeat at least 1")

    # A SIGTERM to the benchmark unwinds like Ctrl-C, so the running phase's nodes are stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from bench._support import raise_nofile

    # Client and node each hold one descriptor per socket (the nodes inherit the limit).
    raise_nofile(2 * max(counts) + 1000)
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    # The nodes and workers refuse to start without a key (project/keys.py); one for the run.
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    # The tokens are made once and must outlive every phase of every repetition (the default
    # lifetime is 5 minutes; the node checks their exp claim at `connect`).
    os.environ.setdefault("ACCESS_TOKEN_LIFETIME", str(6 * 3600))
    os.environ["DATABASE_URL"] = prepare_database(args.pg, "tether_bench")
    prefix = f"bench-{os.getpid()}"
    env = {
        "DATABASE_URL": os.environ["DATABASE_URL"], "DB_CONN_MAX_AGE": "60", "REDIS_KEY_PREFIX": prefix,
        "REALTIME_AGENT": "bench.agents.TickAgent", "BENCH_RATE": str(args.rate), "BENCH_SECONDS": str(args.seconds),
        "REALTIME_DELTA_COALESCE_MS": str(args.coalesce_ms), "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "REALTIME_MAX_CONCURRENT_RUNS": str(max(counts) + 10), "PYTHONPATH": str(ROOT),
        # Every stream connects from 127.0.0.1 at once: the per-IP connect limit (120 a minute)
        # refused the 121st of --streams 500.
        "REALTIME_RATE_CONNECT_IP": "100000/60",
    }
    os.environ.update({"REDIS_KEY_PREFIX": prefix})
    tokens = make_tokens(max(counts))  # the users of the largest N; smaller ones take the first N
    names = [n for n, skip in (("floor", args.skip_floor), ("durable", False), ("baseline", args.skip_baseline))
             if not skip]
    runs = []
    failed = False
    for repeat in range(1, args.repeat + 1):
        for count in counts:
            paths = {}
            # The floor first, then Tether right after it: the same warm machine for both.
            for name in names:
                try:
                    paths[name] = (floor_phase(count, args) if name == "floor"
                                   else channels_phase(name, count, tokens, env, args))
                except Exception as exc:  # noqa: BLE001 - one failed phase must not lose the others' figures
                    failed = True
                    paths[name] = {"error": repr(exc)}
                r = paths[name]
                print(f"run {repeat} N={count} {name}: " + (r["error"] if "error" in r else
                      f"{r['tokens_per_s']:.0f} tokens/s, p99 {r['p99_ms']:.1f} ms, lost {r['lost_tokens']}, "
                      f"node {r['node_us_per_event']:.0f} µs/event, box {r['box_us_per_event']:.0f} µs/event, "
                      f"messages sent again {r.get('messages_resent', 0)}, first delta p50/p90/max "
                      + "/".join(f"{r['first_delta_s'][k]:.2f}" for k in ("p50", "p90", "max")) + " s, end p50/max "
                      + "/".join(f"{r['end_s'][k]:.2f}" for k in ("p50", "max")) + " s, p99 ms of the tokens made "
                      + f"in the first second / after it {fmt(r, 'p99_ms_first_second', '.0f')} / "
                      + f"{fmt(r, 'p99_ms_after_first_second', '.0f')}, the client's own loop lag p99/max "
                      + f"{fmt(r['client_lag_ms'], 'p99', '.0f')} / {fmt(r['client_lag_ms'], 'max', '.0f')} ms"),
                      file=sys.stderr)
            runs.append({"repeat": repeat, "streams": count, "paths": paths, "ratios": ratios(paths)})
    from bench.machine_probe import probe

    machine = probe(args.pg, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    report(args, runs, spread(runs, counts), machine)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
