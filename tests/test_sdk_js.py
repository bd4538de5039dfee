"""The JavaScript client's own tests (`node --test clients/js/test/`, Node's built-in runner,
no packages), run from pytest so that `make test` covers them. They are the Python SDK's rule
tests ported (backoff, close rules, outbox, resume state), the fake-server scenarios, and the
browser facts (online/offline/visibility, sessionStorage resume)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.tools import node_or_skip, node_websocket_flags

pytestmark = pytest.mark.pure  # Node only: no server, Redis or database

ROOT = Path(__file__).resolve().parents[1]


def test_javascript_client_unit_tests_pass():
    node = node_or_skip()
    result = subprocess.run(
        [node, *node_websocket_flags(node), "--test", "--test-reporter=spec", "clients/js/test/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node --test failed:\n{output}"
    assert "ℹ fail 0" in output and "ℹ pass " in output, output
    assert "ℹ pass 0\n" not in output, output  # the runner found the tests
