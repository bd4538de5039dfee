"""Tool call benchmark (issue 21): what one tool call costs on the log and in time.

    .venv/bin/python bench/tool_bench.py --calls 300 --runs 3

One daphne node, one run at a time, the two classes alternating: `demo.effect` is `idempotent`
(a POST to a sink in this process: tests/support/effect_sink.py, a threaded HTTP server on
loopback that records, deduplicates by Idempotency-Key and answers JSON), and
`bench.local_effect` is its `local` twin (the DemoEffect row `demo.effect` writes without an
effect URL, in the transaction that records the call's result). One node: two nodes on one
database would claim each other's runs. The agent (bench.agents.ToolCallsAgent) makes --calls
calls one after another, no text between them, and times each from its yield to the result it
gets back: the journal's writes and their publishes, and the tool. Per run and class:
p50/p99/max of that latency (nearest rank), the run's wall time per call seen by a client
(message sent to `agent.completed`), and from the database the events written per call (by
type) and their JSON bytes.

Floors, measured in this process in the same sitting: the HTTP helper alone
(`ToolContext.post` to the same sink: a new httpx client per call, as every call makes it), and
a DemoEffect row written in a transaction that locks the conversation first (what a `local`
call's own write costs without the journal). The difference is what the runtime adds.

Needs PostgreSQL (scratch database `tether_bench_tools`, dropped at the end) and Redis. Prints
the load average before and after: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import DEFAULT_PG, BenchRun, Node, make_users, percentile, print_report, summary

TOOL_EVENTS = ("agent.tool_call", "agent.tool_result", "approval.requested", "approval.resolved")


async def one_run(url: str, token: str, calls: int, effect: str) -> dict:
    """One conversation, one message "calls N"; returns the agent's latencies and the run."""
    async with websockets.connect(url, max_size=None, open_timeout=30, ping_interval=None) as ws:
        await ws.send(json.dumps({"type": "connect", "token": token, "conversation_id": None, "last_seq": None,
                                  "client_id": str(uuid.uuid4())}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        text = f"calls {calls} local" if effect == "local" else f"calls {calls}"

        async def heartbeat() -> None:  # a run of a few hundred calls outlasts the heartbeat timeout
            while True:
                await asyncio.sleep(5)
                await ws.send(json.dumps({"type": "ping"}))

        beating = asyncio.create_task(heartbeat())
        sent = time.perf_counter()
        await ws.send(json.dumps({"type": "message", "client_msg_id": str(uuid.uuid4()), "text": text}))
        seen = 0
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if frame["type"] == "agent.tool_result":
                    seen += 1
                if frame["type"] == "agent.failed":
                    raise RuntimeError(f"run failed: {frame}")
                if frame["type"] == "agent.completed":
                    wall = time.perf_counter() - sent
                    report = json.loads(frame["message"]["text"])
                    return {"run_id": frame["run_id"], "wall_s": wall, "results_seen": seen, **report}
        finally:
            beating.cancel()


def log_cost(run_id: str, calls: int) -> dict:
    """Events of the run's tool calls per call, by type, and their JSON bytes per call."""
    from sessions_app.models import Event, ToolCall

    by_type: dict[str, int] = {}
    effects: set[str] = set()
    size = 0
    for kind, payload in Event.objects.filter(run_id=run_id, type__in=TOOL_EVENTS).values_list("type", "payload"):
        by_type[kind] = by_type.get(kind, 0) + 1
        size += len(json.dumps({"type": kind, "seq": 0, **payload}, separators=(",", ":")))
        if kind == "agent.tool_call":
            effects.add(payload["effect"])
    return {"events_per_call": sum(by_type.values()) / calls, "by_type": by_type, "effects": sorted(effects),
            "bytes_per_call": size / calls, "journal_rows": ToolCall.objects.filter(run_id=run_id).count()}


async def floor_post(sink_url: str, calls: int) -> list[float]:
    from realtime.tools.context import ToolContext

    run_id = str(uuid.uuid4())
    times = []
    for n in range(1, calls + 1):
        ctx = ToolContext("bench", run_id, str(uuid.uuid4()), 1, 30.0)
        start = time.perf_counter()
        await ctx.post(sink_url, {"conversation_id": "bench", "run_id": run_id, "call_id": ctx.call_id, "n": n})
        times.append(time.perf_counter() - start)
    return times


def floor_row(conversation_id: str, calls: int) -> list[float]:
    from django.db import transaction

    from sessions_app.services import record_demo_effect
    from sessions_app.services.conversations import lock_conversation

    run_id = uuid.uuid4()
    times = []
    for n in range(1, calls + 1):
        start = time.perf_counter()
        with transaction.atomic():
            lock_conversation(conversation_id)
            record_demo_effect(conversation_id, run_id, uuid.uuid4(), n)
        times.append(time.perf_counter() - start)
    return times


def ms(value: float) -> str:
    return f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="calls per run (one message)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per effect class")
    parser.add_argument("--warmup", type=int, default=20, help="calls of an unmeasured first run per node")
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database and node logs")
    args = parser.parse_args()
    load_before = os.getloadavg()

    from tests.support.effect_sink import EffectSink

    with BenchRun("tools", args.pg, keep=args.keep) as run, EffectSink() as sink:
        from bench._support import create_conversations

        [(uid, token)] = make_users(1)
        node = Node(run, "tools", {
            "REALTIME_AGENT": "bench.agents.ToolCallsAgent", "REALTIME_RATE_MESSAGES": "1000/60",
            "REALTIME_TOOLS": "realtime.tools.demo.effect,bench.agents.local_effect",
            "REALTIME_DEMO_EFFECT_URL": sink.url,
        }).start()
        results: dict[str, list[dict]] = {"local": [], "idempotent": []}
        for effect in results:
            asyncio.run(one_run(node.ws_url, token, args.warmup, effect))
        for index in range(args.runs):
            for effect in results:
                outcome = asyncio.run(one_run(node.ws_url, token, args.calls, effect))
                cost = log_cost(outcome["run_id"], args.calls)
                latencies = [us / 1e6 for us in outcome["latencies_us"]]
                results[effect].append({"run": index + 1, "latency": summary(latencies),
                                        "wall_ms_per_call": outcome["wall_s"] * 1000 / args.calls,
                                        "failed": outcome["failed"], "results_seen": outcome["results_seen"],
                                        **cost})
                print(f"{effect} run {index + 1}: p50 {percentile(latencies, 50) * 1000:.2f} ms, "
                      f"p99 {percentile(latencies, 99) * 1000:.2f} ms", file=sys.stderr)
        [conversation_id] = create_conversations([uid])
        floors = {"helper POST to the sink": summary(asyncio.run(floor_post(sink.url, args.calls))),
                  "row + commit under the conversation lock": summary(floor_row(conversation_id, args.calls))}
        applied = len(sink.applied)
        expected_applied = args.warmup + args.runs * args.calls + args.calls  # + the POST floor's calls
        problems = [f"{effect} run {r['run']}: {r['failed']} failed, {r['results_seen']} results seen, "
                    f"effects {r['effects']}"
                    for effect, rows in results.items() for r in rows
                    if r["failed"] or r["results_seen"] != args.calls or r["journal_rows"] != args.calls
                    or r["effects"] != [effect]]
        if applied != expected_applied:
            problems.append(f"the sink applied {applied} effects, expected {expected_applied}")
        run.failed = bool(problems)
        log_problems = run.log_problems()

    load_after = os.getloadavg()
    os.environ["DATABASE_URL"] = args.pg  # the probe's commit test: the scratch database is gone
    rows = []
    for effect, runs in results.items():
        for r in runs:
            lat = r["latency"]
            rows.append([f"`{effect}`", r["run"], lat["n"], ms(lat["p50_ms"]), ms(lat["p99_ms"]), ms(lat["max_ms"]),
                         ms(r["wall_ms_per_call"]), f"{r['events_per_call']:g}", f"{r['bytes_per_call']:.0f}"])
    for name, lat in floors.items():
        rows.append([f"floor: {name}", "-", lat["n"], ms(lat["p50_ms"]), ms(lat["p99_ms"]), ms(lat["max_ms"]),
                     "-", "-", "-"])
    print_report("tools", vars(args),
                 {"classes": results, "floors": floors, "sink_applied": applied, "problems": problems,
                  "node_log_problems": log_problems, "load_avg_before": load_before, "load_avg_after": load_after},
                 ["effect", "run", "calls", "p50 ms", "p99 ms", "max ms", "wall ms per call", "events per call",
                  "event bytes per call"], rows)
    print(f"load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in load_before)}; "
          f"after: {', '.join(f'{x:.1f}' for x in load_after)}")
    if problems:
        print("problems: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
