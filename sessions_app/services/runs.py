"""Agent runs: claiming with leases and fencing tokens, the delta group commit, completion,
failure and cancellation (design: docs/architecture.md, "Runs")."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from realtime.core import metrics
from sessions_app.models import AgentRun, Conversation, Event, Message
from sessions_app.services import journal
from sessions_app.services.conversations import lock_conversation
from sessions_app.services.errors import ConversationNotFound, LeaseLost, RunCancelled, ServiceError
from sessions_app.services.event_log import Committed, append_locked, appended_frame, log_stamp, message_payload
from sessions_app.services.sql import bound_cursor, outcome_of, update_by_pk


@dataclass(frozen=True)
class ClaimedRun:
    run_id: str
    conversation_id: str
    fencing_token: int
    takeover: bool
    events: list[dict]
    # Seconds since the run's first claim (`started_at`) when this claim was made: the run
    # timeout counts across claims, so a run taken over again and again still ends.
    elapsed_seconds: float = 0.0
    # What its agent starts with, read right after the claim, when claimed by `claim_runs`.
    context: RunContext | None = None


def claimable_conversations(now: datetime | None = None, limit: int = 100) -> list[str]:
    """Conversations with a run nobody is executing: queued, or running on a lapsed lease."""
    now = now or timezone.now()
    ids = (
        AgentRun.objects.filter(
            Q(status=AgentRun.Status.QUEUED) | Q(status=AgentRun.Status.RUNNING, lease_expires_at__lt=now)
        )
        .values_list("conversation_id", flat=True)
        .distinct()[:limit]
    )
    return [str(i) for i in ids]


def claim_next_run(conversation_id: Any, node: str, lease_seconds: float | None = None) -> ClaimedRun | None:
    """Claims the conversation's earliest unfinished run if nobody holds a live lease on it.

    Only the earliest unfinished run is ever claimable, which is what keeps the runs of one
    conversation strictly sequential across all nodes: a run waiting for an approval holds back
    every later one.
    """
    lease_seconds = settings.REALTIME_RUN_LEASE_SECONDS if lease_seconds is None else lease_seconds
    claim = claim_next_run_in_one_trip if db_connection.vendor == "postgresql" else claim_next_run_orm
    return claim(str(conversation_id), node, lease_seconds)


def claim_next_run_in_one_trip(conversation_id: str, node: str, lease_seconds: float) -> ClaimedRun | None:
    """`claim_next_run` on PostgreSQL: one round trip (`tether_claim_run`, migration 0010)."""
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT * FROM tether_claim_run(%s, %s, %s)", [conversation_id, node, float(lease_seconds)])
        row = cursor.fetchone()
    return _claimed_from_row(conversation_id, row)


def _claimed_from_row(conversation_id: str, row: Any) -> ClaimedRun | None:
    """What `tether_claim_run` returned, as the ORM reference returns it."""
    state, run_id, token, takeover, elapsed, seq, message_id = row
    if state == "missing":
        raise ConversationNotFound("this conversation no longer exists")
    if state == "none":
        return None
    events: list[dict] = []
    if seq is not None:
        events = [appended_frame("agent.started", seq, {"run_id": str(run_id), "in_reply_to": str(message_id)},
                                 run_id)]
    return ClaimedRun(run_id=str(run_id), conversation_id=conversation_id, fencing_token=token, takeover=takeover,
                      events=events, elapsed_seconds=elapsed)


def claim_runs(conversation_ids: list[str], node: str,
               lease_seconds: float | None = None) -> list[ClaimedRun | None | Exception]:
    """`claim_next_run` for each conversation, each claim with its run's context
    (`load_run_context`, read after the claim committed): one outcome per conversation, in
    order; a conversation gone is its own `ConversationNotFound`, not the others'.

    What a node's supervisor does when many runs become claimable at once (a burst of
    messages). Every claim keeps the rules of `claim_next_run`; on PostgreSQL the claims are
    one statement and the contexts another, whatever their number (one call of
    `realtime.infra.group_call.GroupCall`): 500 answers starting together made 1,000 database
    calls before (issue 22). A conversation listed twice is claimed once: its second place
    gets None, as a second claim of a live lease would."""
    lease_seconds = settings.REALTIME_RUN_LEASE_SECONDS if lease_seconds is None else lease_seconds
    ids = [str(c) for c in conversation_ids]
    if not ids:
        return []
    if db_connection.vendor == "postgresql":
        claimed = claim_runs_in_two_trips(sorted(set(ids)), node, lease_seconds)
    else:
        claimed = {cid: _claim_with_context_orm(cid, node, lease_seconds) for cid in sorted(set(ids))}
    outcomes: list[ClaimedRun | None | Exception] = []
    seen: set[str] = set()
    for cid in ids:
        outcomes.append(None if cid in seen else claimed[cid])
        seen.add(cid)
    return outcomes


# One statement for every claim: `tether_claim_run` for each id in the order given (sorted by
# the caller: the rows are locked in key order, the order every multi-row writer uses, so two
# nodes' batches cannot deadlock), all in one transaction.
_CLAIM_RUNS_SQL = """
SELECT c.id, t.* FROM unnest(%s::uuid[]) WITH ORDINALITY AS c(id, ord)
CROSS JOIN LATERAL tether_claim_run(c.id, %s, %s) AS t ORDER BY c.ord
"""


def claim_runs_in_two_trips(conversation_ids: list[str], node: str,
                            lease_seconds: float) -> dict[str, ClaimedRun | None | Exception]:
    with bound_cursor() as cursor:
        cursor.execute(_CLAIM_RUNS_SQL, [conversation_ids, node, float(lease_seconds)])
        rows = cursor.fetchall()
    claimed: dict[str, ClaimedRun | None | Exception] = {}
    for conversation_id, *row in rows:
        conversation_id = str(conversation_id)
        try:
            claimed[conversation_id] = _claimed_from_row(conversation_id, row)
        except ConversationNotFound as exc:
            claimed[conversation_id] = exc
    runs = [c for c in claimed.values() if isinstance(c, ClaimedRun)]
    contexts = {c.run_id: c for c in load_run_contexts_raw([c.run_id for c in runs])}
    for claim in runs:
        context = contexts.get(claim.run_id)
        claimed[claim.conversation_id] = (replace(claim, context=context) if context is not None else
                                          AgentRun.DoesNotExist(f"no run {claim.run_id}"))
    return claimed


def _claim_with_context_orm(conversation_id: str, node: str, lease_seconds: float) -> ClaimedRun | None | Exception:
    try:
        claim = claim_next_run_orm(conversation_id, node, lease_seconds)
        return claim and replace(claim, context=load_run_context_orm(claim.run_id))
    except (ServiceError, AgentRun.DoesNotExist) as exc:
        return exc


def claim_next_run_orm(conversation_id: str, node: str, lease_seconds: float) -> ClaimedRun | None:
    """The reference implementation of `claim_next_run` (SQLite)."""
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        run = (
            AgentRun.objects.select_for_update()
            .filter(conversation=conversation, status__in=AgentRun.UNFINISHED)
            .order_by("message__seq")
            .first()
        )
        now = timezone.now()
        if run is None or run.status == AgentRun.Status.WAITING:
            return None
        if run.status == AgentRun.Status.RUNNING and run.lease_expires_at and run.lease_expires_at > now:
            return None
        # Claimed before: its node died or let go (drain, lapsed lease), or it waited for a person.
        takeover = run.claims > 0
        run.status = AgentRun.Status.RUNNING
        run.node = node
        run.fencing_token += 1
        run.claims += 1
        run.lease_expires_at = now + timedelta(seconds=lease_seconds)
        run.started_at = run.started_at or now
        run.save(update_fields=["status", "node", "fencing_token", "claims", "lease_expires_at", "started_at"])
        events: list[Event] = []
        if run.claims == 1:
            events = append_locked(
                conversation,
                [("agent.started", {"run_id": str(run.id), "in_reply_to": str(run.message_id)}, run.id)],
            )
    return ClaimedRun(
        run_id=str(run.id),
        conversation_id=str(conversation_id),
        fencing_token=run.fencing_token,
        takeover=takeover,
        events=[e.as_frame() for e in events],
        elapsed_seconds=max(0.0, (now - run.started_at).total_seconds() - run.waited_seconds),
    )


@dataclass(frozen=True)
class RunContext:
    run_id: str
    conversation_id: str
    history: list[dict]
    memory: dict
    partial_text: str
    next_index: int
    cancel_requested: bool


def load_run_context(run_id: Any) -> RunContext:
    """What an agent is started with. Raises AgentRun.DoesNotExist for an unknown run."""
    if db_connection.vendor == "postgresql":
        return load_run_context_raw(run_id)
    return load_run_context_orm(run_id)


# One plain statement (the history by a lateral subquery): through the ORM (a join with
# select_related, then the history) the same reads cost the node about 1 ms of CPU per run
# (issue 22); `claim_runs` reads every claimed run's context with it at once.
_RUN_CONTEXTS_SQL = """
SELECT r.id, r.conversation_id, c.agent_memory, tether_run_text(r.id), r.next_index, r.cancel_requested, h.roles,
       h.texts
FROM sessions_app_agentrun r
JOIN sessions_app_message m ON m.id = r.message_id
JOIN sessions_app_conversation c ON c.id = r.conversation_id
CROSS JOIN LATERAL (
    SELECT array_agg(x.role ORDER BY x.seq) AS roles, array_agg(x.text ORDER BY x.seq) AS texts
    FROM (SELECT role, text, seq FROM sessions_app_message
          WHERE conversation_id = r.conversation_id AND seq <= m.seq ORDER BY seq DESC LIMIT %s) x
) h
WHERE r.id = ANY(%s::uuid[])
"""


def load_run_context_raw(run_id: Any) -> RunContext:
    contexts = load_run_contexts_raw([str(run_id)])
    if not contexts:
        raise AgentRun.DoesNotExist(f"no run {run_id}")
    return contexts[0]


def load_run_contexts_raw(run_ids: list[str]) -> list[RunContext]:
    """The contexts of the runs that exist among `run_ids` (in no particular order)."""
    if not run_ids:
        return []
    with bound_cursor() as cursor:
        cursor.execute(_RUN_CONTEXTS_SQL, [max(1, settings.REALTIME_AGENT_HISTORY_MESSAGES), run_ids])
        rows = cursor.fetchall()
    contexts = []
    for run, conversation_id, memory, text, next_index, cancel_requested, roles, texts in rows:
        if isinstance(memory, str):  # Django has psycopg hand jsonb over as text, for JSONField to decode
            memory = json.loads(memory)
        contexts.append(RunContext(
            run_id=str(run),
            conversation_id=str(conversation_id),
            history=[{"role": role, "text": body} for role, body in zip(roles, texts, strict=True)],
            memory=dict(memory or {}),
            partial_text=text,
            next_index=next_index,
            cancel_requested=cancel_requested,
        ))
    return contexts


def load_run_context_orm(run_id: Any) -> RunContext:
    run = AgentRun.objects.select_related("conversation", "message").get(pk=run_id)
    # The last REALTIME_AGENT_HISTORY_MESSAGES messages up to the run's own, oldest first: a
    # long conversation must not send (and pay for) its whole history on every run, nor grow
    # a run's memory without bound (issue 24). The agent's memory (agent_memory) carries what
    # must outlive the window.
    recent = (
        Message.objects.filter(conversation_id=run.conversation_id, seq__lte=run.message.seq)
        .order_by("-seq")
        .values_list("role", "text")[: max(1, settings.REALTIME_AGENT_HISTORY_MESSAGES)]
    )
    history = [{"role": role, "text": text} for role, text in reversed(recent)]
    return RunContext(
        run_id=str(run.id),
        conversation_id=str(run.conversation_id),
        history=history,
        memory=dict(run.conversation.agent_memory or {}),
        partial_text=committed_text(run),
        next_index=run.next_index,
        cancel_requested=run.cancel_requested,
    )


def committed_text(run: AgentRun) -> str:
    """The run's committed text: `run.text`, then its agent.delta events from index
    `run.text_upto` on, in the log's order (the ORM reference of `tether_run_text`, migration
    0011). The group commit does not rewrite the text (models.AgentRun.text_upto says why)."""
    if run.text_upto >= run.next_index:
        return run.text
    deltas = Event.objects.filter(conversation_id=run.conversation_id, run_id=run.pk, type="agent.delta")
    return run.text + "".join(p["text"] for p in deltas.order_by("seq").values_list("payload", flat=True)
                              if p["index"] >= run.text_upto)


def fold_text(run: AgentRun) -> list[str]:
    """Folds the log's part of the run's text into `run.text` (the run stops streaming: it
    completes, fails or waits for a person); returns the fields to save. After it the run's
    text no longer needs its deltas, so the log's retention may take them."""
    run.text = committed_text(run)
    run.text_upto = run.next_index
    return ["text", "text_upto"]


def owned_run(conversation: Conversation, run_id: Any, fencing_token: int) -> AgentRun:
    """The run, locked (inside the caller's transaction), if the caller still holds it with
    `fencing_token`; raises LeaseLost otherwise. Every write under a lease starts here."""
    run = (
        AgentRun.objects.select_for_update()
        .filter(pk=run_id, conversation=conversation, fencing_token=fencing_token, status=AgentRun.Status.RUNNING)
        .first()
    )
    if run is None:
        raise LeaseLost(f"run {run_id} is no longer held with token {fencing_token}")
    return run


def append_run_delta(
    conversation_id: Any, run_id: Any, fencing_token: int, text: str, lease_seconds: float | None = None
) -> list[dict]:
    """Appends one agent.delta if the caller still holds the run; renews the lease. The
    group commit with a single write, so both paths share one set of rules."""
    write = DeltaWrite(str(conversation_id), str(run_id), fencing_token, text)
    outcome = append_run_deltas([write], lease_seconds)[write.run_id]
    if isinstance(outcome, ServiceError):
        raise outcome
    return outcome


@dataclass(frozen=True)
class DeltaWrite:
    conversation_id: str
    run_id: str
    fencing_token: int
    text: str


# Per run id: the frames its write committed, or the LeaseLost / RunCancelled that refused it.
DeltaOutcomes = dict[str, list[dict] | ServiceError]


def append_run_deltas(writes: list[DeltaWrite], lease_seconds: float | None = None) -> DeltaOutcomes:
    """Group commit: appends one agent.delta per write, for many runs, in one transaction
    (a handful of statements instead of six per delta). Each write gets its frames, or the
    LeaseLost / RunCancelled that refused it; one refused write does not fail the others.

    The hot path of streaming: on PostgreSQL one round trip (the `tether_append_deltas`
    function, migration 0007); the ORM implementation below is the reference and runs on SQLite."""
    lease_seconds = settings.REALTIME_RUN_LEASE_SECONDS if lease_seconds is None else lease_seconds
    append = append_run_deltas_in_one_trip if db_connection.vendor == "postgresql" else append_run_deltas_orm
    outcomes = append(writes, lease_seconds)
    metrics.DELTAS_APPENDED.inc(sum(isinstance(o, list) for o in outcomes.values()))
    return outcomes


def append_run_deltas_in_one_trip(writes: list[DeltaWrite], lease_seconds: float) -> DeltaOutcomes:
    # One statement, its own transaction (autocommit): no BEGIN and COMMIT round trips.
    with bound_cursor() as cursor:
        cursor.execute(
            "SELECT * FROM tether_append_deltas(%s::uuid[], %s::uuid[], %s::bigint[], %s::text[], %s)",
            [[w.conversation_id for w in writes], [w.run_id for w in writes], [w.fencing_token for w in writes],
             [w.text for w in writes], float(lease_seconds)],
        )
        rows = cursor.fetchall()
    outcomes: dict[str, list[dict] | ServiceError] = {}
    for write, (_, outcome, seq, index) in zip(writes, rows, strict=True):
        if outcome == "lost":
            outcomes[write.run_id] = LeaseLost(f"run {write.run_id} lost token {write.fencing_token}")
        elif outcome == "cancelled":
            outcomes[write.run_id] = RunCancelled("cancel requested")
        else:
            outcomes[write.run_id] = [
                {"type": "agent.delta", "seq": seq, "run_id": write.run_id, "index": index, "text": write.text}
            ]
    return outcomes


def append_run_deltas_orm(writes: list[DeltaWrite], lease_seconds: float) -> DeltaOutcomes:
    """The reference implementation of `append_run_deltas`, through the ORM and plain SQL. The
    run's text is not touched: it is read from the log (`committed_text`)."""
    outcomes: dict[str, list[dict] | ServiceError] = {}
    with transaction.atomic():
        # Conversations first and in key order, as every other write path locks a conversation
        # before its runs: concurrent batches of several nodes cannot deadlock.
        locked = (
            Conversation.objects.select_for_update(no_key=True)
            .filter(pk__in={w.conversation_id for w in writes})
            .order_by("pk")
            .values_list("id", "last_seq", "updated_at")
        )
        last_seq: dict[str, int] = {}
        stamps: dict[str, datetime] = {}
        # Stamped once the locks are held, not before waiting for them.
        for conversation_id, seq, updated_at in locked:
            last_seq[str(conversation_id)] = seq
            stamps[str(conversation_id)] = log_stamp(updated_at)
        now = timezone.now()
        runs = {
            str(r[0]): r
            for r in AgentRun.objects.select_for_update()
            .filter(pk__in=[w.run_id for w in writes])
            .order_by("pk")
            .values_list("id", "conversation_id", "fencing_token", "status", "cancel_requested", "next_index")
        }
        events: list[Event] = []
        run_rows: list[Any] = []
        for write in writes:
            run = runs.get(write.run_id)
            if (
                run is None
                or run[2] != write.fencing_token
                or run[3] != AgentRun.Status.RUNNING
                or str(run[1]) != write.conversation_id
            ):
                outcomes[write.run_id] = LeaseLost(f"run {write.run_id} lost token {write.fencing_token}")
                continue
            if run[4]:
                outcomes[write.run_id] = RunCancelled("cancel requested")
                continue
            last_seq[write.conversation_id] += 1
            event = Event(
                conversation_id=write.conversation_id,
                seq=last_seq[write.conversation_id],
                type="agent.delta",
                payload={"run_id": write.run_id, "index": run[5], "text": write.text},
                run_id=run[0],
                created_at=stamps[write.conversation_id],
            )
            events.append(event)
            run_rows.append(run[0])
            outcomes[write.run_id] = [event.as_frame()]
        if events:
            Event.objects.bulk_create(events)
            _grow_runs(run_rows, now + timedelta(seconds=lease_seconds))
            touched = {e.conversation_id for e in events}
            _set_last_seqs([(last_seq[c], stamps[c], c) for c in sorted(touched)])
    return outcomes


def _grow_runs(run_ids: list[Any], lease_until: datetime) -> None:
    lease = db_connection.ops.adapt_datetimefield_value(lease_until)
    update_by_pk(AgentRun, "next_index = next_index + 1, lease_expires_at = %s",
                 [(lease, run_id) for run_id in run_ids])


def _set_last_seqs(rows: list[tuple[int, datetime, Any]]) -> None:
    adapt = db_connection.ops.adapt_datetimefield_value
    update_by_pk(Conversation, "last_seq = %s, updated_at = %s", [(seq, adapt(at), cid) for seq, at, cid in rows])


def renew_run_lease(run_id: Any, fencing_token: int, lease_seconds: float | None = None) -> str:
    """Extends the lease. Returns "ok", "cancel" (held, but a cancel was asked) or "lost"."""
    lease_seconds = settings.REALTIME_RUN_LEASE_SECONDS if lease_seconds is None else lease_seconds
    held = AgentRun.objects.filter(pk=run_id, fencing_token=fencing_token, status=AgentRun.Status.RUNNING)
    if held.filter(cancel_requested=False).update(lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds)):
        return "ok"
    return "cancel" if held.exists() else "lost"


def release_run(run_id: Any, fencing_token: int) -> bool:
    """Gives a running run up (graceful shutdown): its lease lapses now, so another node
    continues it from the committed text at its next sweep instead of after the full lease.

    The release also fences the releasing owner out. Its delta batch or lease renewal may
    still be running in a database thread (cancelling the awaiting task does not stop the
    thread); committed after the release, such a write would push the lease back into the
    future and hold the run hostage for a whole lease. With the token moved on it is refused."""
    return bool(
        AgentRun.objects.filter(pk=run_id, fencing_token=fencing_token, status=AgentRun.Status.RUNNING).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1), fencing_token=F("fencing_token") + 1
        )
    )


def complete_run(conversation_id: Any, run_id: Any, fencing_token: int, memory: dict | None) -> Committed:
    """Creates the assistant message from the committed deltas; the text therefore equals
    their concatenation by construction, whichever nodes produced them. On PostgreSQL one round
    trip (`tether_complete_run`, migration 0010); the ORM implementation is the reference."""
    if db_connection.vendor == "postgresql":
        return complete_run_in_one_trip(conversation_id, run_id, fencing_token, memory)
    return complete_run_orm(conversation_id, run_id, fencing_token, memory)


@dataclass(frozen=True)
class Completion:
    """One run of `complete_runs`: `complete_run`'s arguments."""
    conversation_id: str
    run_id: str
    fencing_token: int
    memory: dict | None


def complete_runs(completions: list[Completion]) -> list[Committed | Exception]:
    """`complete_run` for each run, one outcome each, in order (a lost lease is that run's
    `LeaseLost`): the runs of a node that end while one such call is in flight, right after
    their last text's group commit (realtime/runs/delta_writer.py). On PostgreSQL one statement
    for all of them: 500 answers ending together were 500 database calls, queued behind their
    sockets' closes in the shared pool (issue 22)."""
    if not completions:
        return []
    if db_connection.vendor != "postgresql":
        return [outcome_of(complete_run, c.conversation_id, c.run_id, c.fencing_token, c.memory)
                for c in completions]
    order = sorted(range(len(completions)), key=lambda i: str(completions[i].conversation_id))
    items = [(completions[i], uuid.uuid4()) for i in order]
    with bound_cursor() as cursor:
        cursor.execute(_COMPLETE_RUNS_SQL, [
            [str(c.conversation_id) for c, _ in items], [str(c.run_id) for c, _ in items],
            [c.fencing_token for c, _ in items], [m for _, m in items],
            [None if c.memory is None else json.dumps(c.memory) for c, _ in items]])
        rows = cursor.fetchall()
    outcomes: list[Committed | Exception] = [RuntimeError("no outcome")] * len(completions)
    for ordinal, *row in rows:
        completion, message_id = items[ordinal - 1]
        outcomes[order[ordinal - 1]] = outcome_of(_completed_from_row, completion.conversation_id, completion.run_id,
                                                  completion.fencing_token, message_id, row)
    return outcomes


# Every completion through `tether_complete_run`, in one transaction, sorted by conversation: the
# rows are locked in key order, as every multi-row writer locks them (no deadlock).
_COMPLETE_RUNS_SQL = """
SELECT c.ord, t.* FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::uuid[], %s::text[]::jsonb[])
    WITH ORDINALITY AS c(conv, run, token, message, memory, ord)
CROSS JOIN LATERAL tether_complete_run(c.conv, c.run, c.token, c.message, c.memory) AS t ORDER BY c.ord
"""


def complete_run_in_one_trip(conversation_id: Any, run_id: Any, fencing_token: int, memory: dict | None) -> Committed:
    message_id = uuid.uuid4()
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT * FROM tether_complete_run(%s, %s, %s, %s, %s::jsonb)",
                       [str(conversation_id), str(run_id), fencing_token, message_id,
                        None if memory is None else json.dumps(memory)])
        row = cursor.fetchone()
    return _completed_from_row(conversation_id, run_id, fencing_token, message_id, row)


def _completed_from_row(conversation_id: Any, run_id: Any, fencing_token: int, message_id: uuid.UUID,
                        row: Any) -> Committed:
    """What `tether_complete_run` returned, as the ORM reference returns it."""
    state, seq, text = row
    if state == "missing":
        raise ConversationNotFound("this conversation no longer exists")
    if state == "lost":
        raise LeaseLost(f"run {run_id} is no longer held with token {fencing_token}")
    payload = {"run_id": str(run_id),
               "message": {"id": str(message_id), "role": Message.Role.ASSISTANT.value, "text": text}}
    return Committed(str(conversation_id), [appended_frame("agent.completed", seq, payload, run_id)])


def complete_run_orm(conversation_id: Any, run_id: Any, fencing_token: int, memory: dict | None) -> Committed:
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        run = owned_run(conversation, run_id, fencing_token)
        fold_text(run)  # saved by _finish
        message = Message.objects.create(
            conversation=conversation, role=Message.Role.ASSISTANT, text=run.text, seq=conversation.last_seq + 1
        )
        events = append_locked(
            conversation,
            [("agent.completed", {"run_id": str(run.id), "message": message_payload(message)}, run.id)],
        )
        if memory is not None:
            conversation.agent_memory = memory
            conversation.save(update_fields=["agent_memory"])
        _finish(run, AgentRun.Status.COMPLETED, "")
    return Committed(str(conversation_id), [e.as_frame() for e in events])


def fail_run(conversation_id: Any, run_id: Any, fencing_token: int, error: str, cancelled: bool = False,
             detail: str = "") -> Committed:
    """Ends the run failed (or cancelled). Its open tool calls get their one result first.
    `error` goes to the client (`agent.failed`, the calls' results); `detail`, when given, only
    to the run row (operators): an upstream's own words stay on the server."""
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        run = owned_run(conversation, run_id, fencing_token)
        entries = journal.settle_open_calls(run, "run cancelled" if cancelled else f"run ended: {error}")
        entries.append(("agent.failed", _failed_payload(run, error, cancelled), run.id))
        events = append_locked(conversation, entries)
        _finish(run, AgentRun.Status.CANCELLED if cancelled else AgentRun.Status.FAILED, detail or error)
    return Committed(str(conversation_id), [e.as_frame() for e in events])


def _failed_payload(run: AgentRun, error: str, cancelled: bool) -> dict:
    payload: dict[str, Any] = {"run_id": str(run.id), "error": error[:500]}
    if cancelled:
        payload["cancelled"] = True
    return payload


def _finish(run: AgentRun, status: str, error: str) -> None:
    fields = fold_text(run)
    run.status = status
    run.error = error[:2000]
    run.finished_at = timezone.now()
    run.lease_expires_at = None
    run.waiting_since = None
    run.save(update_fields=["status", "error", "finished_at", "lease_expires_at", "waiting_since", *fields])


@dataclass(frozen=True)
class CancelRequested:
    # "cancelled" (it was queued), "cancelling" (its owner stops it) or "finished" (too late).
    outcome: str
    conversation_id: str
    events: list[dict]


def request_cancel(conversation_id: Any, run_id: Any, by: str = "") -> CancelRequested:
    """A queued run is cancelled at once, and so is one waiting for an approval (the approval
    is resolved `denied` by `by`, the cancelling client); a running one is flagged and its
    owner stops it at its next append or lease renewal."""
    conversation_id = str(conversation_id)
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        run = AgentRun.objects.select_for_update().filter(pk=run_id, conversation=conversation).first()
        if run is None:
            raise ConversationNotFound("no such run in this conversation")
        if run.status in (AgentRun.Status.QUEUED, AgentRun.Status.WAITING):
            # A run queued again after an approval may have calls still open.
            entries = journal.settle_open_calls(run, "run cancelled", by)
            entries.append(("agent.failed", _failed_payload(run, "cancelled", True), run.id))
            events = append_locked(conversation, entries)
            _finish(run, AgentRun.Status.CANCELLED, "cancelled")
            return CancelRequested("cancelled", conversation_id, [e.as_frame() for e in events])
        if run.status == AgentRun.Status.RUNNING:
            run.cancel_requested = True
            run.save(update_fields=["cancel_requested"])
            return CancelRequested("cancelling", conversation_id, [])
        return CancelRequested("finished", conversation_id, [])
