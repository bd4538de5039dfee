"""The tool journal's rows as log events, and the steps that end calls and approvals. Shared
by the tool services (services/tools.py) and the run services (services/runs.py: a failed or
cancelled run settles its open calls in its own transaction). Every function here runs inside
the caller's transaction, with the conversation row locked first.

The wire (docs/protocol.md, "Tools and approvals"): `agent.tool_call` when a call starts,
`agent.tool_result` once per call, `approval.requested` when a call waits for a person, and
`approval.resolved` once per request.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from realtime.core import metrics
from sessions_app.models import AgentRun, Approval, Conversation, ToolCall
from sessions_app.services.event_log import append_locked

Entry = tuple[str, dict, Any]  # (event type, payload, run id): what append_locked takes


def tool_call_entry(call: ToolCall) -> Entry:
    return ("agent.tool_call", {"run_id": str(call.run_id), "call_id": str(call.id), "tool": call.tool,
                                "arguments": call.arguments, "effect": call.effect}, call.run_id)


def tool_result_entry(call: ToolCall) -> Entry:
    """The result, capped at REALTIME_TOOL_RESULT_MAX_BYTES on the wire (the journal keeps it
    whole for the agent): over the cap the event says `truncated` instead."""
    payload: dict[str, Any] = {"run_id": str(call.run_id), "call_id": str(call.id), "status": call.status}
    if call.status == ToolCall.Status.OK:
        encoded = json.dumps(call.result, separators=(",", ":"), ensure_ascii=False)
        if len(encoded.encode()) > settings.REALTIME_TOOL_RESULT_MAX_BYTES:
            payload["truncated"] = True
        else:
            payload["result"] = call.result
    else:
        payload["error"] = call.error
    return ("agent.tool_result", payload, call.run_id)


def approval_requested_entry(approval: Approval) -> Entry:
    call = approval.call
    return ("approval.requested", {
        "run_id": str(call.run_id), "call_id": str(call.id), "tool": call.tool, "arguments": call.arguments,
        "reason": approval.reason, "expires_at": int(approval.expires_at.timestamp()),
    }, call.run_id)


def approval_resolved_entry(approval: Approval) -> Entry:
    return ("approval.resolved", {"run_id": str(approval.run_id), "call_id": str(approval.call_id),
                                  "decision": approval.status, "by": approval.decided_by}, approval.run_id)


def finish_call(call: ToolCall, status: str, *, result: Any = None, error: str = "") -> Entry:
    effect = call.effect
    transaction.on_commit(lambda: metrics.TOOL_CALLS.labels(effect, status).inc())
    call.status = status
    call.result = result if status == ToolCall.Status.OK else None
    call.error = "" if status == ToolCall.Status.OK else error[:2000]
    call.finished_at = timezone.now()
    call.save(update_fields=["status", "result", "error", "finished_at"])
    return tool_result_entry(call)


def decide(approval: Approval, decision: str, by: str) -> list[Entry]:
    """A pending approval decided (approved, denied or expired). Denied or expired, its call
    was never made: its result is `denied`. The run, waiting for it, is queued again (the
    caller kicks the supervisors); the wait does not count towards the run's timeout."""
    now = timezone.now()
    transaction.on_commit(lambda: metrics.APPROVALS_RESOLVED.labels(decision).inc())
    approval.status = decision
    approval.decided_by = by[:64]
    approval.decided_at = now
    approval.save(update_fields=["status", "decided_by", "decided_at"])
    entries = [approval_resolved_entry(approval)]
    if decision != Approval.Status.APPROVED:
        entries.append(finish_call(approval.call, ToolCall.Status.DENIED, error=f"approval {decision}"))
    run = AgentRun.objects.select_for_update().get(pk=approval.run_id)
    if run.status == AgentRun.Status.WAITING:
        waited = (now - run.waiting_since).total_seconds() if run.waiting_since else 0.0
        run.status = AgentRun.Status.QUEUED
        run.waited_seconds += max(0.0, waited)
        run.waiting_since = None
        run.save(update_fields=["status", "waited_seconds", "waiting_since"])
    return entries


def settle_open_calls(run: AgentRun, why: str, by: str = "") -> list[Entry]:
    """A run ends (failed, cancelled, timed out) with calls still open: each gets its one
    result. A pending approval is resolved `denied` (`by` the cancelling client, or the
    server); a started `once` call may have happened (`unknown`); any other started call is
    an `error`; a call that never started is `denied`."""
    entries: list[Entry] = []
    open_calls = ToolCall.objects.select_for_update().filter(
        run=run, status__in=(ToolCall.Status.INTENT, ToolCall.Status.STARTED)).order_by("step", "retry")
    for call in open_calls:
        if call.status == ToolCall.Status.INTENT:
            approval = Approval.objects.select_for_update().filter(call=call).first()
            if approval is not None and approval.status == Approval.Status.PENDING:
                transaction.on_commit(lambda: metrics.APPROVALS_RESOLVED.labels("denied").inc())
                approval.status = Approval.Status.DENIED
                approval.decided_by = (by or "server")[:64]
                approval.decided_at = timezone.now()
                approval.save(update_fields=["status", "decided_by", "decided_at"])
                entries.append(approval_resolved_entry(approval))
            entries.append(finish_call(call, ToolCall.Status.DENIED, error=why))
        elif call.effect == ToolCall.Effect.ONCE:
            entries.append(finish_call(call, ToolCall.Status.UNKNOWN, error=f"outcome unknown: {why}"))
        else:
            entries.append(finish_call(call, ToolCall.Status.ERROR, error=why))
    return entries


def append(conversation: Conversation, entries: list[Entry]) -> list[dict]:
    return [e.as_frame() for e in append_locked(conversation, entries)] if entries else []
