"""The rules of tool calls and approvals on the wire (docs/protocol.md, "Tools and approvals"),
checked on a conversation's events in seq order: what a client received, or the log itself.
Every tool and approval test runs `check_tool_events` on what it saw, and `check_conversation_tools`
on the database, so each of them proves the shared invariants besides its own rule:

- exactly one `agent.tool_result` per `call_id` (at most one while runs are still open);
- exactly one `approval.resolved` per `approval.requested` (at most one while open);
- a `call_id` is stable: one run, one tool and one set of arguments in every event that names it,
  announced (`agent.tool_call`) at most once, whichever node made it;
- the order: `agent.tool_call` before its result; `approval.requested` before its resolution, and
  an approved call's `agent.tool_call` after it; a `denied` result never has an `agent.tool_call`;
  a run's tool events between its `agent.started` and its end, none after it ended;
- text never inside tool events: tool events carry only their documented fields, and
  `agent.completed.message.text` is exactly the concatenation of the run's `agent.delta` texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOOL_EVENTS = ("agent.tool_call", "agent.tool_result", "approval.requested", "approval.resolved")
FIELDS = {
    "agent.tool_call": ({"run_id", "call_id", "tool", "arguments", "effect"}, set()),
    "agent.tool_result": ({"run_id", "call_id", "status"}, {"result", "error", "truncated"}),
    "approval.requested": ({"run_id", "call_id", "tool", "arguments", "reason", "expires_at"}, set()),
    "approval.resolved": ({"run_id", "call_id", "decision", "by"}, set()),
}
EFFECTS = {"read", "idempotent", "local", "once"}
STATUSES = {"ok", "error", "unknown", "denied"}
REASONS = {"policy", "outcome_unknown"}
DECISIONS = {"approved", "denied", "expired"}


@dataclass
class CallOnWire:
    """One call_id as the events tell it (seqs of each event, None if absent)."""

    call_id: str
    run_id: str
    tool: str
    arguments: dict
    effect: str | None = None
    call_seq: int | None = None
    result_seq: int | None = None
    status: str | None = None
    result: Any = None
    error: str | None = None
    requested_seq: int | None = None
    reason: str | None = None
    resolved_seq: int | None = None
    decision: str | None = None
    by: str | None = None


@dataclass
class ToolLog:
    calls: dict[str, CallOnWire] = field(default_factory=dict)
    # run id -> the run's text as its deltas tell it, and how the run ended (if it did).
    texts: dict[str, str] = field(default_factory=dict)
    ended: dict[str, str] = field(default_factory=dict)

    def of_tool(self, tool: str) -> list[CallOnWire]:
        return sorted((c for c in self.calls.values() if c.tool == tool),
                      key=lambda c: c.call_seq or c.requested_seq or 0)


def _sequenced(events: list[dict]) -> list[dict]:
    return [e for e in events if "seq" in e and e.get("type") not in ("message.ack",)]


def check_tool_events(events: list[dict], *, finished: bool = True) -> ToolLog:
    """Asserts the rules above on `events` (frames with `type` and `seq`, a whole conversation
    from seq 1 or a resumed tail: every seq after the first once, in order). `finished`: every
    run has ended, so every call has its result and every approval its resolution."""
    events = _sequenced(events)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), f"seqs out of order or repeated: {seqs}"
    log = ToolLog()
    started: set[str] = set()
    deltas: dict[str, list[str]] = {}
    for event in events:
        kind, seq = event["type"], event["seq"]
        run_id = event.get("run_id")
        if kind == "agent.started":
            started.add(run_id)
            continue
        if kind == "agent.delta":
            assert set(event) <= {"type", "seq", "run_id", "index", "text"}, f"delta with extra fields: {event}"
            deltas.setdefault(run_id, []).append(event["text"])
            continue
        if kind in ("agent.completed", "agent.failed"):
            log.ended[run_id] = kind
            if kind == "agent.completed":
                text = "".join(deltas.get(run_id, []))
                assert event["message"]["text"] == text, (
                    f"run {run_id}: completed text {event['message']['text']!r} is not its deltas {text!r}")
            continue
        if kind not in TOOL_EVENTS:
            continue
        required, optional = FIELDS[kind]
        present = set(event) - {"type", "seq"}
        assert required <= present, f"seq {seq} {kind} lacks {required - present}: {event}"
        assert present <= required | optional, f"seq {seq} {kind} has extra fields {present - required - optional}"
        assert run_id in started, f"seq {seq} {kind} of run {run_id} before its agent.started"
        assert run_id not in log.ended, f"seq {seq} {kind} of run {run_id} after the run ended ({log.ended[run_id]})"
        call_id = event["call_id"]
        call = log.calls.get(call_id)
        if call is None:
            assert kind in ("agent.tool_call", "approval.requested"), (
                f"seq {seq} {kind} for call {call_id} that was never announced nor requested")
            call = log.calls[call_id] = CallOnWire(call_id, run_id, event["tool"], event["arguments"])
        assert call.run_id == run_id, f"call {call_id} changed runs: {call.run_id} then {run_id}"
        if "tool" in event:
            assert (event["tool"], event["arguments"]) == (call.tool, call.arguments), (
                f"call {call_id} changed: {call.tool}{call.arguments} then {event['tool']}{event['arguments']}")
        if kind == "agent.tool_call":
            assert call.call_seq is None, f"call {call_id} announced twice (seqs {call.call_seq}, {seq})"
            assert call.result_seq is None, f"call {call_id} announced after its result"
            assert event["effect"] in EFFECTS, event
            if call.requested_seq is not None:
                assert call.decision == "approved", f"call {call_id} made without approval ({call.decision})"
            call.call_seq, call.effect = seq, event["effect"]
        elif kind == "agent.tool_result":
            assert call.result_seq is None, f"call {call_id} has two agent.tool_result (seqs {call.result_seq}, {seq})"
            status = event["status"]
            assert status in STATUSES, event
            if status == "denied":
                assert call.call_seq is None, f"call {call_id} denied after it was made"
            else:
                assert call.call_seq is not None, f"call {call_id} has a {status} result and was never announced"
            if status == "unknown":
                assert call.effect == "once", f"only a once call may be unknown: {call_id} is {call.effect}"
            if status == "ok":
                assert "error" not in event and ("result" in event or event.get("truncated") is True), event
            else:
                assert isinstance(event.get("error"), str) and "result" not in event, event
            call.result_seq, call.status = seq, status
            call.result, call.error = event.get("result"), event.get("error")
        elif kind == "approval.requested":
            assert call.requested_seq is None, f"call {call_id}: two approval.requested"
            assert call.call_seq is None, f"call {call_id}: approval requested after it was made"
            assert event["reason"] in REASONS and isinstance(event["expires_at"], int), event
            call.requested_seq, call.reason = seq, event["reason"]
        else:  # approval.resolved
            assert call.requested_seq is not None, f"call {call_id}: approval.resolved without approval.requested"
            assert call.resolved_seq is None, (
                f"call {call_id}: two approval.resolved (seqs {call.resolved_seq}, {seq})")
            assert event["decision"] in DECISIONS and isinstance(event["by"], str) and event["by"], event
            call.resolved_seq, call.decision, call.by = seq, event["decision"], event["by"]
    for run_id, pieces in deltas.items():
        log.texts[run_id] = "".join(pieces)
    if finished:
        for call in log.calls.values():
            assert call.result_seq is not None, f"call {call.call_id} ({call.tool}) has no agent.tool_result"
            if call.requested_seq is not None:
                assert call.resolved_seq is not None, f"call {call.call_id}: approval never resolved"
    return log


# --- against the database -----------------------------------------------------------------------


def conversation_log(conversation_id: str) -> list[dict]:
    """The conversation's whole log as frames (sync: run it in a thread)."""
    from sessions_app.models import Event

    return [e.as_frame() for e in Event.objects.filter(conversation_id=conversation_id).order_by("seq")]


def check_conversation_tools(conversation_id: str, received: list[dict] | None = None, *,
                             finished: bool = True) -> ToolLog:
    """`check_tool_events` on the conversation's log in the database, and the journal agreeing
    with it: one ToolCall row per call_id of the log, with the log's status; one Approval per
    `approval.requested`, with its decision. `received`: what a client applied, which must be
    the log exactly (sync: run it in a thread)."""
    from sessions_app.models import Approval, ToolCall

    frames = conversation_log(conversation_id)
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1)), "the log has holes"
    if received is not None:
        assert _sequenced(received) == frames, "what the client applied is not the log"
    log = check_tool_events(frames, finished=finished)
    rows = {str(c.id): c for c in ToolCall.objects.filter(conversation_id=conversation_id)}
    assert set(rows) == set(log.calls), f"journal calls {sorted(rows)} vs calls on the wire {sorted(log.calls)}"
    for call_id, call in log.calls.items():
        row = rows[call_id]
        assert (str(row.run_id), row.tool, row.arguments) == (call.run_id, call.tool, call.arguments), call_id
        if call.status is not None:
            assert row.status == call.status, f"call {call_id}: journal {row.status}, wire {call.status}"
        if call.effect is not None:
            assert row.effect == call.effect, call_id
    approvals = {str(a.call_id): a for a in Approval.objects.filter(conversation_id=conversation_id)}
    requested = {cid for cid, c in log.calls.items() if c.requested_seq is not None}
    assert set(approvals) == requested, f"approvals {sorted(approvals)} vs requested {sorted(requested)}"
    for call_id, approval in approvals.items():
        call = log.calls[call_id]
        assert approval.reason == call.reason, call_id
        if call.decision is not None:
            assert (approval.status, approval.decided_by) == (call.decision, call.by), call_id
    return log
