"""Connection rows: opening a session (one open row per conversation and client_id), acks,
token renewals, the periodic resync of many sockets, and closing."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db import connection as db_connection
from django.db.models import F, Max, OuterRef, Subquery
from django.db.models.functions import Greatest, Least
from django.utils import timezone

from sessions_app import tokens
from sessions_app.models import Connection, Conversation
from sessions_app.services.conversations import create_conversation, get_owned_conversation
from sessions_app.services.errors import ConversationForbidden, ConversationNotFound, Unauthenticated
from sessions_app.services.event_log import WireFrame, frames_after, log_extent
from sessions_app.services.sql import bound_cursor, update_by_pk


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
    # The first events after the client's last_seq (at most `replay_limit`), as wire frames.
    frames: list[WireFrame] = field(default_factory=list)


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
    replay_limit: int = 0,
) -> OpenedSession:
    """Authorises the user (active, token not revoked), opens or creates the conversation and
    records the connection.

    Older open connections of the same (conversation, client_id) are closed here with 4409;
    their channel names are returned so the caller can tell those sockets to go.

    Exactly one row of a (conversation, client_id) is open at any time, and the database
    enforces it (`uniq_open_connection_per_client`): two connects racing each other both find
    nothing to replace, the second insert waits for the first to commit and is then refused,
    and that connect replaces the row that just won. The conversation row is not locked: the
    streaming group commit holds that lock, and a resume must not wait behind it.

    On PostgreSQL all of it is one round trip (the `tether_open_session` function, migration
    0006); this ORM implementation is the reference and runs on SQLite.
    """
    implementation = open_session_in_one_trip if db_connection.vendor == "postgresql" else open_session_orm
    return implementation(
        user_id, conversation_id, client_id, channel_name, node, remote_addr, resumed_from_seq, token_sid,
        token_generation, replay_limit,
    )


def open_session_orm(
    user_id: Any, conversation_id: str | None, client_id: str, channel_name: str, node: str, remote_addr: str,
    resumed_from_seq: int | None, token_sid: str | None, token_generation: int, replay_limit: int,
) -> OpenedSession:
    """The reference implementation of `open_session`, step by step through the ORM."""
    try:
        tokens.check_standing(tokens.Standing(str(user_id), token_sid, token_generation))
    except tokens.TokenRevoked as exc:
        raise Unauthenticated(str(exc)) from None
    with transaction.atomic():
        if conversation_id is None:
            conversation = create_conversation(user_id)
            created = True
        else:
            conversation = get_owned_conversation(user_id, conversation_id)
            created = False
        for attempt in range(_REPLACE_ATTEMPTS):
            try:
                # A savepoint: a refused insert undoes only this attempt.
                with transaction.atomic():
                    replaced, connection = _replace_open_connection(
                        Connection(
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
                    )
                break
            except IntegrityError:
                # Another connect of this client committed its row after our lookup: the next
                # attempt's lookup sees it (each statement reads what is committed) and closes it.
                if attempt == _REPLACE_ATTEMPTS - 1:
                    raise
    first_kept, intact = log_extent(conversation.pk, conversation.last_seq, resumed_from_seq)
    after = resumed_from_seq or 0
    return OpenedSession(
        conversation_id=str(conversation.pk),
        created=created,
        last_seq=conversation.last_seq,
        first_kept_seq=first_kept,
        intact=intact,
        connection_id=str(connection.pk),
        replaced_channels=replaced,
        frames=frames_after(conversation.pk, after, conversation.last_seq, replay_limit)
        if replay_limit and after < conversation.last_seq
        else [],
    )


# The refusals `tether_open_session` returns, as the ORM path raises them.
_REFUSALS = {"unauthenticated": Unauthenticated, "not_found": ConversationNotFound, "forbidden": ConversationForbidden}


def open_session_in_one_trip(
    user_id: Any, conversation_id: str | None, client_id: str, channel_name: str, node: str, remote_addr: str,
    resumed_from_seq: int | None, token_sid: str | None, token_generation: int, replay_limit: int,
) -> OpenedSession:
    """`open_session` on PostgreSQL: the `tether_open_session` function (migration 0006)."""
    try:
        conversation_uuid = uuid.UUID(str(conversation_id)) if conversation_id is not None else None
    except ValueError:
        raise ConversationNotFound("no such conversation") from None
    with db_connection.cursor() as cursor:
        cursor.execute(
            "SELECT tether_open_session(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)::text",
            [int(user_id), conversation_uuid, client_id, channel_name, node, remote_addr, resumed_from_seq,
             token_sid, token_generation, replay_limit],
        )
        found = json.loads(cursor.fetchone()[0])
    if "error" in found:
        raise _REFUSALS[found["error"]](found["detail"])
    last_seq = found["last_seq"]
    after = resumed_from_seq or 0
    lowest = found["lowest"] if found["lowest"] is not None else last_seq + 1
    return OpenedSession(
        conversation_id=found["conversation_id"],
        created=found["created"],
        last_seq=last_seq,
        first_kept_seq=lowest,
        intact=after >= last_seq or found["kept_after"] == last_seq - max(after, lowest - 1),
        connection_id=found["connection_id"],
        replaced_channels=found["replaced_channels"],
        frames=[(seq, text) for seq, text in found["frames"]],
    )


# Each refused attempt means another connect of the same client committed in between; a
# client reconnecting faster than a few round trips is itself flapping and may be refused.
_REPLACE_ATTEMPTS = 5


def _replace_open_connection(connection: Connection) -> tuple[list[str], Connection]:
    """Closes the open rows of the connection's (conversation, client_id) with 4409 and
    inserts it; raises IntegrityError when a concurrent connect inserted first."""
    stale = Connection.objects.select_for_update().filter(
        conversation_id=connection.conversation_id, client_id=connection.client_id, closed_at__isnull=True
    )
    replaced = list(stale.values_list("channel_name", flat=True))
    if replaced:
        stale.update(closed_at=timezone.now(), close_code=4409, close_reason="replaced")
    connection.save(force_insert=True)
    return replaced, connection


def record_ack(connection_id: Any, conversation_id: Any, seq: int) -> None:
    """Cumulative ack; never moves backwards and never beyond the log's end.

    Only the connection row is written: updating the conversation here would wait for its
    row lock behind every streaming write (measured: a fifth of the node's database time at
    100 streams). The conversation's acked_seq follows when the connection closes and before
    retention runs (`reconcile_acks`). One plain statement on PostgreSQL (the ORM's took
    0.4 ms of the node's CPU per ack, issue 22); the ORM expression is the reference."""
    store = record_ack_sql if db_connection.vendor == "postgresql" else record_ack_orm
    store(connection_id, conversation_id, seq)


# GREATEST and LEAST skip NULLs, as the ORM expression's do: a deleted conversation caps nothing.
_RECORD_ACK_SQL = (
    "UPDATE sessions_app_connection SET acked_seq = GREATEST(acked_seq, LEAST(%s, "
    "(SELECT last_seq FROM sessions_app_conversation WHERE id = %s))), last_seen_at = %s WHERE id = %s"
)


def record_ack_sql(connection_id: Any, conversation_id: Any, seq: int) -> None:
    record_acks_sql([AckWrite(str(connection_id), str(conversation_id), seq)])


@dataclass(frozen=True)
class AckWrite:
    """One socket's ack to store (`record_acks`)."""
    connection_id: str
    conversation_id: str
    seq: int


def record_acks(acks: list[AckWrite]) -> list[None]:
    """`record_ack` for many sockets in one call (one outcome each, for `GroupCall`): the sockets
    of a node whose acks are stored while others are being stored (realtime/node/runtime.py).

    Why (issue 22): a socket's first ack is stored at once, so 500 streams that started together
    stored theirs within a few milliseconds, one second after their start: 500 database calls in
    the shared pool, and the node's loop stalled behind them (100-125 ms late wake-ups, timed
    with a loop-lag probe in the node, while the tokens of that moment waited 415-455 ms at the
    median)."""
    if db_connection.vendor == "postgresql":
        record_acks_sql(acks)
    else:
        for ack in acks:
            record_ack_orm(ack.connection_id, ack.conversation_id, ack.seq)
    return [None] * len(acks)


def record_acks_sql(acks: list[AckWrite]) -> None:
    now = timezone.now()
    # One transaction for the batch (psycopg's executemany), its rows locked in key order.
    rows = sorted((str(a.connection_id), a.seq, str(a.conversation_id)) for a in acks)
    with db_connection.cursor() as cursor:
        cursor.executemany(_RECORD_ACK_SQL, [(seq, conversation, now, connection)
                                             for connection, seq, conversation in rows])


def record_ack_orm(connection_id: Any, conversation_id: Any, seq: int) -> None:
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
    """Closes the connection row once; returns False when it was already closed (or is gone).
    Either way the row's delivered_seq moves up to `delivered_seq`, and the conversation's
    acked_seq up to the best ack of its connections (`reconcile_acks`).

    Two plain statements on PostgreSQL, in one call: the ORM's three statements cost the node
    3.9 ms of CPU per close (bench/service_cost_bench.py, issue 22), the most of any step of an
    answer. Two statements, each committed on its own as before, not one: the connection's row
    lock is then never held while the reconcile waits for the conversation's row, which every
    streaming write of the conversation holds until its commit. The ORM version is the
    reference (SQLite, and tests/test_close_connection.py runs both)."""
    close = close_connection_sql if db_connection.vendor == "postgresql" else close_connection_orm
    return close(connection_id, code, reason, delivered_seq)


def close_connection_sql(connection_id: Any, code: int | None, reason: str, delivered_seq: int) -> bool:
    now = timezone.now()
    with db_connection.cursor() as cursor:
        # SET's expressions read the row as it was: whether it was open decides each column.
        cursor.execute(
            "WITH old AS (SELECT id, closed_at IS NULL AS was_open FROM sessions_app_connection "
            "WHERE id = %(id)s FOR UPDATE) "
            "UPDATE sessions_app_connection c SET "
            "closed_at = COALESCE(c.closed_at, %(now)s), "
            "close_code = CASE WHEN old.was_open THEN %(code)s ELSE c.close_code END, "
            "close_reason = CASE WHEN old.was_open THEN %(reason)s ELSE c.close_reason END, "
            "last_seen_at = CASE WHEN old.was_open THEN %(now)s ELSE c.last_seen_at END, "
            "delivered_seq = GREATEST(c.delivered_seq, %(delivered)s) "
            "FROM old WHERE c.id = old.id RETURNING old.was_open, c.conversation_id",
            {"id": str(connection_id), "now": now, "code": code, "reason": reason[:64], "delivered": delivered_seq},
        )
        row = cursor.fetchone()
        if row is None:
            return False
        was_open, conversation_id = row
        cursor.execute(
            "UPDATE sessions_app_conversation v SET acked_seq = best.m FROM (SELECT MAX(acked_seq) AS m "
            "FROM sessions_app_connection WHERE conversation_id = %(c)s) best "
            "WHERE v.id = %(c)s AND v.acked_seq < best.m",
            {"c": conversation_id},
        )
    return bool(was_open)


def close_connection_orm(connection_id: Any, code: int | None, reason: str, delivered_seq: int) -> bool:
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
    connection_id: Any, *, refused: str | None = None, standing: tokens.Standing | None = None
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


# What the resync reads of each socket's row, in this order.
RESYNC_COLUMNS = ("id", "closed_at", "user__is_active", "conversation__last_seq", "close_reason", "user_id",
                  "token_sid", "token_generation", "delivered_seq", "acked_seq")


def resync_rows_sql(connection_ids: list[Any]) -> list[tuple]:
    """RESYNC_COLUMNS of the rows among `connection_ids`, in one plain statement. The ORM's
    `pk__in` prepared each of a batch's ids in Python: at 2,000 idle sockets that was a third
    of the node's CPU (py-spy, issue 22)."""
    user_table = Connection._meta.get_field("user").related_model._meta.db_table
    with bound_cursor() as cursor:  # a batch's ids as one array, bound apart
        cursor.execute(
            "SELECT c.id, c.closed_at, u.is_active, v.last_seq, c.close_reason, c.user_id, c.token_sid, "
            "c.token_generation, c.delivered_seq, c.acked_seq FROM sessions_app_connection c "
            f"JOIN {db_connection.ops.quote_name(user_table)} u ON u.id = c.user_id "
            "JOIN sessions_app_conversation v ON v.id = c.conversation_id WHERE c.id = ANY(%s::uuid[])",
            [[str(i) for i in connection_ids]],
        )
        return cursor.fetchall()


def resync_rows_orm(connection_ids: list[Any]) -> list[tuple]:
    return list(Connection.objects.filter(pk__in=connection_ids).values_list(*RESYNC_COLUMNS))


def touch_connections(entries: list[tuple[str, int, int]]) -> dict[str, tuple[str, int]]:
    """The periodic resync of many sockets in a few statements: for each
    (connection_id, delivered_seq, acked_seq) returns (state, conversation last_seq) with state
    "ok", "replaced" (a newer socket of the same client took over), "closed" (closed meanwhile
    by someone else, e.g. reaped as node_lost), "inactive" (user deactivated) or "revoked" (the
    token the socket holds was revoked: sessions_app/tokens.py).

    An open row is written only when its socket made progress since the row was last
    written: delivered_seq or acked_seq (clamped to the log) moved forward, and last_seen_at
    with them. An idle socket costs a read here, never a write (issue 22: before, every open
    row was updated every REALTIME_RESYNC_INTERVAL: 10,668-12,002 row updates a minute at
    2,000 idle sockets, bench/idle_bench.py). Whether the socket's node is alive is
    the node registry's business in Redis, not this row's."""
    if not entries:
        return {}
    now = timezone.now()
    read = resync_rows_sql if db_connection.vendor == "postgresql" else resync_rows_orm
    rows = {str(r[0]): r for r in read([e[0] for e in entries])}
    standings = {
        cid: tokens.Standing(str(r[5]), str(r[6]) if r[6] else None, r[7])
        for cid, r in rows.items()
        if r[1] is None and r[2]
    }
    revoked = tokens.revoked_among(list(set(standings.values())))
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
            acked = min(acked, last_seq)
            if delivered > row[8] or acked > row[9]:
                updates.append((stamp, delivered, acked, connection_id))
    if updates:
        greatest = "MAX" if db_connection.vendor == "sqlite" else "GREATEST"
        # A row closed since it was read keeps what its close wrote.
        update_by_pk(
            Connection,
            f"last_seen_at = %s, delivered_seq = {greatest}(delivered_seq, %s), "
            f"acked_seq = {greatest}(acked_seq, %s)",
            updates,
            where=" AND closed_at IS NULL",
        )
    return result


# --- operators ------------------------------------------------------------------------------


def disconnect_connections(
    connection_ids: list[Any], reason: str = "operator_disconnect"
) -> dict[str, list[str]]:
    """An operator ends sockets; their clients are to resume (close code 4012, like a drain).
    The rows are closed here, so the sockets end at their node's next resync even if the
    fan-out message that ends them at once is lost (a row closed by someone else is answered
    with going_away + 4012). Returns the socket addresses (`channel_name`) of the rows this
    call closed, by conversation: where the message goes (realtime.fanout.publish.tell)."""
    with transaction.atomic():
        rows = list(
            Connection.objects.select_for_update()
            .filter(pk__in=connection_ids, closed_at__isnull=True)
            .values_list("pk", "conversation_id", "channel_name")
        )
        Connection.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(
            closed_at=timezone.now(), close_code=4012, close_reason=reason[:64]
        )
    closed: dict[str, list[str]] = {}
    for _, conversation_id, channel in rows:
        closed.setdefault(str(conversation_id), []).append(channel)
    return closed
