"""Outside programs some tests need (Node for the JS client, Chromium for the browser tests).

Under CI (`CI=true`, set by the CI runner; `.ci/run` installs both) a missing program is a
failure, never a skip: a green CI must have run these tests. A local run without them skips
with the reason, so that `make test` still works on a machine without a browser.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

CHROMIUM = os.environ.get("TETHER_CHROMIUM", "/usr/bin/chromium")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skips the test (local run) or fails it (CI) because a tool is missing."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: .ci/run must install it)", pytrace=False)
    pytest.skip(reason)


def node_or_skip() -> str:
    """The `node` executable (20 or later)."""
    node = shutil.which("node")
    if node is None:
        missing("node is not installed: the JavaScript client's tests need Node 20+")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        missing(f"node {version} is too old: the JavaScript client's tests need Node 20+")
    return node


def node_websocket_flags(node: str) -> list[str]:
    """Node 20 has a WebSocket only behind a flag (22 has it on by default)."""
    probe = subprocess.run([node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"], check=False)
    return [] if probe.returncode == 0 else ["--experimental-websocket"]


def chromium_or_skip() -> str:
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing(f"no Chromium at {CHROMIUM} (apt-get install -y chromium): the browser tests need it")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing("the Python 'playwright' package is not installed (requirements-dev.txt)")
    return CHROMIUM
