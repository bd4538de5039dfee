"""Every write to the models goes through here (sync; async callers wrap with realtime.db).

Invariant that makes seq gapless across processes: each write path starts by locking the
conversation row (SELECT ... FOR UPDATE on PostgreSQL; SQLite serialises writers with
IMMEDIATE transactions), then allocates seq from `Conversation.last_seq` and inserts the
events in the same transaction. A rollback rolls back the allocation too, so no seq is
ever skipped, and commits happen in seq order, so the committed log is always a prefix.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db import connection as db_connection
from django.db.models import Count, F, Max, Min, OuterRef, Q, Subquery
from django.db.models.functions import Greatest, Least
from django.utils import timezone

from sessions_app import revocation
from sessions_app.models import AgentRun, Connection, Conversation, Event, Message

User = get_user_model()


class ServiceError(Exception):
    """Base for expected refusals; `code` is the protocol's error code."""

    code = "error"


class ConversationNotFound(ServiceError):
    code = "not_found"


class ConversationForbidden(ServiceError):
    code = "forbidden"


class Unauthenticated(ServiceError):
    """The user is unknown or deactivated, or the token's sign-in was revoked."""

    code = "unauthenticated"


class LeaseLost(ServiceError):
    """The run's fencing token moved on: another node owns it now."""

    code = "lease_lost"


class RunCancelled(ServiceError):
    code = "cancelled"


# --- conversations ------------------------------------------------------------------------


# Revocation is its own module; re-exported because every write is reached through here.
revoke_user_sessions = revocation.revoke_user_sessions
revoke_sign_in = revocation.revoke_sign_in


def create_conversation(user_id: int, title: str = "") -> Conversation:
    return Conversation.objects.create(owner_id=user_id, title=title[:200])


def get_owned_conversation(user_id: Any, conversation_id: Any) -> Conversation:
    try:
        conversation = Conversation.objects.get(pk=conversation_id)
    except (Conversation.DoesNotExist, ValueError, TypeError, ValidationError):
        raise ConversationNotFound("no such conversation") from None
    if str(conversation.owner_id) != str(user_id):
        raise ConversationForbidden("not your conversation")
    return conversation


@dataclass(frozen=True)
class OpenedSession:
    """What a socket needs after `connect`: the conversation and where the log stands."""

    conversation_id: str
    created: bool
    last_seq: int
    # Lowest seq still kept; events below it were pruned.
    first_kept_seq: int
    # Every event after the client's last_seq is still in the log (no hole to replay over).
    intact: bool
    connection_id: str
    replaced_channels: list[str]


def open_session(
    *,
    user_id: Any,
    conversation_id: str | None,
    client_id: str,
    channel_name: str,
    node: str,
    remote_addr: str = "",
    resumed_from_seq: int | None = None,
    token_sid: str | None = None,
    token_generation: int = 0,
) -> OpenedSession:
    """Authorises the user (active, token not revoked), opens or creates the conversation and
    records the connection.

    Older open connections of the same (conversation, client_id) are closed here with 4409;
    their channel names are returned so the caller can tell those sockets to go.
    """
    try:
        revocation.check_standing(revocation.Standing(str(user_id), token_sid, token_generation))
    except revocation.TokenRevoked as exc:
        raise Unauthenticated(str(exc)) from None
    with transaction.atomic():
        if conversation_id is None:
            conversation = create_conversation(user_id)
            created = True
        else:
            conversation = get_owned_conversation(user_id, conversation_id)
            created = False
        now = timezone.now()
        stale = Connection.objects.select_for_update().filter(
            conversation=conversation, client_id=client_id, closed_at__isnull=True
        )
        replaced = list(stale.values_list("channel_name", flat=True))
        if replaced:
            stale.update(closed_at=now, close_code=4409, close_reason="replaced")
        connection = Connection.objects.create(
            user_id=user_id,
            conversation=conversation,
            client_id=client_id,
            channel_name=channel_name,
            node=node,
            remote_addr=remote_addr[:64],
            resumed_from_seq=resumed_from_seq,
            token_sid=token_sid,
            token_generation=token_generation,
        )
    first_kept, intact = _log_extent(conversation.pk, conversation.last_seq, resumed_from_seq)
    return OpenedSession(
        conversation_id=str(conversation.pk),
        created=created,
        last_seq=conversation.last_seq,
        first_kept_seq=first_kept,
        intact=intact,
        connection_id=str(connection.pk),
        replaced_channels=replaced,
    )


def first_kept_seq(conversation_id: Any, last_seq: int) -> int:
    """Lowest seq still in the log (last_seq + 1 when the log is empty)."""
    return _log_extent(conversation_id, last_seq, None)[0]


def _log_extent(conversation_id: Any, last_seq: int, after: int | None) -> tuple[int, bool]:
    """(lowest seq kept, whether every event after `after` is there), in one index scan. The
    log is gapless by construction; a hole means someone removed rows, and a replay across it
    would be dishonest, so the resume answers resumed:false instead."""
    after = 0 if after is None else after
    found = Event.objects.filter(conversation_id=conversation_id).aggregate(
        # Bounded by last_seq: events committed since it was read are not counted.
        lowest=Min("seq"), kept_after=Count("id", filter=Q(seq__gt=after, seq__lte=last_seq))
    )
    lowest = found["lowest"] if found["lowest"] is not None else last_seq + 1
    intact = after >= last_seq or found["kept_after"] == last_seq - max(after, lowest - 1)
    return lowest, intact


def events_after(conversation_id: Any, after_seq: int, upto_seq: int | None = None, limit: int = 500) -> list[dict]:
    qs = Event.objects.filter(conversation_id=conversation_id, seq__gt=after_seq)
    if upto_seq is not None:
        qs = qs.filter(seq__lte=upto_seq)
    return [{"type": t, "seq": s, **p} for t, s, p in qs.order_by("seq").values_list("type", "seq", "payload")[:limit]]


def conversation_last_seq(conversation_id: Any) -> int:
    return Conversation.objects.values_list("last_seq", flat=True).get(pk=conversation_id)


# --- the event log ------------------------------------------------------------------------


def _lock_conversation(conversation_id: Any) -> Conversation:
    try:
        return Conversation.objects.select_for_update().get(pk=conversation_id)
    except Conversation.DoesNotExist:
        # Deleted under an open socket or a run: a refusal the callers know, not a crash.
        raise ConversationNotFound("this conversation no longer exists") from None


def _append(conversation: Conversation, entries: list[tuple[str, dict, Any]]) -> list[Event]:
    """Appends events to a conversation locked by the caller's transaction."""
    first = conversation.last_seq + 1
    conversation.last_seq += len(entries)
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=conversation.last_seq, updated_at=timezone.now())
    events = [
        Event(conversation_id=conversation.pk, seq=first + i, type=kind, payload=payload, run_id=run_id)
        for i, (kind, payload, run_id) in enumerate(entries)
    ]
    Event.objects.bulk_create(events)
    return events


def append_event(conversation_id: Any, kind: str, payload: dict, run_id: Any = None) -> Event:
    """Appends one server-side event (for operators, tests and integrations)."""
    with transaction.atomic():
        return _append(_lock_conversation(conversation_id), [(kind, payload, run_id)])[0]


def message_payload(message: Message) -> dict:
    body = {"id": str(message.id), "role": message.role, "text": message.text}
    if message.client_msg_id is not None:
        body["client_msg_id"] = str(message.client_msg_id)
    return body


@dataclass(frozen=True)
class Committed:
    """What a write committed to a conversation's log: the frames to publish."""

    conversation_id: str
    events: list[dict]


@dataclass(frozen=True)
class PostedMessage:
    conversation_id: str
    seq: int
    duplicate: bool
    message_id: str
    run_id: str | None
    events: list[dict]


def post_user_message(conversation_id: Any, client_msg_id: Any, text: str) -> PostedMessage:
    """Idempotent on (conversation, client_msg_id): a resend returns the original seq.

    The message, its `message.created` event and its queued run are created in one
    transaction, so a message never exists without exactly one run.
    """
    client_msg_id = uuid.UUID(str(client_msg_id))
    conversation_id = str(conversation_id)
    existing = _existing_message(conversation_id, client_msg_id)
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            conversation = _lock_conversation(conversation_id)
            # Re-check under the lock: a concurrent sender may have won the race.
            existing = _existing_message(conversation_id, client_msg_id)
            if existing is not None:
                return existing
            seq = conversation.last_seq + 1
            message = Message.objects.create(
                conversation=conversation,
                role=Message.Role.USER,
                text=text,
                client_msg_id=client_msg_id,
                seq=seq,
            )
            (event,) = _append(conversation, [("message.created", {"message": message_payload(message)}, None)])
            run = AgentRun.objects.create(conversation=conversation, message=message)
    except IntegrityError:
        # SQLite without row locks can still lose the race at the unique constraint.
        existing = _existing_message(conversation_id, client_msg_id)
        if existing is None:
            raise
        return existing
    return PostedMessage(
        conversation_id=conversation_id,
        seq=event.seq,
        duplicate=False,
        message_id=str(message.id),
        run_id=str(run.id),
        events=[event.as_frame()],
    )


def _existing_message(conversation_id: Any, client_msg_id: uuid.UUID) -> PostedMessage | None:
    row = (
        Message.objects.filter(conversation_id=conversation_id, client_msg_id=client_msg_id)
        .values_list("id", "seq", "run__id")
        .first()
    )
    if row is None:
        return None
    message_id, seq, run_id = row
    return PostedMessage(
        conversation_id=str(conversation_id),
        seq=seq,
        duplicate=True,
        message_id=str(message_id),
        run_id=str(run_id) if run_id else None,
        events=[],
    )


def record_ack(connection_id: Any, conversation_id: Any, seq: int) -> None:
    """Cumulative ack; never moves backwards and never beyond the log's end.

    Only the connection row is written: updating the conversation here would wait for its
    row lock behind every streaming write (measured: a fifth of the node's database time at
    100 streams). The conversation's acked_seq follows when the connection closes and before
    retention runs (`reconcile_acks`)."""
    last_seq = Conversation.objects.filter(pk=conversation_id).values("last_seq")
    Connection.objects.filter(pk=connection_id).update(
        acked_seq=Greatest(F("acked_seq"), Least(seq, Subquery(last_seq))), last_seen_at=timezone.now()
    )


def reconcile_acks(conversation_ids: Any = None) -> int:
    """Moves conversations' acked_seq up to the highest ack of any of their connections."""
    best = (
        Connection.objects.filter(conversation=OuterRef("pk"))
        .values("conversation")
        .annotate(m=Max("acked_seq"))
        .values("m")
    )
    conversations = Conversation.objects.all()
    if conversation_ids is not None:
        conversations = conversations.filter(pk__in=conversation_ids)
    return conversations.filter(acked_seq__lt=Subquery(best)).update(acked_seq=Subquery(best))


def close_connection(connection_id: Any, code: int | None, reason: str, delivered_seq: int) -> bool:
    """Closes the connection row once; returns False when it was already closed."""
    updated = Connection.objects.filter(pk=connection_id, closed_at__isnull=True).update(
        closed_at=timezone.now(),
        close_code=code,
        close_reason=reason[:64],
        delivered_seq=Greatest(F("delivered_seq"), delivered_seq),
        last_seen_at=timezone.now(),
    )
    if not updated:
        Connection.objects.filter(pk=connection_id).update(delivered_seq=Greatest(F("delivered_seq"), delivered_seq))
    reconcile_acks(Connection.objects.filter(pk=connection_id).values("conversation"))
    return bool(updated)


def record_auth_refresh(
    connection_id: Any, *, refused: str | None = None, standing: revocation.Standing | None = None
) -> None:
    """Counts a renewal over the socket (and moves the row to the new token's standing, which
    the resync checks), or a refusal with its reason for the admin."""
    if refused is None:
        changes: dict[str, Any] = {"auth_refreshes": F("auth_refreshes") + 1}
        if standing is not None:
            changes.update(token_sid=standing.sid, token_generation=standing.generation)
    else:
        changes = {
            "auth_refusals": F("auth_refusals") + 1,
            "last_auth_refusal": refused[:200],
            "last_auth_refusal_at": timezone.now(),
        }
    Connection.objects.filter(pk=connection_id).update(**changes)


def touch_connections(entries: list[tuple[str, int, int]]) -> dict[str, tuple[str, int]]:
    """The periodic resync of many sockets in a few statements: for each
    (connection_id, delivered_seq, acked_seq) returns (state, conversation last_seq) with state
    "ok", "replaced" (a newer socket of the same client took over), "closed" (closed meanwhile
    by someone else, e.g. reaped as node_lost), "inactive" (user deactivated) or "revoked" (the
    token the socket holds was revoked: sessions_app/revocation.py); open rows get
    last_seen_at, delivered_seq and acked_seq (clamped to the log) moved forward."""
    if not entries:
        return {}
    now = timezone.now()
    rows = {
        str(r[0]): r
        for r in Connection.objects.filter(pk__in=[e[0] for e in entries]).values_list(
            "id", "closed_at", "user__is_active", "conversation__last_seq", "close_reason",
            "user_id", "token_sid", "token_generation",
        )
    }
    standings = {
        cid: revocation.Standing(str(r[5]), str(r[6]) if r[6] else None, r[7])
        for cid, r in rows.items()
        if r[1] is None and r[2]
    }
    revoked = revocation.revoked_among(list(set(standings.values())))
    result: dict[str, tuple[str, int]] = {}
    updates = []
    stamp = db_connection.ops.adapt_datetimefield_value(now)
    for connection_id, delivered, acked in entries:
        row = rows.get(str(connection_id))
        if row is None or row[1] is not None:
            result[connection_id] = ("replaced" if row is not None and row[4] == "replaced" else "closed", 0)
            continue
        last_seq = row[3]
        if not row[2]:
            result[connection_id] = ("inactive", last_seq)
        elif standings[str(connection_id)] in revoked:
            result[connection_id] = ("revoked", last_seq)
        else:
            result[connection_id] = ("ok", last_seq)
            updates.append((stamp, delivered, min(acked, last_seq), connection_id))
    if updates:
        greatest = "MAX" if db_connection.vendor == "sqlite" else "GREATEST"
        # A row closed since it was read keeps what its close wrote.
        _update_by_pk(
            Connection,
            f"last_seen_at = %s, delivered_seq = {greatest}(delivered_seq, %s), "
            f"acked_seq = {greatest}(acked_seq, %s)",
            updates,
            where=" AND closed_at IS NULL",
        )
    return result


def open_connection_nodes_not_in(live_nodes: set[str], older_than_seconds: float) -> list[str]:
    """Nodes holding open connection rows that are not in the live set (grace for new nodes)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return sorted(
        set(
            Connection.objects.filter(closed_at__isnull=True, opened_at__lt=cutoff)
            .exclude(node__in=live_nodes)
            .values_list("node", flat=True)
            .distinct()
        )
    )


@dataclass(frozen=True)
class NodeRelease:
    connections_closed: int
    runs_released: int
    # (user id, client_id, conversation id) of the closed rows whose socket identity holds no
    # open row elsewhere: the connection slots the dead node can no longer release. A client
    # that already came back elsewhere owns its slot again, so its slot is not listed.
    orphan_slots: list[tuple[str, str, str]]


def release_node(node: str) -> NodeRelease:
    """Everything a dead node held: its open connection rows are closed (1006, node_lost) and
    its running runs' leases expire now so a live node continues them at its next sweep."""
    with transaction.atomic():
        rows = list(
            Connection.objects.select_for_update()
            .filter(node=node, closed_at__isnull=True)
            .values_list("pk", "user_id", "client_id", "conversation_id")
        )
        closed = Connection.objects.filter(pk__in=[row[0] for row in rows]).update(
            closed_at=timezone.now(), close_code=1006, close_reason="node_lost"
        )
        identities = {(user_id, client_id, conversation_id) for _, user_id, client_id, conversation_id in rows}
        still_open = set(
            Connection.objects.filter(
                closed_at__isnull=True, conversation_id__in={c for _, _, c in identities},
                client_id__in={c for _, c, _ in identities},
            ).values_list("user_id", "client_id", "conversation_id")
        )
    released = AgentRun.objects.filter(node=node, status=AgentRun.Status.RUNNING).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    orphans = sorted((str(u), client, str(conv)) for u, client, conv in identities - still_open)
    return NodeRelease(connections_closed=closed, runs_released=released, orphan_slots=orphans)


# --- retention ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneResult:
    acked_deleted: int
    unacked_deleted: int


def prune_events(
    now: datetime | None = None, acked_days: float | None = None, unacked_days: float | None = None
) -> PruneResult:
    """Deletes acknowledged events older than the acked window, and any event older than the
    (longer) unacked window. The seq counter lives on the conversation, so pruning never
    lets a seq be reused."""
    now = now or timezone.now()
    acked_days = settings.REALTIME_RETENTION_ACKED_DAYS if acked_days is None else acked_days
    unacked_days = settings.REALTIME_RETENTION_UNACKED_DAYS if unacked_days is None else unacked_days
    acked_cutoff = now - timedelta(days=acked_days)
    unacked_cutoff = now - timedelta(days=unacked_days)
    reconcile_acks()
    acked_deleted, _ = Event.objects.filter(created_at__lt=acked_cutoff, seq__lte=F("conversation__acked_seq")).delete()
    unacked_deleted, _ = Event.objects.filter(created_at__lt=unacked_cutoff).delete()
    return PruneResult(acked_deleted=acked_deleted, unacked_deleted=unacked_deleted)


# --- agent runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedRun:
    run_id: str
    conversation_id: str
    fencing_token: int
    takeover: bool
    events: list[dict]


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
    conversation strictly sequential across all nodes.
    """
    lease_seconds = settings.REALTIME_RUN_LEASE_SECONDS if lease_seconds is None else lease_seconds
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        run = (
            AgentRun.objects.select_for_update()
            .filter(conversation=conversation, status__in=AgentRun.ACTIVE)
            .order_by("message__seq")
            .first()
        )
        now = timezone.now()
        if run is None:
            return None
        if run.status == AgentRun.Status.RUNNING and run.lease_expires_at and run.lease_expires_at > now:
            return None
        takeover = run.status == AgentRun.Status.RUNNING
        run.status = AgentRun.Status.RUNNING
        run.node = node
        run.fencing_token += 1
        run.claims += 1
        run.lease_expires_at = now + timedelta(seconds=lease_seconds)
        run.started_at = run.started_at or now
        run.save(update_fields=["status", "node", "fencing_token", "claims", "lease_expires_at", "started_at"])
        events: list[Event] = []
        if run.claims == 1:
            events = _append(
                conversation,
                [("agent.started", {"run_id": str(run.id), "in_reply_to": str(run.message_id)}, run.id)],
            )
    return ClaimedRun(
        run_id=str(run.id),
        conversation_id=str(conversation_id),
        fencing_token=run.fencing_token,
        takeover=takeover,
        events=[e.as_frame() for e in events],
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
    run = AgentRun.objects.select_related("conversation", "message").get(pk=run_id)
    history = [
        {"role": role, "text": text}
        for role, text in Message.objects.filter(conversation_id=run.conversation_id, seq__lte=run.message.seq)
        .order_by("seq")
        .values_list("role", "text")
    ]
    return RunContext(
        run_id=str(run.id),
        conversation_id=str(run.conversation_id),
        history=history,
        memory=dict(run.conversation.agent_memory or {}),
        partial_text=run.text,
        next_index=run.next_index,
        cancel_requested=run.cancel_requested,
    )


def _owned_run(conversation: Conversation, run_id: Any, fencing_token: int) -> AgentRun:
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


def append_run_deltas(
    writes: list[DeltaWrite], lease_seconds: float | None = None
) -> dict[str, list[dict] | ServiceError]:
    """Group commit: appends one agent.delta per write, for many runs, in one transaction
    (a handful of statements instead of six per delta). Each write gets its frames, or the
    LeaseLost / RunCancelled that refused it; one refused write does not fail the others.

    The hot path of streaming, so the updates are plain SQL: the run's text grows with `||`
    instead of being read and rewritten, and no ORM expression has to be compiled per row."""
    lease_seconds = settings.REALTIME_RUN_LEASE_SECONDS if lease_seconds is None else lease_seconds
    now = timezone.now()
    outcomes: dict[str, list[dict] | ServiceError] = {}
    with transaction.atomic():
        # Conversations first and in key order, as every other write path locks a conversation
        # before its runs: concurrent batches of several nodes cannot deadlock.
        last_seq = dict(
            Conversation.objects.select_for_update()
            .filter(pk__in={w.conversation_id for w in writes})
            .order_by("pk")
            .values_list("id", "last_seq")
        )
        last_seq = {str(k): v for k, v in last_seq.items()}
        runs = {
            str(r[0]): r
            for r in AgentRun.objects.select_for_update()
            .filter(pk__in=[w.run_id for w in writes])
            .order_by("pk")
            .values_list("id", "conversation_id", "fencing_token", "status", "cancel_requested", "next_index")
        }
        events: list[Event] = []
        run_rows: list[tuple[str, Any]] = []
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
                created_at=now,
            )
            events.append(event)
            run_rows.append((write.text, run[0]))
            outcomes[write.run_id] = [event.as_frame()]
        if events:
            Event.objects.bulk_create(events)
            _grow_runs(run_rows, now + timedelta(seconds=lease_seconds))
            touched = {e.conversation_id for e in events}
            _set_last_seqs([(last_seq[c], c) for c in sorted(touched)], now)
    return outcomes


def _update_by_pk(model: Any, assignments: str, rows: list[tuple], where: str = "") -> None:
    """One UPDATE per row (`WHERE id = <last item of the row>`), sent with executemany: the
    hot paths' plain-SQL writes, without compiling an ORM expression per row."""
    table = db_connection.ops.quote_name(model._meta.db_table)
    pk = model._meta.pk
    with db_connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET {assignments} WHERE id = %s{where}",
            [(*row[:-1], pk.get_db_prep_value(row[-1], db_connection)) for row in rows],
        )


def _grow_runs(rows: list[tuple[str, Any]], lease_until: datetime) -> None:
    lease = db_connection.ops.adapt_datetimefield_value(lease_until)
    _update_by_pk(AgentRun, "text = text || %s, next_index = next_index + 1, lease_expires_at = %s",
                  [(text, lease, run_id) for text, run_id in rows])


def _set_last_seqs(rows: list[tuple[int, Any]], now: datetime) -> None:
    stamp = db_connection.ops.adapt_datetimefield_value(now)
    _update_by_pk(Conversation, "last_seq = %s, updated_at = %s", [(seq, stamp, cid) for seq, cid in rows])


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
    their concatenation by construction, whichever nodes produced them."""
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        run = _owned_run(conversation, run_id, fencing_token)
        message = Message.objects.create(
            conversation=conversation, role=Message.Role.ASSISTANT, text=run.text, seq=conversation.last_seq + 1
        )
        events = _append(
            conversation,
            [("agent.completed", {"run_id": str(run.id), "message": message_payload(message)}, run.id)],
        )
        if memory is not None:
            conversation.agent_memory = memory
            conversation.save(update_fields=["agent_memory"])
        _finish(run, AgentRun.Status.COMPLETED, "")
    return Committed(str(conversation_id), [e.as_frame() for e in events])


def fail_run(conversation_id: Any, run_id: Any, fencing_token: int, error: str, cancelled: bool = False) -> Committed:
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        run = _owned_run(conversation, run_id, fencing_token)
        events = _append(conversation, [("agent.failed", _failed_payload(run, error, cancelled), run.id)])
        _finish(run, AgentRun.Status.CANCELLED if cancelled else AgentRun.Status.FAILED, error)
    return Committed(str(conversation_id), [e.as_frame() for e in events])


def _failed_payload(run: AgentRun, error: str, cancelled: bool) -> dict:
    payload: dict[str, Any] = {"run_id": str(run.id), "error": error[:500]}
    if cancelled:
        payload["cancelled"] = True
    return payload


def _finish(run: AgentRun, status: str, error: str) -> None:
    run.status = status
    run.error = error[:2000]
    run.finished_at = timezone.now()
    run.lease_expires_at = None
    run.save(update_fields=["status", "error", "finished_at", "lease_expires_at"])


@dataclass(frozen=True)
class CancelRequested:
    # "cancelled" (it was queued), "cancelling" (its owner stops it) or "finished" (too late).
    outcome: str
    conversation_id: str
    events: list[dict]


def request_cancel(conversation_id: Any, run_id: Any) -> CancelRequested:
    """A queued run is cancelled at once; a running one is flagged and its owner stops it
    at its next append or lease renewal."""
    conversation_id = str(conversation_id)
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        run = AgentRun.objects.select_for_update().filter(pk=run_id, conversation=conversation).first()
        if run is None:
            raise ConversationNotFound("no such run in this conversation")
        if run.status == AgentRun.Status.QUEUED:
            events = _append(conversation, [("agent.failed", _failed_payload(run, "cancelled", True), run.id)])
            _finish(run, AgentRun.Status.CANCELLED, "cancelled")
            return CancelRequested("cancelled", conversation_id, [e.as_frame() for e in events])
        if run.status == AgentRun.Status.RUNNING:
            run.cancel_requested = True
            run.save(update_fields=["cancel_requested"])
            return CancelRequested("cancelling", conversation_id, [])
        return CancelRequested("finished", conversation_id, [])
