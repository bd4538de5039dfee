"""The event log: appending (the only place seq is allocated), reading, and user messages.

Invariant that makes seq gapless across processes: each write path starts by locking the
conversation row (`lock_conversation`; SQLite serialises writers with IMMEDIATE transactions),
then allocates seq from `Conversation.last_seq` and inserts the events in the same transaction.
A rollback rolls back the allocation too, so no seq is ever skipped, and commits happen in seq
order, so the committed log is always a prefix. Rule: events are appended only by
`append_locked` (or the delta group commit in services/runs.py, which follows the same steps)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DataError, IntegrityError, transaction
from django.db import connection as db_connection
from django.utils import timezone

from realtime.core import metrics
from realtime.core.wire import WireFrame, encode_frame
from sessions_app.models import AgentRun, Conversation, Event, Message
from sessions_app.services.conversations import lock_conversation, title_from
from sessions_app.services.errors import ConversationNotFound
from sessions_app.services.sql import bound_cursor, outcome_of


def first_kept_seq(conversation_id: Any, last_seq: int) -> int:
    """Lowest seq still in the log (last_seq + 1 when the log is empty)."""
    return log_extent(conversation_id, last_seq, None)[0]


def log_extent(conversation_id: Any, last_seq: int, after: int | None) -> tuple[int, bool]:
    """(lowest seq kept, whether every event after `after` is there). The log is gapless by
    construction; a hole means someone removed rows, and a replay across it would be dishonest,
    so the resume answers resumed:false instead. Both reads walk the (conversation, seq) index
    over the missed events only: we found a count over the whole log made a resume cost grow
    with the conversation's length."""
    after = 0 if after is None else after
    events = Event.objects.filter(conversation_id=conversation_id)
    lowest = events.order_by("seq").values_list("seq", flat=True).first()
    lowest = lowest if lowest is not None else last_seq + 1
    # Bounded by last_seq: events committed since it was read are not counted.
    kept_after = events.filter(seq__gt=after, seq__lte=last_seq).count() if after < last_seq else 0
    intact = after >= last_seq or kept_after == last_seq - max(after, lowest - 1)
    return lowest, intact


def events_after(conversation_id: Any, after_seq: int, upto_seq: int | None = None, limit: int = 500) -> list[dict]:
    qs = Event.objects.filter(conversation_id=conversation_id, seq__gt=after_seq)
    if upto_seq is not None:
        qs = qs.filter(seq__lte=upto_seq)
    return [{"type": t, "seq": s, **p} for t, s, p in qs.order_by("seq").values_list("type", "seq", "payload")[:limit]]


def frames_after(
    conversation_id: Any, after_seq: int, upto_seq: int | None = None, limit: int = 500
) -> list[WireFrame]:
    """`events_after` as wire frames. On PostgreSQL the JSON text is built by the database
    (jsonb), so a replay neither decodes nor encodes an event in Python: we found those two
    steps were most of a 1,000-event replay's time in the node."""
    if db_connection.vendor != "postgresql":
        return [encode_frame(e) for e in events_after(conversation_id, after_seq, upto_seq, limit)]
    table = db_connection.ops.quote_name(Event._meta.db_table)
    upto = "" if upto_seq is None else " AND seq <= %s"
    params = [conversation_id, after_seq] + ([] if upto_seq is None else [upto_seq]) + [limit]
    with db_connection.cursor() as cursor:
        cursor.execute(
            f"SELECT seq, (jsonb_build_object('type', type, 'seq', seq) || payload)::text FROM {table}"
            f" WHERE conversation_id = %s AND seq > %s{upto} ORDER BY seq LIMIT %s",
            params,
        )
        return cursor.fetchall()


def conversation_last_seq(conversation_id: Any) -> int:
    return Conversation.objects.values_list("last_seq", flat=True).get(pk=conversation_id)


def log_stamp(previous: datetime | None) -> datetime:
    """`created_at` for events appended under the conversation lock: now, but never before
    the conversation's previous append (its `updated_at`), so `created_at` grows with seq even
    when the nodes' clocks disagree or a clock steps back. Retention does not rely on it (it
    prunes by seq), but an operator reading the log, or a time cutoff, may."""
    now = timezone.now()
    return previous if previous is not None and previous > now else now


def append_locked(conversation: Conversation, entries: list[tuple[str, dict, Any]]) -> list[Event]:
    """Appends events to a conversation locked by the caller's transaction."""
    first = conversation.last_seq + 1
    conversation.last_seq += len(entries)
    stamp = conversation.updated_at = log_stamp(conversation.updated_at)
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=conversation.last_seq, updated_at=stamp)
    events = [
        Event(conversation_id=conversation.pk, seq=first + i, type=kind, payload=payload, run_id=run_id,
              created_at=stamp)
        for i, (kind, payload, run_id) in enumerate(entries)
    ]
    Event.objects.bulk_create(events)
    metrics.events_appended(entries)
    return events


def appended_frame(kind: str, seq: int, payload: dict, run_id: Any = None) -> dict:
    """The frame of one event a one-round-trip write appended in the database (migrations 0007,
    0010), counted as `append_locked` counts its own: the same frame `Event.as_frame` gives."""
    metrics.events_appended([(kind, payload, run_id)])
    return {"type": kind, "seq": seq, **payload}


def append_event(conversation_id: Any, kind: str, payload: dict, run_id: Any = None) -> Event:
    """Appends one server-side event (for operators, tests and integrations)."""
    with transaction.atomic():
        return append_locked(lock_conversation(conversation_id), [(kind, payload, run_id)])[0]


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
    transaction, so a message never exists without exactly one run. On PostgreSQL one round
    trip (`tether_post_message`, migration 0010); the ORM implementation below is the
    reference and runs on SQLite.
    """
    client_msg_id = uuid.UUID(str(client_msg_id))
    conversation_id = str(conversation_id)
    post = post_user_message_in_one_trip if db_connection.vendor == "postgresql" else post_user_message_orm
    return post(conversation_id, client_msg_id, text)


@dataclass(frozen=True)
class NewMessage:
    """One message of `post_user_messages`."""
    conversation_id: str
    client_msg_id: str
    text: str


def post_user_messages(messages: list[NewMessage]) -> list[PostedMessage | Exception]:
    """`post_user_message` for each message, one outcome each, in order (a conversation gone is
    that message's `ConversationNotFound`): what a node does with the messages that arrive
    while it stores others (`realtime.infra.group_call.GroupCall`). On PostgreSQL one statement
    for all of them: 500 messages arriving together were 500 database calls before (issue 22).

    Every message keeps the rules of `post_user_message`, each its own: stored at most once
    per client_msg_id, in its conversation's order of arrival. They commit together; a message
    the database refuses (a NUL character in its text) fails only itself: the batch is then
    stored again one message at a time."""
    if not messages:
        return []
    if db_connection.vendor != "postgresql":
        return [outcome_of(post_user_message, m.conversation_id, m.client_msg_id, m.text) for m in messages]
    try:
        return post_user_messages_in_one_trip(messages)
    except (DataError, IntegrityError):
        return [outcome_of(post_user_message, m.conversation_id, m.client_msg_id, m.text) for m in messages]


# Every message through `tether_post_message`, in one transaction. Sorted by conversation (a
# stable sort: one conversation's messages keep their order of arrival), so the conversations'
# rows are locked in key order, as every multi-row writer locks them: no deadlock.
_POST_MESSAGES_SQL = """
SELECT p.ord, t.* FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::uuid[], %s::uuid[], %s::text[])
    WITH ORDINALITY AS p(conv, client, body, message, run, title, ord)
CROSS JOIN LATERAL tether_post_message(p.conv, p.client, p.body, p.message, p.run, p.title) AS t ORDER BY p.ord
"""


def post_user_messages_in_one_trip(messages: list[NewMessage]) -> list[PostedMessage | Exception]:
    outcomes: list[PostedMessage | Exception] = [RuntimeError("no outcome")] * len(messages)
    rows = []  # (place in `messages`, conversation, client_msg_id, text, new message id, new run id)
    for place, m in enumerate(messages):
        try:
            client_msg_id = uuid.UUID(str(m.client_msg_id))
        except ValueError as exc:  # as post_user_message raises it, for that message alone
            outcomes[place] = exc
            continue
        rows.append((place, str(m.conversation_id), client_msg_id, m.text, uuid.uuid4(), uuid.uuid4()))
    rows.sort(key=lambda r: r[1])
    if rows:
        with bound_cursor() as cursor:
            cursor.execute(_POST_MESSAGES_SQL, [[r[column] for r in rows] for column in range(1, 6)]
                           + [[title_from(r[3]) for r in rows]])
            returned = cursor.fetchall()
        for ordinal, *row in returned:
            place, conversation_id, client_msg_id, text, message_id, _ = rows[ordinal - 1]
            try:
                outcomes[place] = _posted_from_row(conversation_id, client_msg_id, text, message_id, row)
            except ConversationNotFound as exc:
                outcomes[place] = exc
    return outcomes


def post_user_message_in_one_trip(conversation_id: str, client_msg_id: uuid.UUID, text: str) -> PostedMessage:
    message_id, run_id = uuid.uuid4(), uuid.uuid4()
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT * FROM tether_post_message(%s, %s, %s, %s, %s, %s)",
                       [conversation_id, client_msg_id, text, message_id, run_id, title_from(text)])
        row = cursor.fetchone()
    return _posted_from_row(conversation_id, client_msg_id, text, message_id, row)


def _posted_from_row(conversation_id: str, client_msg_id: uuid.UUID, text: str, message_id: uuid.UUID,
                     row: Any) -> PostedMessage:
    """What `tether_post_message` returned, as the ORM reference returns it."""
    state, seq, stored_message, stored_run = row
    if state == "missing":
        raise ConversationNotFound("this conversation no longer exists")
    duplicate = state == "duplicate"
    events: list[dict] = []
    if not duplicate:
        payload = {"message": {"id": str(message_id), "role": Message.Role.USER.value, "text": text,
                               "client_msg_id": str(client_msg_id)}}
        events = [appended_frame("message.created", seq, payload)]
    return PostedMessage(
        conversation_id=conversation_id,
        seq=seq,
        duplicate=duplicate,
        message_id=str(stored_message),
        run_id=str(stored_run) if stored_run else None,
        events=events,
    )


def post_user_message_orm(conversation_id: str, client_msg_id: uuid.UUID, text: str) -> PostedMessage:
    existing = _existing_message(conversation_id, client_msg_id)
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            conversation = lock_conversation(conversation_id)
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
            (event,) = append_locked(conversation, [("message.created", {"message": message_payload(message)}, None)])
            run = AgentRun.objects.create(conversation=conversation, message=message)
            if not conversation.title:
                _title_from_first_message(conversation, message)
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


def _title_from_first_message(conversation: Conversation, message: Message) -> None:
    """An untitled conversation is named after its first user message (a title given at
    creation is kept). Under the conversation's row lock, so two first messages cannot race."""
    earlier = Message.objects.filter(conversation=conversation, role=Message.Role.USER, seq__lt=message.seq)
    title = title_from(message.text)
    if title and not earlier.exists():
        Conversation.objects.filter(pk=conversation.pk).update(title=title)
        conversation.title = title


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
