"""The demo page's tool cards, in Node without a browser (demo/static/demo/view.js imports
nothing and touches no DOM): one card per `call_id` on the answer of its run, whose status
follows the protocol's order of events ("Tools and approvals": `approval.requested`,
`approval.resolved`, then `agent.tool_call` and `agent.tool_result`); the check under the
answer counts the tool events as sequenced events (a skipped one is a gap) and words only in
the `agent.delta` text; the cards survive a reload of the saved view, and after `resumed: false`
they come back from the kept events, a waiting approval included, applied twice without
change. tests/e2e/browser/test_browser_approvals.py checks the real page against the server."""

from __future__ import annotations

import pytest

from tests.support.demo_view import run_demo_script

pytestmark = pytest.mark.pure

IMPORTS = """
import { View, cardStatus, proof } from "./view.js";
"""

SCRIPT = """const cards = (view, run = "r") => (view.byRun.get(run).tools || [])
  .map((c) => [c.callId, cardStatus(c), c.decision ?? null, c.by ?? null]);
const settle = (view) => clearTimeout(view.saveTimer);

// `effect 2`: a call, its result, then the text that says so; twice.
const effect = [
  { type: "agent.started", run_id: "r" },
  { type: "agent.tool_call", run_id: "r", call_id: "c1", tool: "demo.effect", arguments: { n: 1 }, effect: "local" },
  { type: "agent.tool_result", run_id: "r", call_id: "c1", status: "ok", result: { n: 1, recorded: true } },
  { type: "agent.delta", run_id: "r", index: 0, text: "effect 1 ok " },
  { type: "agent.tool_call", run_id: "r", call_id: "c2", tool: "demo.effect", arguments: { n: 2 }, effect: "local" },
  { type: "agent.tool_result", run_id: "r", call_id: "c2", status: "ok", result: { n: 2, recorded: true } },
  { type: "agent.delta", run_id: "r", index: 1, text: "effect 2 ok " },
  { type: "agent.delta", run_id: "r", index: 2, text: "done 2" },
  { type: "agent.completed", run_id: "r", message: { id: "m", text: "effect 1 ok effect 2 ok done 2" } },
].map((f, i) => ({ ...f, seq: i + 1 }));

const out = {};
let view = new View("c-effect", storage);
const steps = [];
for (const f of effect) { view.apply(f); steps.push(cards(view)); }
settle(view);
out.effectSteps = [steps[1], steps[2], steps[4], steps[8]];
out.effectProof = proof(view.byRun.get("r"));
out.effectEntries = view.entries.map((e) => e.kind);

// A tool event skipped is a gap in the check, as a skipped delta is.
view = new View("c-gap", storage);
for (const f of effect.filter((f) => f.seq !== 5)) view.apply(f);
settle(view);
out.gapProof = proof(view.byRun.get("r"));

// `transfer 5`: requested, then (after a reload of the saved view) resolved, called, answered.
const transfer = [
  { type: "agent.started", run_id: "t" },
  { type: "approval.requested", run_id: "t", call_id: "x", tool: "demo.transfer", arguments: { n: 5 },
    reason: "policy", expires_at: 1900000000 },
  { type: "approval.resolved", run_id: "t", call_id: "x", decision: "approved", by: "tab-2" },
  { type: "agent.tool_call", run_id: "t", call_id: "x", tool: "demo.transfer", arguments: { n: 5 }, effect: "once" },
  { type: "agent.tool_result", run_id: "t", call_id: "x", status: "ok", result: { n: 5, simulated: true } },
  { type: "agent.delta", run_id: "t", index: 0, text: "transferred 5" },
  { type: "agent.completed", run_id: "t", message: { id: "mt", text: "transferred 5" } },
].map((f, i) => ({ ...f, seq: i + 1 }));
view = new View("c-transfer", storage);
view.apply(transfer[0]); view.apply(transfer[1]); view.save();
out.waiting = cards(view, "t");
out.waitingCard = view.byRun.get("t").tools[0];
const reloaded = new View("c-transfer", storage); // a reload: the saved view, the same card
out.reloadedWaiting = [reloaded.lastSeq, cards(reloaded, "t"), reloaded.byCall.has("x")];
const transferSteps = [];
for (const f of transfer.slice(2)) { reloaded.apply(f); transferSteps.push(cards(reloaded, "t")); }
settle(reloaded);
out.transferSteps = transferSteps.slice(0, 3);
out.transferProof = proof(reloaded.byRun.get("t"));

// Denied: the resolution, then the `denied` result; no tool call.
view = new View("c-deny", storage);
for (const f of [transfer[0], transfer[1],
  { type: "approval.resolved", seq: 3, run_id: "t", call_id: "x", decision: "expired", by: "timeout" },
  { type: "agent.tool_result", seq: 4, run_id: "t", call_id: "x", status: "denied", error: "approval expired" }]) {
  view.apply(f);
}
settle(view);
out.expired = [cards(view, "t"), view.byRun.get("t").tools[0].error];

// `resumed: false`: rebuilt from the messages, then the cards from the kept events: the finished
// run's card on its message, the waiting one on a new answer (its run still going), a failed
// run's card left out with its answer; applying the kept events again changes nothing.
view = new View("c-rebuilt", storage);
view.replaceWithMessages([{ id: "u1", role: "user", text: "transfer 5", seq: 1 },
  { id: "mt", role: "assistant", text: "transferred 5", seq: 8 }], 20);
const kept = [
  ...transfer.slice(1),
  { type: "agent.started", seq: 10, run_id: "f" },
  { type: "agent.tool_call", seq: 11, run_id: "f", call_id: "fc", tool: "demo.effect", arguments: { n: 1 },
    effect: "local" },
  { type: "agent.tool_result", seq: 12, run_id: "f", call_id: "fc", status: "error", error: "boom" },
  { type: "agent.failed", seq: 13, run_id: "f", error: "boom" },
  { type: "agent.started", seq: 14, run_id: "w" },
  { type: "approval.requested", seq: 15, run_id: "w", call_id: "y", tool: "demo.transfer", arguments: { n: 7 },
    reason: "outcome_unknown", expires_at: 1900000000 },
];
view.restoreCards(kept);
const once = JSON.stringify(view.entries);
view.restoreCards(kept);
out.rebuilt = {
  entries: view.entries.map((e) => [e.kind, e.id ?? null, e.runId ?? null,
    (e.tools || []).map((c) => [c.callId, cardStatus(c)])]),
  idempotent: JSON.stringify(view.entries) === once,
  waiting: [...view.byCall.values()].filter((f) => cardStatus(f.card) === "waiting").map((f) => f.card.callId),
  lastSeq: view.lastSeq,
};
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def out() -> dict:
    return run_demo_script(IMPORTS, SCRIPT)


def test_each_call_is_one_card_on_its_answer_and_its_status_follows_its_events(out):
    assert out["effectSteps"] == [
        [["c1", "running", None, None]],
        [["c1", "ok", None, None]],
        [["c1", "ok", None, None], ["c2", "running", None, None]],
        [["c1", "ok", None, None], ["c2", "ok", None, None]],
    ]
    assert out["effectEntries"] == ["assistant"]  # the cards are on the answer, not entries of their own


def test_tool_events_count_as_sequenced_events_and_words_are_only_the_delta_text(out):
    assert out["effectProof"] == {"text": "8 of 8 words, 0 gaps, 0 repeats", "exact": True}
    assert out["gapProof"] == {"text": "8 of 8 words, 1 gap, 0 repeats", "exact": False}


def test_an_approval_waits_across_a_reload_and_shows_the_decision_and_who_decided(out):
    assert out["waiting"] == [["x", "waiting", None, None]]
    assert {k: out["waitingCard"][k] for k in ("tool", "arguments", "reason", "expiresAt")} == {
        "tool": "demo.transfer", "arguments": {"n": 5}, "reason": "policy", "expiresAt": 1900000000}
    assert out["reloadedWaiting"] == [2, [["x", "waiting", None, None]], True]
    assert out["transferSteps"] == [
        [["x", "approved", "approved", "tab-2"]],
        [["x", "running", "approved", "tab-2"]],
        [["x", "ok", "approved", "tab-2"]],
    ]
    assert out["transferProof"] == {"text": "2 of 2 words, 0 gaps, 0 repeats", "exact": True}
    assert out["expired"] == [[["x", "denied", "expired", "timeout"]], "approval expired"]


def test_after_resumed_false_the_cards_come_back_from_the_kept_events(out):
    rebuilt = out["rebuilt"]
    assert rebuilt["entries"] == [
        ["user", "u1", None, []],
        ["assistant", "mt", "t", [["x", "ok"]]],
        ["assistant", None, "w", [["y", "waiting"]]],
    ]
    assert rebuilt["idempotent"] is True
    assert rebuilt["waiting"] == ["y"]
    assert rebuilt["lastSeq"] == 20  # the kept events do not move the seq the view reflects
