"""The close-code table exists once for both SDKs: this test runs the Python SDK's
`close_rules.decide` and the JavaScript client's `decide` over every close code a socket can
report and every error frame the server sends before a close, and fails on any difference
(action, delay, rotation, and the reason text)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tether_client.close_rules import ERROR_CODE_CLOSES, FRAME_TOO_LARGE_CODES, STOP_CODES, decide

from tests.support.tools import node_or_skip

pytestmark = pytest.mark.pure  # Node only: no server, Redis or database

ROOT = Path(__file__).resolve().parents[1]

CODES = [None, *range(1000, 1016), 2999, 3000, 3999, *range(4000, 4020), *range(4400, 4500), 4500, 4999]
ERRORS = [
    None,
    *({"type": "error", "code": code} for code in ERROR_CODE_CLOSES),
    {"type": "error", "code": "rate_limited", "retry_after_ms": 1500},
    {"type": "error", "code": "rate_limited", "retry_after_ms": 300, "ref": "6f1e"},
    {"type": "error", "code": "rate_limited"},
    {"type": "error", "code": "bad_frame"},
    {"type": "error", "code": "too_long", "ref": "6f1e"},
    {"type": "error", "code": "something_new"},
]
CASES = [
    {"code": code, "error": error, "reconnect": reconnect, "retryAfterMs": retry}
    for code in CODES
    for error in ERRORS
    for reconnect in (False, True)
    for retry in (None, 200)
]

JS = """
import { decide, STOP_CODES, ERROR_CODE_CLOSES, FRAME_TOO_LARGE_CODES } from "./clients/js/src/tether-client.js";
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const decisions = JSON.parse(input).map((c) => {
    const d = decide(c.code, { error: c.error, reconnect: c.reconnect, retryAfterMs: c.retryAfterMs });
    return [d.action, d.reason, d.delayMs, d.rotate];
  });
  const tooLarge = [...FRAME_TOO_LARGE_CODES];
  process.stdout.write(JSON.stringify({ decisions, STOP_CODES, ERROR_CODE_CLOSES, FRAME_TOO_LARGE_CODES: tooLarge }));
});
"""


def python_decision(case: dict) -> list:
    d = decide(case["code"], error=case["error"], reconnect=case["reconnect"], retry_after_ms=case["retryAfterMs"])
    return [d.action.value, d.reason, d.delay_ms, d.rotate]


def test_both_sdks_decide_every_close_the_same_way():
    node = node_or_skip()
    result = subprocess.run(
        [node, "--input-type=module", "-e", JS],
        cwd=ROOT,
        input=json.dumps(CASES),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    js = json.loads(result.stdout)
    assert {int(k): v for k, v in js["STOP_CODES"].items()} == dict(STOP_CODES)
    assert js["ERROR_CODE_CLOSES"] == dict(ERROR_CODE_CLOSES)
    assert set(js["FRAME_TOO_LARGE_CODES"]) == set(FRAME_TOO_LARGE_CODES)
    differences = [
        (case, py, got)
        for case, got in zip(CASES, js["decisions"], strict=True)
        if (py := python_decision(case)) != got
    ]
    assert not differences, f"{len(differences)} of {len(CASES)} decisions differ, e.g.:\n" + "\n".join(
        f"{case}: python {py} js {got}" for case, py, got in differences[:10]
    )
    assert len(CASES) > 5000
