"""Runs a script against the demo page's own modules (demo/static/demo: view.js, happened.js
import nothing and touch no DOM) in Node, without a browser, with an in-memory sessionStorage;
the script prints one JSON value, which is returned."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.tools import node_or_skip

DEMO = Path(__file__).resolve().parents[2] / "demo" / "static" / "demo"

# What the page keeps in sessionStorage, in memory: `storage` in every script.
STORAGE = """
const storage = {
  items: {},
  getItem(k) { return this.items[k] ?? null; },
  setItem(k, v) { this.items[k] = v; },
  removeItem(k) { delete this.items[k]; },
};
"""


def run_demo_script(imports: str, body: str) -> Any:
    """`imports` (ES module import lines from the demo's modules), then `storage`, then `body`,
    which must `console.log(JSON.stringify(...))` its result once."""
    result = subprocess.run([node_or_skip(), "--input-type=module", "-"], input=imports + STORAGE + body,
                            cwd=DEMO, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)
