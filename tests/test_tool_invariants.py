"""The shared checker of tool and approval events (tests/support/tool_invariants.py) refuses each
broken rule it stands for, so that the tests relying on it cannot pass on a log that breaks one."""

from __future__ import annotations

import copy

import pytest

from tests.support.tool_invariants import check_tool_events

pytestmark = pytest.mark.pure

RUN = "r-1"


def a_log() -> list[dict]:
    """A run that makes one call without approval and one with, then completes."""
    events = [
        {"type": "message.created", "message": {"id": "m", "text": "go"}},
        {"type": "agent.started", "run_id": RUN, "in_reply_to": "m"},
        {"type": "agent.tool_call", "run_id": RUN, "call_id": "c1", "tool": "demo.effect", "arguments": {"n": 1},
         "effect": "idempotent"},
        {"type": "agent.tool_result", "run_id": RUN, "call_id": "c1", "status": "ok", "result": {"n": 1}},
        {"type": "agent.delta", "run_id": RUN, "index": 0, "text": "effect 1 ok "},
        {"type": "approval.requested", "run_id": RUN, "call_id": "c2", "tool": "demo.transfer",
         "arguments": {"n": 5}, "reason": "policy", "expires_at": 1},
        {"type": "approval.resolved", "run_id": RUN, "call_id": "c2", "decision": "approved", "by": "tab-1"},
        {"type": "agent.tool_call", "run_id": RUN, "call_id": "c2", "tool": "demo.transfer", "arguments": {"n": 5},
         "effect": "once"},
        {"type": "agent.tool_result", "run_id": RUN, "call_id": "c2", "status": "ok", "result": None},
        {"type": "agent.delta", "run_id": RUN, "index": 1, "text": "transferred 5"},
        {"type": "agent.completed", "run_id": RUN, "message": {"text": "effect 1 ok transferred 5"}},
    ]
    return [{**e, "seq": seq} for seq, e in enumerate(events, start=1)]


def renumbered(events: list[dict]) -> list[dict]:
    return [{**e, "seq": seq} for seq, e in enumerate(events, start=1)]


def test_a_log_that_keeps_every_rule_passes():
    log = check_tool_events(a_log())
    assert [(c.call_id, c.status, c.decision) for c in log.calls.values()] == [
        ("c1", "ok", None), ("c2", "ok", "approved")]


def broken(change) -> list[dict]:
    events = copy.deepcopy(a_log())
    change(events)
    return renumbered(events)


BROKEN = {
    "two results for a call": (lambda e: e.insert(4, dict(e[3])), "two agent.tool_result"),
    "a call without a result": (lambda e: e.pop(3), "no agent.tool_result"),
    "two resolutions of an approval": (lambda e: e.insert(7, dict(e[6])), "two approval.resolved"),
    "a call made without its approval": (lambda e: e.pop(6), "made without approval"),
    "a call_id naming another call": (lambda e: e[7].__setitem__("tool", "demo.effect"), "changed"),
    "a call announced twice": (lambda e: e.insert(3, dict(e[2])), "announced twice"),
    "a result before its call": (lambda e: e.insert(2, e.pop(3)), "never announced nor requested"),
    "a denied call that was made": (lambda e: e[8].update(status="denied", error="x") or e[8].pop("result"),
                                    "denied after it was made"),
    "text inside a tool event": (lambda e: e[3].__setitem__("text", "effect 1 ok "), "extra fields"),
    "a tool result inside the answer": (
        lambda e: e[10]["message"].__setitem__("text", "effect 1 ok {'n': 1} transferred 5"), "is not its deltas"),
    "a tool event after the run ended": (lambda e: e.append(dict(e[3])), "after the run ended"),
}


@pytest.mark.parametrize(("change", "message"), BROKEN.values(), ids=BROKEN.keys())
def test_each_broken_rule_is_refused(change, message):
    with pytest.raises(AssertionError, match=message):
        check_tool_events(broken(change))


def test_an_unresolved_approval_is_refused_once_runs_are_finished():
    events = renumbered(a_log()[:6])  # waiting for the approval
    check_tool_events(events, finished=False)
    with pytest.raises(AssertionError, match="no agent.tool_result"):
        check_tool_events(events)
