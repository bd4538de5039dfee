"""Browser resume benchmark (issue 11): in headless Chromium, the demo page catching up on
1,000 missed events, (a) through a page reload and (b) when the browser comes back online.

    .venv/bin/python bench/browser_resume_bench.py --missed 1000 --reps 20

One daphne node serves the page, the REST API and the socket; one Chromium tab, signed in
through the page's form. Per repetition (--warmup unmeasured ones first), in a fresh
conversation opened in the tab (`/#c=<id>`, connected, nothing missed yet):

  reload   the tab's client is cut off (`goOffline`: socket dropped, no reconnect), M
           `agent.delta`-shaped events are appended to the conversation through
           sessions_app.services (one transaction), then the clock starts right before
           `page.reload()`: page load, module import, the client resumes from sessionStorage's
           last_seq, the server replays M events, the page renders them; the clock stops at
           the first animation frame after the M-th event was drawn. "to ready": from the same
           start to the client's `ready` (state `connected`).
  online   `context.set_offline(True)` (the page declares its socket dead), M events
           appended, then the clock starts right before `set_offline(False)`: the `online`
           event, reconnect, replay, render; stopped the same way.

Every repetition checks what the page shows against what was appended (all M deltas' text,
once, in order). Times are wall clock: Python's `time.time()` at the start, the page's
`performance.timeOrigin + performance.now()` at the end (same host clock).
Needs PostgreSQL (scratch database `tether_bench_browser`, dropped at the end), Redis and
Chromium (/usr/bin/chromium; TETHER_CHROMIUM overrides).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import DEFAULT_PG, BenchRun, Node, print_report, summary

CHROMIUM = os.environ.get("TETHER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "bench-password-1"

# Installed in the page before its scripts: when the client has applied the target seq (set
# in sessionStorage by the benchmark), the time of the next animation frame is recorded.
PROBE = """
let current;
Object.defineProperty(window, "tether", {
  configurable: true,
  get() { return current; },
  set(client) {
    current = client;
    window.__target = Number(sessionStorage.getItem("bench:target") || "0");
    client.addEventListener("state", (e) => {
      if (e.detail.state === "connected") window.__readyAt = performance.timeOrigin + performance.now();
    });
    client.addEventListener("event", (e) => {
      if (window.__target && e.detail.seq === window.__target) {
        requestAnimationFrame(() => { window.__doneAt = performance.timeOrigin + performance.now(); });
      }
    });
  },
});
"""

LAST_ANSWER = """() => {
  const answers = document.querySelectorAll("li.msg.assistant");
  return answers.length ? answers[answers.length - 1].querySelector(".text").textContent : null;
}"""


def make_user(username: str) -> int:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username=username, password=PASSWORD).pk


def new_conversation(owner_id: int) -> str:
    from sessions_app.models import Conversation

    return str(Conversation.objects.create(owner_id=owner_id).pk)


def append_run(conversation_id: str, count: int, text: str) -> int:
    """`agent.started` then `count` deltas of one run id, in one transaction (the services'
    lock-allocate-insert path, batched); returns the last seq."""
    from django.db import transaction

    from sessions_app.services.conversations import lock_conversation
    from sessions_app.services.event_log import append_locked

    run_id = str(uuid.uuid4())
    entries = [("agent.started", {"run_id": run_id, "in_reply_to": None}, None)]
    entries += [("agent.delta", {"run_id": run_id, "index": i, "text": text}, None) for i in range(count)]
    with transaction.atomic():
        events = append_locked(lock_conversation(conversation_id), entries)
    return events[-1].seq


async def wait_true(page, expression: str, timeout: float = 30.0) -> None:
    """Polls `expression` with `evaluate`: the page's Content-Security-Policy (no 'unsafe-eval')
    refuses Playwright's `wait_for_function`, which evaluates a string in the page."""
    deadline = time.monotonic() + timeout
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression} still false after {timeout} s")
        await asyncio.sleep(0.01)


async def open_conversation(page, base: str, conversation_id: str) -> None:
    await page.goto(f"{base}/#c={conversation_id}")
    await page.wait_for_selector("#badge[data-state=connected]")
    await wait_true(page, f"window.tether && window.tether.conversationId === {conversation_id!r}")


async def one_rep(page, base: str, owner_id: int, mode: str, args) -> tuple[float, float, str | None]:
    from asgiref.sync import sync_to_async

    conversation = await sync_to_async(new_conversation)(owner_id)
    await open_conversation(page, base, conversation)
    if mode == "reload":
        await page.evaluate("window.tether.goOffline(3600 * 1000)")
    else:
        await page.context.set_offline(True)
    await page.wait_for_selector("#badge[data-state=offline]")
    target = await sync_to_async(append_run)(conversation, args.missed, args.text)
    await page.evaluate(f"sessionStorage.setItem('bench:target', '{target}'); window.__target = {target}")
    await asyncio.sleep(args.pause)

    start = time.time()
    if mode == "reload":
        await page.reload()
    else:
        await page.context.set_offline(False)
    await wait_true(page, "window.__doneAt !== undefined", timeout=60.0)
    done_at = await page.evaluate("window.__doneAt")
    ready_at = await page.evaluate("window.__readyAt")
    shown = await page.evaluate(LAST_ANSWER)
    await page.evaluate("sessionStorage.removeItem('bench:target'); window.__doneAt = undefined")
    problem = None if shown == args.text * args.missed else (
        f"{mode}: the page shows {len(shown or '')} characters, expected {len(args.text) * args.missed}")
    return done_at / 1000 - start, ready_at / 1000 - start, problem


async def scenario(node: Node, owner_id: int, username: str, args) -> dict:
    from playwright.async_api import async_playwright

    base = f"http://127.0.0.1:{node.port}"
    results = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1000, "height": 800})
        page = await context.new_page()
        await page.add_init_script(PROBE)
        await page.goto(base + "/")
        await page.get_by_label("Username").fill(username)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_selector("#badge[data-state=connected]")
        for mode in args.modes.split(","):
            times, to_ready, problems = [], [], []
            for rep in range(args.warmup + args.reps):
                elapsed, ready, problem = await one_rep(page, base, owner_id, mode, args)
                if problem:
                    problems.append(f"rep {rep}: {problem}")
                if rep >= args.warmup:
                    times.append(elapsed)
                    to_ready.append(ready)
            results[mode] = {"to_last_rendered": summary(times), "to_ready": summary(to_ready),
                             "problems": problems[:10], "problem_count": len(problems)}
            r = results[mode]["to_last_rendered"]
            print(f"{mode}: p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms", file=sys.stderr)
        await browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--missed", type=int, default=1000, help="events missed before each resume")
    parser.add_argument("--reps", type=int, default=20, help="measured repetitions per mode")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured repetitions per mode first")
    parser.add_argument("--modes", default="reload,online", help="reload, online or both (comma-separated)")
    parser.add_argument("--text", default="lorem ipsum dolor sit amet ", help="text of each missed delta")
    parser.add_argument("--pause", type=float, default=0.2, help="between the appends and the resume, s")
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database and node logs")
    args = parser.parse_args()

    with BenchRun("browser", args.pg, keep=args.keep) as run:
        username = f"bench-{uuid.uuid4().hex[:6]}"
        owner_id = make_user(username)
        env = {"REALTIME_RATE_CONNECT_USER": "100000/60", "REALTIME_RATE_CONNECT_IP": "100000/60",
               "REALTIME_MAX_CONNECTIONS_PER_USER": "1000"}
        node = Node(run, "browser", env).start()
        results = asyncio.run(scenario(node, owner_id, username, args))
        ok = all(r["problem_count"] == 0 for r in results.values())
        results["node_log_problems"] = run.log_problems()
        run.failed = not ok

    rows = [[mode, args.missed, r["to_last_rendered"]["n"], f"{r['to_last_rendered']['p50_ms']:.0f}",
             f"{r['to_last_rendered']['p99_ms']:.0f}", f"{r['to_last_rendered']['max_ms']:.0f}",
             f"{r['to_ready']['p50_ms']:.0f}", f"{r['to_ready']['p99_ms']:.0f}", r["problem_count"]]
            for mode, r in results.items() if mode != "node_log_problems"]
    print_report("browser_resume", vars(args), results,
                 ["resume by", "missed events", "reps", "p50 ms", "p99 ms", "max ms", "to ready p50 ms",
                  "to ready p99 ms", "lost/wrong"], rows)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
