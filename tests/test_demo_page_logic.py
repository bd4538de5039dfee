"""The demo page's own checks, in Node without a browser (demo/static/demo/view.js and
happened.js import nothing and touch no DOM): the line under an answer counts a skipped seq as a
gap and a seq applied again as a repeat, and is exact only when the streamed text is the
server's; the "what just happened" line names the fault, the node, the seq the page resumed
after and the events replayed. tests/e2e/browser/test_browser_first_visit.py checks both on
the real page."""

from __future__ import annotations

import pytest

from tests.support.demo_view import run_demo_script

pytestmark = pytest.mark.pure

IMPORTS = """
import { View, proof } from "./view.js";
import { Happened } from "./happened.js";
"""

SCRIPT = """const words = (n) => Array.from({ length: n }, (_, i) => `w${i + 1}`);
const answer = (n) => words(n).join(" ");

const start = { type: "agent.started", seq: 1, run_id: "r" };
const deltas = (n, first = 2) => words(n).map((w, i) => (
  { type: "agent.delta", seq: first + i, run_id: "r", index: i, text: i < n - 1 ? `${w} ` : w }
));
const done = (n) => ({ type: "agent.completed", seq: n + 2, run_id: "r", message: { id: "m", text: answer(n) } });

function run(frames) {
  const view = new View("c2", storage);
  for (const f of frames) view.apply(f);
  clearTimeout(view.saveTimer);
  return proof(view.byRun.get("r"));
}
const d = deltas(300);
const results = {
  exact: run([start, ...d, done(300)]),
  streaming: run([start, ...d.slice(0, 57)]),
  gap: run([start, ...d.slice(0, 10), ...d.slice(11), done(300)]),
  repeat: run([start, ...d.slice(0, 10), d[9], ...d.slice(10), done(300)]),
};

let t = 0;
const shown = [];
const h = new Happened((text) => shown.push(text), () => t);
// The first connect: nothing to say.
h.state({ state: "connected", node: "web-1", resumed: false, replayCount: 0 }, null);
t = 1000; h.fault("Dropped the connection");
h.state({ state: "reconnecting", node: "web-1" }, 41);
t = 1300; h.state({ state: "connected", node: "web-2", resumed: true, replayCount: 12 }, 41);
for (let i = 0; i < 12; i++) { t += 1; h.event(); }
h.event(); // a live event after the replay changes nothing
t = 5000; h.state({ state: "reconnecting", node: "web-2" }, 60);  // a node stopped under the page
t = 5400; h.state({ state: "connected", node: "web-1", resumed: true, replayCount: 0 }, 60);
results.happened = shown;
console.log(JSON.stringify(results));
"""


def test_the_answer_check_and_the_resume_line():
    out = run_demo_script(IMPORTS, SCRIPT)
    assert out["exact"] == {"text": "300 of 300 words, 0 gaps, 0 repeats", "exact": True}
    assert out["streaming"] == {"text": "57 words so far, 0 gaps, 0 repeats", "exact": None}
    # A delta the page never applied: a gap in the seqs, and the text is not the server's.
    assert out["gap"] == {"text": "299 of 300 words, 1 gap, 0 repeats", "exact": False}
    # One applied twice: a repeat (and its text twice).
    assert out["repeat"] == {"text": "301 of 300 words, 0 gaps, 1 repeat", "exact": False}
    assert out["happened"] == [
        "Dropped the connection: resumed on node web-2 after seq 41, replaying 12 events…",
        "Dropped the connection: resumed on node web-2 after seq 41, 12 events replayed in 12 ms"
        " (0.3 s without a socket)",
        "The connection was lost: resumed on node web-1 after seq 60, no events to replay (0.4 s without a socket)",
    ]
