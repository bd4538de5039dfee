"""Reconnect storm benchmark (issue 4): N clients connected and ready, every socket dropped at
once, then all of them resume at the same moment; against one node and against two nodes.

    .venv/bin/python bench/storm_bench.py --clients 1000

Per phase (--nodes "1,2": one node, then two nodes, each phase with fresh conversations and
its own Redis key prefix so rate-limit buckets do not carry over):
  1. every client gets its own conversation holding --events events, connects (two nodes:
     client i to node i % 2) with `last_seq: 0`, receives the replay and idles (pings);
  2. all sockets are dropped at once: --drop abort (default) resets every client socket
     (SO_LINGER 0 + abort: RST, as when a load balancer or the network fails), --drop kill
     SIGKILLs the node(s) and starts them again (timer starts once they answer /readyz);
  3. --missed events are appended to every conversation while the clients are away;
  4. all clients reconnect at the same moment (optionally spread over --spread-ms) with
     `conversation_id` and their `last_seq`, to a node picked at random (two nodes: either).
     A refused attempt (`error rate_limited` + close 4429) is retried after the frame's
     `retry_after_ms` (plus up to 10% jitter), a failed handshake after a short full-jitter
     backoff.
Reported: the time from the reconnect moment until every client is resumed (`ready` received
AND its replay complete), per-client p50/p99/max, attempts, refusals by limit, and loss: each
client's replay must be exactly the --missed events after its last_seq (`resumed: true`,
`replay_count` = missed, same seqs, types and payloads).

Rate limits are the project's defaults unless overridden (--rate-connect-user "30/60",
--rate-connect-ip "120/60", --max-conns-per-user 20). All clients run on this machine, so each
client presents its own address through X-Forwarded-For (the node trusts 127.0.0.1 as a proxy
for the bench); --ips N and --users N put several clients behind one address / one user.
Which limit refused an attempt is read from the Redis buckets right after the refusal (a
connect-attempt refusal is attributed to the IP bucket when that one is empty, else to the
user bucket; the per-user socket cap is told apart by its error detail).

Why ~450 lines in one script: a benchmark is run and read as one file; its phases (prepare,
drop, reconnect with the protocol's retry rules, verify, attribute refusals) share one run's
state.
Target: 1,000 clients reconnecting at once all resumed within 10 s on two nodes, nothing lost.
Needs PostgreSQL (scratch database `tether_bench_storm`, dropped at the end) and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import websockets
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import (
    DEFAULT_PG,
    BenchRun,
    Node,
    abort_socket,
    append_events,
    create_conversations,
    make_users,
    print_report,
    raise_nofile,
    summary,
)


class Client:
    def __init__(self, index: int, user_id: int, token: str, ip: str, conversation_id: str):
        self.index = index
        self.user_id = user_id
        self.token = token
        self.ip = ip
        self.conversation_id = conversation_id
        self.client_id = str(uuid.uuid4())
        self.last_seq = 0
        self.expected: list[dict] = []  # what the next replay must be, exactly
        self.ws = None
        self.keeper: asyncio.Task | None = None
        self.closed_early: int | None = None
        self.problems: list[str] = []
        self.ready_at: float | None = None
        self.done_at: float | None = None
        self.attempts = 0
        self.refused = 0


class Stats:
    def __init__(self) -> None:
        self.attempts = 0
        self.refused: Counter = Counter()  # limit -> refusals
        self.connect_failures: Counter = Counter()  # exception type -> count
        self.other_errors: Counter = Counter()
        self.retry_after_ms: list[int] = []


class Limits:
    """The connect limits the nodes run with, to read their Redis buckets after a refusal."""

    def __init__(self, prefix: str, user: str, ip: str):
        self.prefix = prefix
        self.user = _parse(user)
        self.ip = _parse(ip)
        self.redis = None

    async def classify(self, client: Client, detail: str) -> str:
        if "open connections" in detail:
            return "max_connections_per_user"
        import redis.asyncio as aioredis

        if self.redis is None:
            self.redis = aioredis.Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
        try:
            seconds, micros = await self.redis.time()
            now = seconds * 1000 + micros // 1000
            for name, bucket, (capacity, per) in (("connect_ip", f"ip:{client.ip}", self.ip),
                                                  ("connect_user", f"user:{client.user_id}", self.user)):
                tokens, ts = await self.redis.hmget(f"{self.prefix}:rl:{bucket}", "tokens", "ts")
                if tokens is None:
                    continue
                refill = min(capacity, float(tokens) + (now - float(ts)) * capacity / per / 1000)
                if refill < 1:
                    return name
        except Exception:  # noqa: BLE001 - attribution is best effort
            pass
        return "connect_unknown"


def _parse(limit: str) -> tuple[float, float]:
    count, _, seconds = limit.partition("/")
    return float(count), float(seconds)


async def keep_alive(client: Client, interval: float) -> None:
    """Reads whatever comes (protocol pings get answered) and pings when quiet."""
    ws = client.ws
    try:
        while True:
            try:
                await asyncio.wait_for(ws.recv(), interval)
            except TimeoutError:
                await ws.send(json.dumps({"type": "ping", "id": client.index}))
    except ConnectionClosed:
        client.closed_early = ws.close_code or 1006


async def resume(client: Client, urls: list[str], rng: random.Random, stats: Stats, limits: Limits,
                 args, first_url: str | None = None) -> None:
    """Connects until `ready` and the whole replay arrived; honours rate-limit refusals."""
    failures_in_row = 0
    url = first_url or rng.choice(urls)
    headers = {"X-Forwarded-For": client.ip}
    while True:
        client.attempts += 1
        stats.attempts += 1
        try:
            ws = await websockets.connect(url, additional_headers=headers, ping_interval=None, compression=None,
                                          proxy=None, open_timeout=args.open_timeout, close_timeout=2, max_size=None)
        except Exception as exc:  # noqa: BLE001 - refused, reset, timeout, HTTP status: retry
            stats.connect_failures[type(exc).__name__] += 1
            failures_in_row += 1
            await asyncio.sleep(rng.uniform(0, min(2.0, 0.1 * 2 ** failures_in_row)))
            url = rng.choice(urls)
            continue
        try:
            # A refusal by address arrives right after the handshake, possibly before this
            # send; the error frame is still queued, so read it even if the send failed.
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"type": "connect", "token": client.token,
                                          "conversation_id": client.conversation_id,
                                          "last_seq": client.last_seq, "client_id": client.client_id}))
            frame = json.loads(await asyncio.wait_for(ws.recv(), args.open_timeout))
        except (ConnectionClosed, TimeoutError) as exc:
            stats.connect_failures[type(exc).__name__] += 1
            abort_socket(ws)
            failures_in_row += 1
            await asyncio.sleep(rng.uniform(0, min(2.0, 0.1 * 2 ** failures_in_row)))
            url = rng.choice(urls)
            continue
        if frame.get("type") != "ready":
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(ws.recv(), 2)  # the close that follows the error frame
            code = ws.close_code
            abort_socket(ws)
            if frame.get("type") == "error" and frame.get("code") == "rate_limited":
                client.refused += 1
                stats.refused[await limits.classify(client, frame.get("detail", ""))] += 1
                wait_ms = int(frame.get("retry_after_ms") or 1000)
                stats.retry_after_ms.append(wait_ms)
                await asyncio.sleep(wait_ms / 1000 * (1 + 0.1 * rng.random()))
                continue
            if frame.get("type") == "reconnect":  # a draining node: go elsewhere at once
                stats.other_errors["reconnect"] += 1
                url = rng.choice(urls)
                continue
            stats.other_errors[f"{frame.get('code', frame.get('type'))}/{code}"] += 1
            client.problems.append(f"refused: {frame} close {code}")
            failures_in_row += 1
            await asyncio.sleep(rng.uniform(0, min(2.0, 0.1 * 2 ** failures_in_row)))
            continue
        client.ready_at = time.monotonic()
        try:
            await receive_replay(client, ws, frame, args)
        except (ConnectionClosed, TimeoutError):
            # Not a loss by itself: the next attempt resumes from the same last_seq and must
            # get the whole replay again.
            stats.connect_failures["lost_during_replay"] += 1
            abort_socket(ws)
            url = rng.choice(urls)
            continue
        client.done_at = time.monotonic()
        client.ws = ws
        interval = frame.get("heartbeat_interval_ms", 25000) / 2000
        client.keeper = asyncio.create_task(keep_alive(client, interval))
        return


async def receive_replay(client: Client, ws, ready: dict, args) -> None:
    expected = client.expected
    last = client.last_seq + len(expected)
    if not ready.get("resumed") or ready.get("replay_count") != len(expected) or ready.get("last_seq") != last:
        client.problems.append(f"ready mismatch: {ready} (expected replay of {len(expected)} up to {last})")
    got = [json.loads(await asyncio.wait_for(ws.recv(), args.open_timeout))
           for _ in range(ready.get("replay_count") or 0)]
    if got != expected:
        missing = {e["seq"] for e in expected} - {g.get("seq") for g in got}
        client.problems.append(f"replay differs: {len(got)} frames, missing seqs {sorted(missing)[:10]}")
    if got:
        client.last_seq = got[-1]["seq"]
    client.expected = []


async def phase(run: BenchRun, node_count: int, users: list[tuple[int, str]], args) -> dict:
    from asgiref.sync import sync_to_async

    prefix = f"{run.prefix}:p{node_count}"
    env = {
        "REDIS_KEY_PREFIX": prefix,
        "REALTIME_RATE_CONNECT_USER": args.rate_connect_user,
        "REALTIME_RATE_CONNECT_IP": args.rate_connect_ip,
        "REALTIME_MAX_CONNECTIONS_PER_USER": str(args.max_conns_per_user),
        "REALTIME_TRUSTED_PROXIES": "127.0.0.1",
    }
    if args.heartbeat_ms:
        env["REALTIME_HEARTBEAT_INTERVAL_MS"] = str(args.heartbeat_ms)
    nodes = [Node(run, f"storm{node_count}-{chr(97 + i)}", env) for i in range(node_count)]
    for node in nodes:
        await asyncio.to_thread(node.start)
    urls = [n.ws_url for n in nodes]
    limits = Limits(prefix, args.rate_connect_user, args.rate_connect_ip)
    rng = random.Random(args.seed + node_count)

    # Conversations with a few events each; client i belongs to user i % users, address i % ips.
    def setup() -> list[Client]:
        conversations = create_conversations([users[i % len(users)][0] for i in range(args.clients)])
        clients = []
        for i, conv in enumerate(conversations):
            uid, token = users[i % len(users)]
            ip = f"10.{(i % args.ips) // 65536 % 256}.{(i % args.ips) // 256 % 256}.{(i % args.ips) % 256}"
            client = Client(i, uid, token, ip, conv)
            client.expected = append_events(conv, args.events, args.text)
            clients.append(client)
        return clients

    clients = await sync_to_async(setup)()

    # 1. Everybody connected and ready (replay of the initial events).
    setup_stats = Stats()
    sem = asyncio.Semaphore(args.setup_concurrency)

    async def first(client: Client) -> None:
        async with sem:
            await resume(client, urls, rng, setup_stats, limits, args, first_url=urls[client.index % node_count])

    t = time.monotonic()
    setup_tasks = [asyncio.create_task(first(c)) for c in clients]
    _, pending = await asyncio.wait(setup_tasks, timeout=args.timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*setup_tasks, return_exceptions=True)
    if pending:
        raise RuntimeError(
            f"setup: only {len(clients) - len(pending)} of {len(clients)} clients connected within {args.timeout:g} s "
            f"(refusals {dict(setup_stats.refused)}, failures {dict(setup_stats.connect_failures)}); "
            "are the limits too tight for clients/users/ips to be connected at once?")
    setup_seconds = time.monotonic() - t
    setup_problems = sum(1 for c in clients if c.problems)
    print(f"[{node_count} node(s)] {len(clients)} clients ready in {setup_seconds:.1f}s", file=sys.stderr)
    await asyncio.sleep(args.settle)
    closed_before_drop = sum(1 for c in clients if c.closed_early is not None)

    # 2. Drop every socket at once.
    for c in clients:
        c.keeper.cancel()
    await asyncio.gather(*(c.keeper for c in clients), return_exceptions=True)
    restart_seconds = None
    if args.drop == "kill":
        for node in nodes:
            node.sigkill()
        for c in clients:
            abort_socket(c.ws)
        t = time.monotonic()
        for node in nodes:
            await asyncio.to_thread(node.start)
        restart_seconds = time.monotonic() - t
    else:
        for c in clients:
            abort_socket(c.ws)
    for c in clients:
        c.ws = None
        c.closed_early = None
        c.ready_at = c.done_at = None
        c.attempts = c.refused = 0

    # 3. Events appended while everybody is away.
    def away() -> None:
        for c in clients:
            c.expected = append_events(c.conversation_id, args.missed, args.text, start_index=args.events)

    await sync_to_async(away)()

    # 4. The storm: everybody at the same moment.
    stats = Stats()
    t0 = time.monotonic()

    async def storm(client: Client) -> None:
        if args.spread_ms:
            await asyncio.sleep(rng.uniform(0, args.spread_ms / 1000))
        await resume(client, urls, rng, stats, limits, args)

    tasks = [asyncio.create_task(storm(c)) for c in clients]
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    resumed = [c for c in clients if c.done_at is not None]
    done_times = [c.done_at - t0 for c in resumed]
    ready_times = [c.ready_at - t0 for c in clients if c.ready_at is not None]
    problems = [p for c in clients for p in c.problems]
    lost_clients = sum(1 for c in clients if c.problems or c.done_at is None)
    await asyncio.sleep(1.0)
    closed_after = sum(1 for c in clients if c.closed_early is not None)

    # Tidy up: close the sockets cleanly, stop the nodes (graceful), next phase starts fresh.
    for c in clients:
        if c.keeper:
            c.keeper.cancel()
    for i in range(0, len(clients), 250):
        await asyncio.gather(*(c.ws.close() for c in clients[i:i + 250] if c.ws), return_exceptions=True)
    if limits.redis is not None:
        await limits.redis.aclose()
    for node in nodes:
        await asyncio.to_thread(node.stop)

    engaged = sorted(name for name, count in {**setup_stats.refused, **stats.refused}.items() if count)
    return {
        "nodes": node_count,
        "clients": len(clients),
        "drop": args.drop,
        "node_restart_s": restart_seconds,
        "setup_seconds": setup_seconds,
        "setup_refused": dict(setup_stats.refused),
        "setup_problems": setup_problems,
        "closed_before_drop": closed_before_drop,
        "resumed": len(resumed),
        "all_resumed_s": max(done_times) if len(resumed) == len(clients) else None,
        "last_resumed_s": max(done_times) if done_times else None,
        "resumed_ms": summary(done_times),
        "ready_ms": summary(ready_times),
        "attempts": stats.attempts,
        "attempts_per_client_max": max((c.attempts for c in clients), default=0),
        "refused": dict(stats.refused),
        "refused_total": sum(stats.refused.values()),
        "retry_after_ms": summary([ms / 1000 for ms in stats.retry_after_ms]) if stats.retry_after_ms else None,
        "connect_failures": dict(stats.connect_failures),
        "other_errors": dict(stats.other_errors),
        "limits": {"connect_user": args.rate_connect_user, "connect_ip": args.rate_connect_ip,
                   "max_conns_per_user": args.max_conns_per_user, "users": len(users), "ips": args.ips},
        "limits_engaged": engaged,
        "clients_with_loss_or_not_resumed": lost_clients,
        "problems": problems[:20],
        "closed_after_resume": closed_after,
        "events_replayed_per_client": args.missed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--nodes", default="1,2", help="phases to run: node counts, comma-separated")
    parser.add_argument("--drop", choices=("abort", "kill"), default="abort",
                        help="abort: RST every client socket; kill: SIGKILL the node(s) and restart them")
    parser.add_argument("--events", type=int, default=5, help="events in each conversation before the drop")
    parser.add_argument("--missed", type=int, default=3, help="events appended while the clients are away")
    parser.add_argument("--text", default="lorem ipsum dolor sit amet ", help="text of each event")
    parser.add_argument("--users", type=int, default=None, help="users (default: one per client)")
    parser.add_argument("--ips", type=int, default=None, help="client addresses (default: one per client)")
    parser.add_argument("--rate-connect-user", default="30/60", help="REALTIME_RATE_CONNECT_USER")
    parser.add_argument("--rate-connect-ip", default="120/60", help="REALTIME_RATE_CONNECT_IP")
    parser.add_argument("--max-conns-per-user", type=int, default=20, help="REALTIME_MAX_CONNECTIONS_PER_USER")
    parser.add_argument("--heartbeat-ms", type=int, default=None, help="REALTIME_HEARTBEAT_INTERVAL_MS")
    parser.add_argument("--spread-ms", type=float, default=0.0, help="spread the reconnects over this many ms")
    parser.add_argument("--setup-concurrency", type=int, default=100, help="handshakes in flight while setting up")
    parser.add_argument("--open-timeout", type=float, default=30.0, help="handshake / ready timeout per attempt, s")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on a phase after this many s")
    parser.add_argument("--settle", type=float, default=2.0, help="pause between setup and the drop, s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database and node logs")
    args = parser.parse_args()
    args.users = args.users or args.clients
    args.ips = args.ips or args.clients

    raise_nofile(args.clients * 4 + 1000)
    with BenchRun("storm", args.pg, keep=args.keep) as run:
        users = make_users(args.users)
        results = [asyncio.run(phase(run, int(count), users, args)) for count in args.nodes.split(",")]
        log_problems = run.log_problems()
        ok = all(r["clients_with_loss_or_not_resumed"] == 0 for r in results)
        run.failed = not ok

    def ms(value):
        return f"{value * 1000:,.0f}" if value is not None else "-"

    rows = [
        [
            r["clients"], r["nodes"], r["drop"], f"{r['resumed']}/{r['clients']}", ms(r["all_resumed_s"]),
            f"{r['resumed_ms'].get('p50_ms', 0):,.0f}", f"{r['resumed_ms'].get('p99_ms', 0):,.0f}",
            r["attempts"], r["refused_total"], ", ".join(r["limits_engaged"]) or "none",
            r["clients_with_loss_or_not_resumed"],
        ]
        for r in results
    ]
    print_report("storm", vars(args), {"phases": results, "node_log_problems": log_problems},
                 ["clients", "nodes", "drop", "resumed", "all resumed ms", "p50 ms", "p99 ms", "attempts",
                  "refused (4429)", "limits engaged", "clients with loss"], rows)
    two = [r for r in results if r["nodes"] == 2]
    if two:
        r = two[0]
        met = r["all_resumed_s"] is not None and r["all_resumed_s"] <= 10 and r["clients_with_loss_or_not_resumed"] == 0
        print(f"\ntarget (all {r['clients']} resumed within 10 s on two nodes, nothing lost): "
              f"{'met' if met else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
