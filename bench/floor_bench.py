"""Floor benchmark: what the bare server stack (daphne, with no Tether logic, no database and
no Redis) costs for the workloads of bench/resume_bench.py and bench/stream_bench.py, on this
machine. A Tether target below these figures is below what daphne itself allows here.

    .venv/bin/python bench/floor_bench.py                                   # about a minute
    .venv/bin/python bench/floor_bench.py --missed 1,100,1000 --reps 20 --streams 100,500 --rate 20 --seconds 10

One daphne node serving bench/floor_asgi.py (`python -m daphne -b 127.0.0.1 -p PORT
bench.floor_asgi:application`, as stream_bench starts its baseline), started by this script.
- resume: for each K in --missed, --warmup unmeasured then --reps measured repetitions: the
  previous socket is cut (RST), --pause s later the clock starts right before
  `websockets.connect` (resume_bench's `connect`: same options), then `connect` with
  conversation "floor-K" and the last seq seen, `ready` (replay_count must be K), and K
  replayed `agent.delta` frames (seqs contiguous, resume_bench's default text); the clock
  stops at the last one. Reported: p50/p99/max of handshake (open to the upgrade's answer),
  open-to-ready and open-to-last-event (nearest rank: with 20 repetitions p99 is the maximum).
- streams: for each N in --streams, stream_bench's `run_phase` with durable semantics (each
  client sends `connect`, waits for `ready`, sends `message`; strict index order; completed
  text = the deltas) against the floor node streaming --rate tokens/s for --seconds s, one
  frame per token. Reported: tokens/s, p50/p99/max delay from a token's creation to its
  arrival, lost tokens, and the node's CPU (from /proc/PID/stat) in all and per 1,000 frames.
Client and server share the machine; the client's own CPU is reported beside the node's, to
tell which of the two a delay comes from. `--client node` runs both workloads with the Node
client of bench/compare_socketio.py (`ws`; its `tether` mode) instead, the client that measured
Tether and Socket.IO side by side, so the floor compares with both:

    .venv/bin/python bench/floor_bench.py --client node --missed 1,1000 --streams 100,500

Needs no PostgreSQL or Redis (the machine probe printed under the tables measures them when
they are there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._support import DEFAULT_PG, ResumeTimes, abort_socket, machine_line, raise_nofile  # noqa: E402
from bench.floor_asgi import TEXT  # noqa: E402
from bench.resume_bench import connect  # noqa: E402
from bench.stream_bench import cpu_seconds, free_port, run_phase, wait_port  # noqa: E402

APP = "bench.floor_asgi:application"


def start_floor(port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """The floor app under plain daphne, as stream_bench.start_node starts a non-Tether app."""
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), APP],
                                cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time: this process's own child only."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def log_problems(log_path: Path) -> list[str]:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if "Traceback" in line or "ERROR" in line or "CRITICAL" in line][:20]


def check_replay(ready: dict, got: list[dict], missed: int, last_seq: int) -> str | None:
    """What is wrong with a resume's `ready` and replayed frames, None when nothing is."""
    if not (ready.get("type") == "ready" and ready.get("resumed") and ready.get("replay_count") == missed
            and ready.get("last_seq") == last_seq + missed):
        return f"ready {ready}"
    expected = [{"type": "agent.delta", "seq": last_seq + 1 + i, "run_id": None, "index": last_seq - missed + i,
                 "text": TEXT} for i in range(missed)]
    if got != expected:
        return f"replay of {len(got)} frames differs from the {missed} expected"
    return None


async def resume_level(url: str, pid: int, missed: int, args: argparse.Namespace) -> dict:
    conversation_id = f"floor-{missed}"
    client_id = str(uuid.uuid4())
    # Connected once first, as resume_bench and the Node client are (its replay is not read).
    ws, ready, _ = await connect(url, "floor", conversation_id, 0, client_id)
    last_seq = ready["last_seq"]
    times, problems = ResumeTimes(), []
    cpu_before, client_before = cpu_seconds(pid), time.process_time()
    for rep in range(args.warmup + args.reps):
        abort_socket(ws)
        # resume_bench waits as long between the cut and the reconnect: the node has
        # handled the cut before the clock starts.
        await asyncio.sleep(args.pause)

        t0 = time.perf_counter()
        ws, ready, t_open = await connect(url, "floor", conversation_id, last_seq, client_id)
        t_ready = time.perf_counter()
        # Decoded inside the clock, as resume_bench does: a client has to read them.
        got = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(ready.get("replay_count") or 0)]
        t_done = time.perf_counter()

        if problem := check_replay(ready, got, missed, last_seq):
            problems.append(f"rep {rep}: {problem}")
        last_seq = ready.get("last_seq", last_seq)
        if rep >= args.warmup:
            times.add(t0, t_open, t_ready, t_done)
    abort_socket(ws)
    cpu, client_cpu = cpu_seconds(pid) - cpu_before, time.process_time() - client_before
    return {"missed": missed, **times.summaries(),
            "node_cpu_ms_per_resume": 1000 * cpu / max(1, args.warmup + args.reps),
            "client_cpu_ms_per_resume": 1000 * client_cpu / max(1, args.warmup + args.reps),
            "problems": problems[:10], "problem_count": len(problems)}


def node_resume_level(url: str, pid: int, missed: int, args: argparse.Namespace) -> dict:
    """The same resume with the Node client of bench/compare_socketio.py (its `tether` mode):
    the client that measured Tether and Socket.IO side by side, so the three compare."""
    from bench.compare_socketio import run_client, stats

    cfg = {"system": "tether", "missed": missed, "reps": args.reps, "warmup": args.warmup,
           "pause_ms": args.pause * 1000, "text": TEXT, "url": url, "token": "floor",
           "conversation_id": f"floor-{missed}", "client_id": str(uuid.uuid4())}
    cpu_before = cpu_seconds(pid)
    # Nothing to write while the client is away: the floor makes up the K events it replays.
    result = run_client("resume", cfg, 120 + (args.reps + args.warmup) * (args.pause + 5),
                        lambda request: {"written": request["count"]})
    samples = {name: stats(values) for name, values in result["samples"].items()}
    return {"missed": missed, "client": "node", "total": samples["open_to_last"], "to_ready": samples["open_to_ready"],
            "node_cpu_ms_per_resume": 1000 * (cpu_seconds(pid) - cpu_before) / max(1, args.warmup + args.reps),
            "problems": result["problems"], "problem_count": result["problem_count"]}


def node_streams_level(url: str, pid: int, streams: int, args: argparse.Namespace) -> dict:
    """The same streams with compare_socketio's Node client (its `tether` mode)."""
    from types import SimpleNamespace

    from bench.compare_socketio import stream_level

    node = SimpleNamespace(ws_url=url, pid=pid)  # what stream_level reads of a Tether node
    r = stream_level("tether", {"tether": node}, ["floor"] * streams, streams, f"floor-{streams}", args)
    return {**r, "client": "node", "events_per_s": r["tokens_per_s"], "node_cpu_s": r["server_cpu_s"],
            "node_cpu_ms_per_1000_frames": 1e6 * r["server_cpu_s"] / max(1, r["tokens"]),
            "client_cpu_s": float("nan"), "expected_tokens": streams * int(args.rate * args.seconds)}


async def streams_level(url: str, pid: int, streams: int, args: argparse.Namespace) -> dict:
    if args.client == "node":
        return await asyncio.to_thread(node_streams_level, url, pid, streams, args)
    cpu_before, client_before = cpu_seconds(pid), time.process_time()
    # Durable semantics: the floor answers `connect` like Tether; the token is not looked at.
    result = await run_phase(url, ["floor"] * streams, True, args.rate, args.seconds)
    result["node_cpu_s"] = cpu_seconds(pid) - cpu_before
    # Client and node share the 2 cores: the client's CPU shows which side a delay comes from.
    result["client_cpu_s"] = time.process_time() - client_before
    frames = result["events_per_s"] * result["elapsed_s"]
    result["node_cpu_ms_per_1000_frames"] = 1e6 * result["node_cpu_s"] / max(1.0, frames)
    result["streams"] = streams
    result["expected_tokens"] = streams * int(args.rate * args.seconds)
    result["tokens"] = round(result["tokens_per_s"] * result["elapsed_s"])
    return result


async def scenario(url: str, pid: int, args: argparse.Namespace) -> dict:
    resume = []
    for missed in (int(m) for m in args.missed.split(",") if m):
        level = (await resume_level(url, pid, missed, args) if args.client == "python"
                 else await asyncio.to_thread(node_resume_level, url, pid, missed, args))
        print(f"resume K={missed}: p50 {level['total']['p50_ms']:.1f} ms, p99 {level['total']['p99_ms']:.1f} ms",
              file=sys.stderr)
        resume.append(level)
    streams = []
    for count in (int(n) for n in args.streams.split(",") if n):
        level = await streams_level(url, pid, count, args)
        print(f"streams N={count}: p99 {level['p99_ms']:.1f} ms, lost {level['lost_tokens']}", file=sys.stderr)
        streams.append(level)
    return {"resume": resume, "streams": streams}


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--missed", default="1,1000", help="events replayed per resume, comma-separated")
    parser.add_argument("--reps", type=int, default=20, help="measured resumes per level")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured resumes per level first")
    parser.add_argument("--pause", type=float, default=0.2, help="between a cut and the reconnect, s")
    parser.add_argument("--client", choices=("python", "node"), default="python",
                        help="client of both workloads: resume_bench's and stream_bench's (Python websockets) or "
                             "compare_socketio's (Node ws)")
    parser.add_argument("--streams", default="100,500", help="concurrent streams per level, comma-separated")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second per stream")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each stream, s")
    args = parser.parse_args()

    # A SIGTERM to the benchmark unwinds like Ctrl-C, so the node below is still stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Client and node each hold one descriptor per socket (the node inherits the limit).
    raise_nofile(2 * max([int(n) for n in args.streams.split(",") if n] or [0]) + 1000)
    log_dir = Path(tempfile.mkdtemp(prefix="tether-bench-floor-"))
    log_path = log_dir / "floor.log"
    port = free_port()
    results: dict | None = None
    node = start_floor(port, {"BENCH_RATE": str(args.rate), "BENCH_SECONDS": str(args.seconds)}, log_path)
    try:
        wait_port(port)
        results = asyncio.run(scenario(f"ws://127.0.0.1:{port}/ws/v1/", node.pid, args))
    finally:
        stop(node)
        problems = log_problems(log_path)
        ok = (results is not None and not problems and all(r["problem_count"] == 0 for r in results["resume"])
              and all(r["lost_tokens"] == 0 for r in results["streams"]))
        if ok:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            print(f"node log kept in {log_path}", file=sys.stderr)

    from bench.machine_probe import probe

    machine = probe(os.environ.get("DATABASE_URL", DEFAULT_PG), os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    print(json.dumps({"bench": "floor", "args": vars(args), "port": port, "results": results,
                      "node_log_problems": problems, "machine": machine}, indent=2))
    print(f"\n| floor (daphne only): resume, K missed ({args.client} client) | reps | p50 ms | p99 ms | max ms "
          "| handshake p50 ms | handshake p99 ms | to ready p50 ms | to ready p99 ms | replay only p99 ms "
          "| node CPU ms / resume | client CPU ms / resume | lost/wrong |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results["resume"]:
        t, rd = r["total"], r["to_ready"]
        # The Node client times no handshake of its own and its CPU is not this process's.
        h = r.get("handshake", {"p50_ms": float("nan"), "p99_ms": float("nan")})
        replay_p99 = r["replay_only"]["p99_ms"] if "replay_only" in r else float("nan")
        print(f"| {r['missed']} | {t['n']} | {t['p50_ms']:.1f} | {t['p99_ms']:.1f} | {t['max_ms']:.1f} | "
              f"{h['p50_ms']:.1f} | {h['p99_ms']:.1f} | {rd['p50_ms']:.1f} | {rd['p99_ms']:.1f} | "
              f"{replay_p99:.1f} | {r['node_cpu_ms_per_resume']:.1f} | "
              f"{r.get('client_cpu_ms_per_resume', float('nan')):.1f} | {r['problem_count']} |")
    print(f"\n| floor (daphne only): streams ({args.client} client) | tokens/s | frames/s delivered | p50 ms "
          "| p99 ms | max ms | lost "
          "| node CPU s | node CPU ms / 1,000 frames | client CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results["streams"]:
        print(f"| {r['streams']} x {args.rate:g} tokens/s | {r['tokens_per_s']:.0f} | {r['events_per_s']:.0f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['lost_tokens']} | "
              f"{r['node_cpu_s']:.2f} | {r['node_cpu_ms_per_1000_frames']:.0f} | {r['client_cpu_s']:.2f} |")
    print(f"\n{machine_line(machine)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
