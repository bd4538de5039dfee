"""The tool journal: every call of an agent's tools recorded before it starts, then its outcome,
and the approvals calls wait for (design: docs/architecture.md, "Tools").

Rules, each held by the transaction it is written in:
- Every write locks the conversation row first (as every writer of the log does), then checks
  that the caller still holds the run: its fencing token, status `running`, and, to *start* a
  call, a lease that has not lapsed. So a node that lost its lease (paused, partitioned) never
  starts a call: `LeaseLost`, nothing written. A run whose cancel was asked starts none either.
- The journal row and the events that announce it commit together: `agent.tool_call` when a
  call starts, `agent.tool_result` when it ends, `approval.requested` / `approval.resolved`.
- A `local` call's own write, its recorded result and both events commit in one transaction
  (`run_local_call`): it happens exactly once, or not at all.
- The first decision on an approval wins: it is taken under the conversation lock, and any
  later one finds it decided (`already_decided`, with the decision).
- `call_id` is derived from (run, step, retry), so it never changes across takeovers; it is
  also the call's idempotency key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction
from django.utils import timezone

from sessions_app.models import AgentRun, Approval, Conversation, DemoEffect, ModelCall, ToolCall
from sessions_app.services import journal
from sessions_app.services.conversations import lock_conversation
from sessions_app.services.errors import LeaseLost, RunCancelled, ServiceError
from sessions_app.services.event_log import Committed
from sessions_app.services.runs import committed_text, fold_text, owned_run

# The namespace of call ids (uuid5): any fixed UUID would do; this one is Tether's.
CALL_ID_NAMESPACE = uuid.UUID("4d0b7a60-3c55-4f0c-9a4b-2f7a1b9d8e21")


def call_id_for(run_id: Any, step: int, retry: int = 0) -> str:
    """The call's id: the same for the same (run, step, retry) on every node, at every claim."""
    return str(uuid.uuid5(CALL_ID_NAMESPACE, f"{run_id}/{step}/{retry}"))


# --- reading the journal --------------------------------------------------------------------


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    step: int
    retry: int
    tool: str
    effect: str
    arguments: dict
    status: str
    result: Any
    error: str
    text_offset: int
    attempts: int
    # The approval's status (pending, approved, denied, expired) and reason, if any.
    approval: str | None = None
    approval_reason: str | None = None


@dataclass(frozen=True)
class ModelCallRecord:
    index: int
    request_hash: str
    response: dict
    text_offset: int


@dataclass(frozen=True)
class Journal:
    """What a run has done so far: its committed text, its tool calls by step (each step's
    retries in order), its completed model requests in order."""

    text: str
    calls: dict[int, list[CallRecord]] = field(default_factory=dict)
    model_calls: list[ModelCallRecord] = field(default_factory=list)


def _record(call: ToolCall, approval: Approval | None) -> CallRecord:
    return CallRecord(
        call_id=str(call.id), step=call.step, retry=call.retry, tool=call.tool, effect=call.effect,
        arguments=call.arguments, status=call.status, result=call.result, error=call.error,
        text_offset=call.text_offset, attempts=call.attempts,
        approval=approval.status if approval else None, approval_reason=approval.reason if approval else None,
    )


def load_journal(run_id: Any) -> Journal:
    run = AgentRun.objects.only("conversation_id", "text", "text_upto", "next_index").get(pk=run_id)
    approvals = {a.call_id: a for a in Approval.objects.filter(run_id=run_id)}
    calls: dict[int, list[CallRecord]] = {}
    for call in ToolCall.objects.filter(run_id=run_id).order_by("step", "retry"):
        calls.setdefault(call.step, []).append(_record(call, approvals.get(call.id)))
    models = [
        ModelCallRecord(m.index, m.request_hash, m.response, m.text_offset)
        for m in ModelCall.objects.filter(run_id=run_id).order_by("index")
    ]
    return Journal(text=committed_text(run), calls=calls, model_calls=models)


# --- holding the run ------------------------------------------------------------------------


def _held(conversation: Conversation, run_id: Any, fencing_token: int, *, starting: bool,
          lease_seconds: float | None = None) -> AgentRun:
    """The run, locked, if the caller still holds it; to start a call the lease must not have
    lapsed either (it is pushed forward). Raises LeaseLost or RunCancelled."""
    run = owned_run(conversation, run_id, fencing_token)
    if starting:
        now = timezone.now()
        if run.lease_expires_at is None or run.lease_expires_at <= now:
            raise LeaseLost(f"the lease of run {run_id} lapsed; no call may start under it")
        if run.cancel_requested:
            raise RunCancelled("cancel requested")
        lease = settings.REALTIME_RUN_LEASE_SECONDS if lease_seconds is None else lease_seconds
        run.lease_expires_at = now + timedelta(seconds=lease)
        run.save(update_fields=["lease_expires_at"])
    return run


def _wait_for_approval(run: AgentRun, call: ToolCall, reason: str) -> Approval:
    """The call waits for a person; its run lets go of its lease (no node, no task holds it)
    and its fencing token moves on, so whatever its last owner still had in flight is refused."""
    approval = Approval.objects.create(
        call=call, run=run, conversation_id=run.conversation_id, reason=reason,
        expires_at=timezone.now() + timedelta(seconds=settings.REALTIME_APPROVAL_TIMEOUT),
    )
    run.status = AgentRun.Status.WAITING
    run.node = ""
    run.lease_expires_at = None
    run.fencing_token += 1
    run.waiting_since = timezone.now()
    # Folded: a wait may outlast the log's retention of the deltas (REALTIME_APPROVAL_TIMEOUT).
    fields = fold_text(run)
    run.save(update_fields=["status", "node", "lease_expires_at", "fencing_token", "waiting_since", *fields])
    return approval


# --- the calls --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallWritten(Committed):
    """A journal write: the events to publish, and the call as it is now."""

    call: CallRecord | None = None
    # The run now waits for an approval: its executor stops (it holds nothing any more).
    waiting: bool = False
    # The fencing token the call was started with (its `Tether-Fence`).
    fencing_token: int | None = None


def begin_call(
    conversation_id: Any, run_id: Any, fencing_token: int, *, step: int, tool: str, effect: str,
    arguments: dict, text_offset: int, needs_approval: bool = False, lease_seconds: float | None = None,
) -> CallWritten:
    """Records a new call (retry 0 of `step`). Without an approval it is `started` at once and
    announced (`agent.tool_call`): the caller makes the call next. With one it waits (`intent`,
    `approval.requested`) and the run with it."""
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        run = _held(conversation, run_id, fencing_token, starting=True, lease_seconds=lease_seconds)
        now = timezone.now()
        call = ToolCall.objects.create(
            id=call_id_for(run.pk, step, 0), run=run, conversation=conversation, step=step, retry=0,
            tool=tool, effect=effect, arguments=arguments, text_offset=text_offset,
            status=ToolCall.Status.INTENT if needs_approval else ToolCall.Status.STARTED,
            attempts=0 if needs_approval else 1, started_token=None if needs_approval else fencing_token,
            started_at=None if needs_approval else now,
        )
        if needs_approval:
            approval = _wait_for_approval(run, call, Approval.Reason.POLICY)
            frames = journal.append(conversation, [journal.approval_requested_entry(approval)])
            return CallWritten(str(conversation_id), frames, _record(call, approval), waiting=True)
        frames = journal.append(conversation, [journal.tool_call_entry(call)])
    return CallWritten(str(conversation_id), frames, _record(call, None), fencing_token=fencing_token)


def start_call(conversation_id: Any, run_id: Any, fencing_token: int, call_id: Any,
               lease_seconds: float | None = None) -> CallWritten:
    """Starts a recorded call again or for the first time: an approved `intent` (announced now,
    `agent.tool_call`), or a `started` read/idempotent call whose node died (the same call,
    the same key, under the new fencing token; announced already)."""
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        _held(conversation, run_id, fencing_token, starting=True, lease_seconds=lease_seconds)
        call = ToolCall.objects.select_for_update().get(pk=call_id, run_id=run_id)
        entries = []
        if call.status == ToolCall.Status.INTENT:
            approval = Approval.objects.filter(call=call).first()
            if approval is None or approval.status != Approval.Status.APPROVED:
                raise ServiceError(f"call {call_id} is not approved")
            entries.append(journal.tool_call_entry(call))
        elif call.status != ToolCall.Status.STARTED or call.effect in (ToolCall.Effect.ONCE, ToolCall.Effect.LOCAL):
            raise ServiceError(f"call {call_id} ({call.effect}, {call.status}) cannot be started again")
        call.status = ToolCall.Status.STARTED
        call.attempts += 1
        call.started_token = fencing_token
        call.started_at = timezone.now()
        call.save(update_fields=["status", "attempts", "started_token", "started_at"])
        frames = journal.append(conversation, entries)
    return CallWritten(str(conversation_id), frames, _record(call, None), fencing_token=fencing_token)


def finish_call(conversation_id: Any, run_id: Any, fencing_token: int, call_id: Any, status: str,
                result: Any = None, error: str = "") -> CallWritten:
    """The outcome of a started call (`agent.tool_result`), from the node that started it under
    this fencing token; anyone else's outcome is refused (LeaseLost): only the lease holder
    writes. The outcome of a zombie's late call is therefore lost: that is what `unknown` and
    the fence header (`Tether-Fence`) are for."""
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        _held(conversation, run_id, fencing_token, starting=False)
        call = ToolCall.objects.select_for_update().get(pk=call_id, run_id=run_id)
        if call.status != ToolCall.Status.STARTED or call.started_token != fencing_token:
            raise LeaseLost(f"call {call_id} was not started under token {fencing_token}")
        frames = journal.append(conversation, [journal.finish_call(call, status, result=result, error=error)])
    return CallWritten(str(conversation_id), frames, _record(call, None))


def give_up_unknown(conversation_id: Any, run_id: Any, fencing_token: int, call_id: Any, why: str) -> CallWritten:
    """A `once` call whose outcome was lost (its node died during it, or it timed out): its
    result is `unknown`, and it is never made again unless a person approves a new call of the
    same tool with the same arguments (retry + 1, reason `outcome_unknown`); the run waits."""
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        run = _held(conversation, run_id, fencing_token, starting=False)
        call = ToolCall.objects.select_for_update().get(pk=call_id, run_id=run_id)
        if call.status != ToolCall.Status.STARTED:
            raise ServiceError(f"call {call_id} is {call.status}, not started")
        entries = [journal.finish_call(call, ToolCall.Status.UNKNOWN, error=f"outcome unknown: {why}")]
        retry = ToolCall.objects.create(
            id=call_id_for(run.pk, call.step, call.retry + 1), run=run, conversation=conversation, step=call.step,
            retry=call.retry + 1, tool=call.tool, effect=call.effect, arguments=call.arguments,
            text_offset=call.text_offset, status=ToolCall.Status.INTENT,
        )
        approval = _wait_for_approval(run, retry, Approval.Reason.OUTCOME_UNKNOWN)
        entries.append(journal.approval_requested_entry(approval))
        frames = journal.append(conversation, entries)
    return CallWritten(str(conversation_id), frames, _record(retry, approval), waiting=True)


@dataclass(frozen=True)
class LocalContext:
    """What a `local` tool gets: the call's identity, and the run's transaction it writes in
    (it is inside it: whatever it writes through the ORM commits with the call's result)."""

    conversation_id: str
    run_id: str
    call_id: str
    fencing_token: int

    @property
    def effect_key(self) -> str:
        return self.call_id


def run_local_call(
    conversation_id: Any, run_id: Any, fencing_token: int, *, step: int, tool: str, arguments: dict,
    text_offset: int, fn: Callable[..., Any], timeout_seconds: float, lease_seconds: float | None = None,
    retry: int = 0,
) -> CallWritten:
    """A `local` call, exactly once: the tool's writes, its recorded result and its two events
    (`agent.tool_call`, `agent.tool_result`) in one transaction. A tool that raises is an
    `error` result and its writes are rolled back (a savepoint); a statement that runs longer
    than `timeout_seconds` is stopped by the database (PostgreSQL) and is an `error` too.
    Local tools hold the conversation's lock while they run: short writes to Tether's own
    database only. A call approved earlier (`intent`) is run as that recorded call."""
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        run = _held(conversation, run_id, fencing_token, starting=True, lease_seconds=lease_seconds)
        call_id = call_id_for(run.pk, step, retry)
        call = ToolCall.objects.select_for_update().filter(pk=call_id).first()
        now = timezone.now()
        if call is None:
            call = ToolCall.objects.create(
                id=call_id, run=run, conversation=conversation, step=step, retry=retry, tool=tool,
                effect=ToolCall.Effect.LOCAL, arguments=arguments, text_offset=text_offset,
                status=ToolCall.Status.STARTED, attempts=1, started_token=fencing_token, started_at=now,
            )
        elif call.status == ToolCall.Status.INTENT and Approval.objects.filter(
                call=call, status=Approval.Status.APPROVED).exists():
            call.status, call.attempts, call.started_token, call.started_at = (
                ToolCall.Status.STARTED, call.attempts + 1, fencing_token, now)
            call.save(update_fields=["status", "attempts", "started_token", "started_at"])
        else:
            raise ServiceError(f"local call {call_id} is {call.status}: it cannot run again")
        context = LocalContext(str(conversation_id), str(run.pk), call_id, fencing_token)
        try:
            with transaction.atomic():  # a savepoint: a failing tool takes back its own writes only
                _statement_timeout(timeout_seconds)
                result = fn(context, **arguments)
                _statement_timeout(None)
            outcome = journal.finish_call(call, ToolCall.Status.OK, result=result)
        except Exception as exc:  # noqa: BLE001 - the tool's failure is its result, not the run's
            outcome = journal.finish_call(call, ToolCall.Status.ERROR, error=f"{type(exc).__name__}: {exc}")
        frames = journal.append(conversation, [journal.tool_call_entry(call), outcome])
    return CallWritten(str(conversation_id), frames, _record(call, None), fencing_token=fencing_token)


def _statement_timeout(seconds: float | None) -> None:
    if db_connection.vendor != "postgresql":
        return  # SQLite has no statement timeout; the local run serialises writers anyway
    with db_connection.cursor() as cursor:
        if seconds is None:
            cursor.execute("SET LOCAL statement_timeout = DEFAULT")
        else:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(max(1, int(seconds * 1000)))])


# --- approvals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalAnswer(Committed):
    # "resolved", "not_found" (no such call waiting in this conversation) or "already_decided".
    outcome: str = "resolved"
    # The decision that stands: approved, denied or expired.
    decision: str | None = None


DECISIONS = {"approve": Approval.Status.APPROVED, "deny": Approval.Status.DENIED}


def resolve_approval(conversation_id: Any, call_id: Any, decision: str, by: str,
                     now: datetime | None = None) -> ApprovalAnswer:
    """A person's decision (`approve` or `deny`), from any socket of the conversation or the
    admin. The first decision wins; one that arrives after the approval expired finds it
    `expired`. The run, waiting, is queued again: the caller kicks the supervisors."""
    conversation_id = str(conversation_id)
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        approval = (
            Approval.objects.select_for_update().select_related("call")
            .filter(call_id=call_id, conversation=conversation).first()
        )
        if approval is None:
            return ApprovalAnswer(conversation_id, [], outcome="not_found")
        if approval.status == Approval.Status.PENDING and approval.expires_at <= (now or timezone.now()):
            frames = journal.append(conversation, journal.decide(approval, Approval.Status.EXPIRED, "timeout"))
            return ApprovalAnswer(conversation_id, frames, outcome="already_decided", decision=approval.status)
        if approval.status != Approval.Status.PENDING:
            return ApprovalAnswer(conversation_id, [], outcome="already_decided", decision=approval.status)
        frames = journal.append(conversation, journal.decide(approval, DECISIONS[decision], by))
    return ApprovalAnswer(conversation_id, frames, decision=approval.status)


def expire_approvals(now: datetime | None = None, limit: int = 100) -> list[Committed]:
    """Every pending approval past its time becomes `expired` (by `timeout`), its call `denied`,
    its run queued again; run by every supervisor's sweep (the conversation lock makes one win)."""
    now = now or timezone.now()
    due = list(
        Approval.objects.filter(status=Approval.Status.PENDING, expires_at__lte=now)
        .order_by("expires_at").values_list("conversation_id", "call_id")[:limit]
    )
    done = []
    for conversation_id, call_id in due:
        with transaction.atomic():
            conversation = lock_conversation(conversation_id)
            approval = Approval.objects.select_for_update().select_related("call").get(call_id=call_id)
            if approval.status != Approval.Status.PENDING:
                continue  # another node's sweep, or a person, was first
            frames = journal.append(conversation, journal.decide(approval, Approval.Status.EXPIRED, "timeout"))
        done.append(Committed(str(conversation_id), frames))
    return done


def approvals_waiting() -> int:
    return Approval.objects.filter(status=Approval.Status.PENDING).count()


# --- model calls ------------------------------------------------------------------------------


def record_model_call(conversation_id: Any, run_id: Any, fencing_token: int, *, index: int, request_hash: str,
                      response: dict, text_offset: int) -> None:
    """A model request whose response completed: a continued run replays it instead of sending
    it again (and being billed again). Only the run's holder records."""
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        _held(conversation, run_id, fencing_token, starting=False)
        ModelCall.objects.create(run_id=run_id, index=index, request_hash=request_hash, response=response,
                                 text_offset=text_offset, fencing_token=fencing_token)


def record_demo_effect(conversation_id: Any, run_id: Any, call_id: Any, n: int) -> None:
    """The demo's `local` effect (realtime/tools/demo.py): called inside `run_local_call`'s
    transaction, so the row commits with the call's result, or not at all."""
    DemoEffect.objects.create(conversation_id=conversation_id, run_id=run_id, call_id=call_id, n=n)
