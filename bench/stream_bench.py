"""Streaming benchmark (issue 3): C concurrent conversations each streaming T tokens/s
through one daphne node, then the same load through a plain Channels group_send with no
durability (the baseline), in the same run.

    .venv/bin/python bench/stream_bench.py --streams 100 --rate 20 --seconds 10
    .venv/bin/python bench/stream_bench.py --streams 100 --agent-workers 1   # agents off the web node

Reports delivered tokens/s, p50/p99 delay from a token's creation (in the agent) to its
arrival at the client, events written per second, and loss. Needs PostgreSQL (a scratch
database `tether_bench` is recreated) and Redis. Client and server share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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
    """User + system CPU time of a process so far: how much work the node did, whatever else ran
    on the machine (its wall-clock figures move with the load; this moves much less)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def one_stream(url: str, token: str, durable: bool, expected: int, start_at: float) -> dict:
    delays: list[float] = []
    tokens = events = 0
    assembled: list[str] = []
    async with websockets.connect(url, max_size=None, open_timeout=30, ping_interval=None) as ws:
        if durable:
            await ws.send(json.dumps({"type": "connect", "token": token, "conversation_id": None,
                                      "last_seq": None, "client_id": str(uuid.uuid4())}))
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready", ready
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        await ws.send(json.dumps({"type": "message", "client_msg_id": str(uuid.uuid4()), "text": "go"}))
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
                events += 1
                for tok in frame["text"].split():
                    delays.append(now - float(tok[1:]))
                    tokens += 1
                assembled.append(frame["text"])
                if durable and time.monotonic() - last_ack > 1.0:
                    await ws.send(json.dumps({"type": "ack", "seq": frame["seq"]}))
                    last_ack = time.monotonic()
            elif kind == "agent.completed":
                if durable:
                    assert frame["message"]["text"] == "".join(assembled), "completed text != deltas"
                break
            elif kind == "agent.failed":
                raise RuntimeError(frame)
    return {"tokens": tokens, "events": events, "delays": delays, "lost": expected - tokens}


async def run_phase(url: str, tokens: list[str], durable: bool, rate: float, seconds: float) -> dict:
    expected = int(rate * seconds)
    start_at = time.monotonic() + 2.0  # all sockets open first, then every stream starts together
    t0 = time.monotonic()
    results = await asyncio.wait_for(
        asyncio.gather(*(one_stream(url, t, durable, expected, start_at) for t in tokens)), seconds + 120)
    elapsed = time.monotonic() - max(t0, start_at)
    delays = sorted(d for r in results for d in r["delays"])
    q = statistics.quantiles(delays, n=100)
    return {
        "tokens_per_s": sum(r["tokens"] for r in results) / elapsed,
        "events_per_s": sum(r["events"] for r in results) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": delays[-1] * 1000,
        "lost_tokens": sum(r["lost"] for r in results),
        "elapsed_s": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second per stream")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--coalesce-ms", type=int, default=50)
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--skip-baseline", action="store_true", help="measure the durable path only")
    parser.add_argument("--agent-workers", type=int, default=0,
                        help="run agents on this many `manage.py run_agents` processes instead of the web node")
    args = parser.parse_args()

    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    # The nodes and workers refuse to start without a key (project/keys.py); one for the run.
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ["DATABASE_URL"] = prepare_database(args.pg, "tether_bench")
    prefix = f"bench-{os.getpid()}"
    env = {
        "DATABASE_URL": os.environ["DATABASE_URL"], "DB_CONN_MAX_AGE": "60", "REDIS_KEY_PREFIX": prefix,
        "REALTIME_AGENT": "bench.agents.TickAgent", "BENCH_RATE": str(args.rate), "BENCH_SECONDS": str(args.seconds),
        "REALTIME_DELTA_COALESCE_MS": str(args.coalesce_ms), "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "REALTIME_MAX_CONCURRENT_RUNS": str(args.streams + 10), "PYTHONPATH": str(ROOT),
        # Every stream connects from 127.0.0.1 at once: the per-IP connect limit (120 a minute)
        # refused the 121st of --streams 500.
        "REALTIME_RATE_CONNECT_IP": "100000/60",
    }
    os.environ.update({"REDIS_KEY_PREFIX": prefix})
    tokens = make_tokens(args.streams)
    results = {}
    phases = [("durable", "project.asgi:application"), ("baseline", "bench.baseline_asgi:application")]
    for name, asgi in phases[:1] if args.skip_baseline else phases:
        port = free_port()
        durable = name == "durable"
        workers = [start_agent_worker(i, env) for i in range(args.agent_workers)] if durable else []
        node_env = {**env, "REALTIME_RUN_AGENTS_IN_SERVER": "0"} if workers else env
        node = start_node(asgi, port, node_env)
        try:
            wait_port(port)
            before = count_events()
            cpu_before = cpu_seconds(node.pid)
            results[name] = asyncio.run(run_phase(f"ws://127.0.0.1:{port}/ws/v1/", tokens, name == "durable",
                                                  args.rate, args.seconds))
            r = results[name]
            r["node_cpu_s"] = cpu_seconds(node.pid) - cpu_before
            r["node_cpu_ms_per_1000_events"] = 1e6 * r["node_cpu_s"] / max(1.0, r["events_per_s"] * r["elapsed_s"])
            r["written_per_s"] = (count_events() - before) / r["elapsed_s"]
        finally:
            for process in (node, *workers):
                process.terminate()
            for process in (node, *workers):
                process.wait(10)
    from bench._support import machine_line
    from bench.machine_probe import probe

    machine = probe(args.pg, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    print(json.dumps({"args": vars(args), "results": results, "machine": machine}, indent=2))
    print("\n| path | tokens/s | events/s delivered | events written/s | p50 ms | p99 ms | max ms | lost "
          "| node CPU ms / 1,000 events |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['tokens_per_s']:.0f} | {r['events_per_s']:.0f} | {r['written_per_s']:.0f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['lost_tokens']} | "
              f"{r['node_cpu_ms_per_1000_events']:.0f} |")
    print(f"\n{machine_line(machine)}")
    if "baseline" in results:
        d, b = results["durable"], results["baseline"]
        print(f"\ndurable/baseline delivered tokens/s: {d['tokens_per_s'] / b['tokens_per_s']:.2%}")


if __name__ == "__main__":
    main()
