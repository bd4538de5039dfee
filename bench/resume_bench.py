"""Resume latency benchmark (issue 6): from a new socket opening to the last missed event
received, after a cut with 1, 100 and 1,000 events missed.

    .venv/bin/python bench/resume_bench.py --missed 1,100,1000 --reps 20

One daphne node, one client. For each M in --missed: a fresh conversation; the client connects
and is ready; then per repetition (--warmup unmeasured ones first, then --reps measured):
  1. the socket is cut (SO_LINGER 0 + abort: RST, no closing handshake);
  2. M `agent.delta`-shaped events (--text each) are appended to the conversation from this
     process, through sessions_app.services (lock, allocate seq, insert: the path of
     `services.append_event`, batched in one transaction), while the client is away;
  3. after --pause s (the node has processed the cut), the clock starts right before
     `websockets.connect`: handshake, `connect` with conversation_id and last_seq, `ready`
     (must say resumed, replay_count = M), then the M replayed events, which must be exactly
     the ones appended (seqs, types, payloads); the clock stops at the last one.
Reported per M: p50/p99/max of open-to-last-event, of the WebSocket handshake alone (open to
the upgrade's answer), of open-to-ready and of the replay alone
(nearest-rank percentiles: with 20 repetitions p99 is the maximum).
The connect rate limits are raised for the bench (one user reconnects many times).
Target: resume with 1,000 missed events complete in under 200 ms at p99.
Needs PostgreSQL (scratch database `tether_bench_resume`, dropped at the end) and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import (
    DEFAULT_PG,
    BenchRun,
    Node,
    ResumeTimes,
    abort_socket,
    append_events,
    create_conversations,
    make_users,
    print_report,
)


async def connect(url: str, token: str, conversation_id: str, last_seq: int, client_id: str):
    """Returns the socket, `ready` and when the handshake was answered (perf_counter)."""
    ws = await websockets.connect(url, ping_interval=None, compression=None, proxy=None, max_size=None,
                                  open_timeout=30, close_timeout=2)
    opened = time.perf_counter()
    await ws.send(json.dumps({"type": "connect", "token": token, "conversation_id": conversation_id,
                              "last_seq": last_seq, "client_id": client_id}))
    ready = json.loads(await asyncio.wait_for(ws.recv(), 30))
    return ws, ready, opened


async def level(url: str, user: tuple[int, str], missed: int, args) -> dict:
    from asgiref.sync import sync_to_async

    uid, token = user
    [conversation_id] = await sync_to_async(create_conversations)([uid])
    client_id = str(uuid.uuid4())
    ws, ready, _ = await connect(url, token, conversation_id, 0, client_id)
    assert ready["type"] == "ready", ready
    last_seq = ready["last_seq"]
    times, problems = ResumeTimes(), []
    for rep in range(args.warmup + args.reps):
        abort_socket(ws)
        expected = await sync_to_async(append_events)(conversation_id, missed, args.text, rep * missed)
        await asyncio.sleep(args.pause)

        t0 = time.perf_counter()
        ws, ready, t_open = await connect(url, token, conversation_id, last_seq, client_id)
        t_ready = time.perf_counter()
        got = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(ready.get("replay_count") or 0)]
        t_done = time.perf_counter()

        if not (ready.get("type") == "ready" and ready.get("resumed") and ready.get("replay_count") == missed
                and ready.get("last_seq") == last_seq + missed):
            problems.append(f"rep {rep}: ready {ready}")
        if got != expected:
            problems.append(f"rep {rep}: replay of {len(got)} frames differs from the {missed} appended")
        last_seq = got[-1]["seq"] if got else ready.get("last_seq", last_seq)
        if rep >= args.warmup:
            times.add(t0, t_open, t_ready, t_done)
    abort_socket(ws)
    return {"missed": missed, **times.summaries(),
            "problems": problems[:10], "problem_count": len(problems)}


async def scenario(node: Node, user: tuple[int, str], args) -> list[dict]:
    results = []
    for missed in (int(m) for m in args.missed.split(",")):
        result = await level(node.ws_url, user, missed, args)
        print(f"M={missed}: p50 {result['total']['p50_ms']:.1f} ms, p99 {result['total']['p99_ms']:.1f} ms",
              file=sys.stderr)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--missed", default="1,100,1000", help="events missed per cut, comma-separated")
    parser.add_argument("--reps", type=int, default=20, help="measured repetitions per level")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured repetitions per level first")
    parser.add_argument("--text", default="lorem ipsum dolor sit amet consectetur adipiscing ",
                        help="text of each missed event (a coalesced agent.delta is a few words)")
    parser.add_argument("--pause", type=float, default=0.2, help="between the appends and the reconnect, s")
    parser.add_argument("--replay-batch", type=int, default=None, help="REALTIME_REPLAY_BATCH (default 500)")
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database and node logs")
    args = parser.parse_args()

    with BenchRun("resume", args.pg, keep=args.keep) as run:
        [user] = make_users(1)
        env = {"REALTIME_RATE_CONNECT_USER": "100000/60", "REALTIME_RATE_CONNECT_IP": "100000/60",
               "REALTIME_MAX_CONNECTIONS_PER_USER": "1000"}
        if args.replay_batch:
            env["REALTIME_REPLAY_BATCH"] = str(args.replay_batch)
        node = Node(run, "resume", env).start()
        results = asyncio.run(scenario(node, user, args))
        log_problems = run.log_problems()
        ok = all(r["problem_count"] == 0 for r in results)
        run.failed = not ok

    rows = [[r["missed"], r["total"]["n"], f"{r['total']['p50_ms']:.1f}", f"{r['total']['p99_ms']:.1f}",
             f"{r['total']['max_ms']:.1f}", f"{r['handshake']['p50_ms']:.1f}",
             f"{r['to_ready']['p50_ms']:.1f}", f"{r['to_ready']['p99_ms']:.1f}",
             f"{r['replay_only']['p99_ms']:.1f}", r["problem_count"]] for r in results]
    print_report("resume", vars(args), {"levels": results, "node_log_problems": log_problems},
                 ["missed events", "reps", "p50 ms", "p99 ms", "max ms", "handshake p50 ms", "to ready p50 ms",
                  "to ready p99 ms",
                  "replay only p99 ms", "lost/wrong"], rows)
    thousand = [r for r in results if r["missed"] == 1000]
    if thousand:
        met = thousand[0]["total"]["p99_ms"] < 200 and ok
        print(f"\ntarget (1,000 missed events resumed in < 200 ms at p99, nothing lost): {'met' if met else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
