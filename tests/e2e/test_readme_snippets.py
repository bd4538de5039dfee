"""Every snippet in the READMEs runs as pasted against a live node (issue 23, item 4): the
Python client README used `ACCESS` and `REFRESH` that were never defined, the JS snippet
cancelled a `runId` it never set.

Each fenced block of README.md, clients/python/README.md and clients/js/README.md is run by its
language: `python` with this virtual environment's python, `js` with Node 20+ as an ES module
from the repository root, `sh` with bash, `html` in Chromium on the node's origin. The
snippets address the demo server (`make demo`: 127.0.0.1:8000, user `demo` / `demo-password`);
the test substitutes the live node's port (and points `examples/chat.py`, whose defaults are
the same address, at it with TETHER_HTTP_URL / TETHER_WS_URL), and creates the demo user. A `# prints: TEXT` (or
`// prints: TEXT`) comment in a snippet is checked in what it printed.

`console` blocks are shown, not run: they set the machine up or start long-lived servers
(`make demo`, `make test`, `pip install`, a second HTTP server) or run another suite that has
its own test (`node --test clients/js/test/`, tests/test_sdk_js.py); `text` blocks are pictures.
Any other language fails the test, so a new snippet cannot be skipped by accident.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model

from tests.support.demo_page import CHROMIUM_ARGS
from tests.support.tools import chromium_or_skip, node_or_skip, node_websocket_flags

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
READMES = ["README.md", "clients/python/README.md", "clients/js/README.md"]
RUN = {"python", "js", "sh", "html"}
SHOWN = {"console", "text"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
PRINTS = re.compile(r"(?:#|//) prints: (.+?)\s*$", re.M)


@dataclass
class Snippet:
    readme: str
    line: int
    lang: str
    code: str

    def __str__(self) -> str:
        return f"{self.readme}:{self.line} ({self.lang})"


def snippets() -> list[Snippet]:
    found = []
    for readme in READMES:
        text = (ROOT / readme).read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Snippet(readme, line, match.group(1), match.group(2)))
    return found


@pytest.mark.pure
def test_every_block_has_a_language_this_test_knows():
    unknown = [str(s) for s in snippets() if s.lang not in RUN | SHOWN]
    assert not unknown, f"give each block a language ({sorted(RUN | SHOWN)}): {unknown}"
    run = [s for s in snippets() if s.lang in RUN]
    assert {s.lang for s in run} == RUN and len(run) >= 6, [str(s) for s in run]


def wait_ready(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the node never became ready"
        time.sleep(0.05)


def run_process(snippet: Snippet, port: int) -> subprocess.CompletedProcess:
    code = snippet.code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        # This checkout's client, not another one an editable install may point at.
        "PYTHONPATH": str(ROOT / "clients" / "python"),
        # clients/python/examples/chat.py's own defaults are the demo server's address.
        "TETHER_HTTP_URL": f"http://127.0.0.1:{port}",
        "TETHER_WS_URL": f"ws://127.0.0.1:{port}/ws/v1/",
    }
    if snippet.lang == "python":
        command = [sys.executable, "-"]
    elif snippet.lang == "sh":
        command = ["bash", "-euo", "pipefail", "-s"]
    else:  # js: an ES module read from stdin resolves relative imports from the working directory
        node = node_or_skip()
        command = [node, *node_websocket_flags(node), "--input-type=module", "-"]
    return subprocess.run(command, input=code, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)


def run_html(snippet: Snippet, base: str) -> list[str]:
    """Loads the snippet as a page of the node's origin; returns the page's errors."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_or_skip(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.on("response", lambda r: r.status >= 400 and errors.append(f"HTTP {r.status}: {r.url}"))
            html = f"<!doctype html><html><head><title>snippet</title></head><body>{snippet.code}</body></html>"
            page.route(f"{base}/__snippet__.html", lambda route: route.fulfill(body=html, content_type="text/html"))
            page.goto(f"{base}/__snippet__.html", wait_until="networkidle")
            loaded = page.evaluate("performance.getEntriesByType('resource').map((e) => e.name)")
            if not any(name.endswith("/static/tether/tether-client.js") for name in loaded):
                errors.append(f"the client module was not loaded: {loaded}")
        finally:
            browser.close()
    return errors


def test_every_readme_snippet_runs_as_pasted(daphne_cluster):
    get_user_model().objects.create_user(username="demo", password="demo-password")
    node = daphne_cluster("snippets", REALTIME_DEMO_AGENT_DELAY_MS=2)
    wait_ready(node.port)
    base = f"http://127.0.0.1:{node.port}"

    failures = []
    ran = 0
    for snippet in snippets():
        if snippet.lang not in RUN:
            continue
        ran += 1
        if snippet.lang == "html":
            errors = run_html(snippet, base)
            if errors:
                failures.append(f"{snippet}: {errors}")
            continue
        result = run_process(snippet, node.port)
        if result.returncode != 0:
            failures.append(f"{snippet} exited {result.returncode}\n--- stdout\n{result.stdout[-2000:]}"
                            f"\n--- stderr\n{result.stderr[-3000:]}")
            continue
        output = result.stdout + result.stderr
        failures.extend(f"{snippet} did not print {expected!r}\n--- output\n{output[-2000:]}"
                        for expected in PRINTS.findall(snippet.code) if expected not in output)
    assert ran >= 6
    assert not failures, "\n\n".join(failures)
