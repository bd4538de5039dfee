"""A client that reconnects while its old socket still looks alive (a zombie) replaces it at
once: the old socket gets `replaced` and 4409, the new one resumes without loss, on the same
node or on another one."""

import pytest
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings as django_settings

from realtime.fanout import publish as fanout
from realtime.infra import ratelimit
from sessions_app.models import Connection
from sessions_app.services.conversations import lock_conversation
from tests.support.gates import Gate
from tests.support.waiting import eventually
from tests.support.ws import WSClient, assert_gapless, run_text, sequenced

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("other_node", [False, True], ids=["same-node", "other-node"])
async def test_reconnect_with_same_client_id_replaces_the_zombie(settings, cluster, token, other_node):
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 10
    _, app1 = cluster("node-1")
    _, app2 = cluster("node-2", run_agents=False) if other_node else (None, app1)
    old = WSClient(app1)
    ready = await old.connect(token, client_id="phone-1")
    await old.message("count 60")
    seen = await old.recv_until(lambda f: f["type"] == "agent.delta" and f["index"] >= 2)
    applied = max(f["seq"] for f in sequenced(seen))

    new = WSClient(app2)
    resumed = await new.connect(token, conversation_id=ready["conversation_id"], last_seq=applied, client_id="phone-1")
    assert resumed["resumed"] is True

    frames, code = await old.expect_close(timeout=5)
    assert code == 4409 and frames[-1]["code"] == "replaced"
    rest = await new.recv_until(lambda f: f["type"] == "agent.completed")
    assert_gapless(rest, after=applied)
    run_id = next(f["run_id"] for f in seen if f["type"] == "agent.started")
    # What the client applied before plus what the new socket brought: the whole answer once.
    whole = [f for f in sequenced(old.frames) if f["seq"] <= applied] + sequenced(rest)
    assert run_text(whole, run_id) == rest[-1]["message"]["text"] == " ".join(f"w{i}" for i in range(1, 61))
    await old.drop()

    def rows():
        return list(Connection.objects.filter(client_id="phone-1").order_by("opened_at")
                    .values_list("close_code", "close_reason", "closed_at"))

    got = await eventually(lambda: _closed_first(rows), timeout=5, what="old row closed")
    assert got[0][:2] == (4409, "replaced") and got[1][2] is None
    await new.drop()


async def _closed_first(rows):
    got = await database_sync_to_async(rows)()
    return got if len(got) == 2 and got[0][2] is not None else None


async def test_a_replaced_socket_closing_on_its_own_keeps_its_successors_slot(cluster, user, token, monkeypatch):
    """The replaced socket drops before the fan-out's `replaced` reaches it (here the message is lost):
    its release must not free the slot its successor now holds (issue 9, item 11)."""
    node, app = cluster("node-1")
    r = aioredis.from_url(django_settings.REDIS_URL)
    slot_key = f"{django_settings.REDIS_KEY_PREFIX}:slots:user:{user.pk}"
    old = WSClient(app)
    ready = await old.connect(token, client_id="phone-1")
    member = ratelimit.slot_member("phone-1", ready["conversation_id"])

    async def lost(*args, **kwargs):
        return None

    monkeypatch.setattr(fanout, "tell", lost)
    new = WSClient(app)
    await new.connect(token, conversation_id=ready["conversation_id"], last_seq=0, client_id="phone-1")
    await old.drop()  # the old socket goes away by itself; nobody told it it was replaced

    async def old_socket_gone():
        return len(node.connections) == 1

    await eventually(old_socket_gone, timeout=5, what="the old socket cleaned up")
    try:
        assert await r.zscore(slot_key, member) is not None, "the successor's slot was freed"
        await new.drop()

        async def freed():
            return await r.zscore(slot_key, member) is None

        await eventually(freed, timeout=5, what="the successor's own close frees the slot")
    finally:
        await r.aclose()


async def test_the_new_socket_is_ready_before_the_old_one_is_told(cluster, token, monkeypatch):
    """`replaced` is a Redis round trip the new socket does not wait for: with the message held
    at a gate, the new socket is already `ready` (issue 12), and once it goes out the old socket
    ends with 4409."""
    _, app = cluster("node-1")
    old = WSClient(app)
    ready = await old.connect(token, client_id="phone-1")
    gate = Gate()
    monkeypatch.setattr(fanout, "tell", gate.before(fanout.tell))
    new = WSClient(app)
    resumed = await new.connect(token, conversation_id=ready["conversation_id"], last_seq=0, client_id="phone-1")
    assert resumed["resumed"] is True
    await gate.arrived()  # the old socket has not been told yet
    gate.open()
    _, code = await old.expect_close()
    assert code == 4409
    await old.drop(code)
    await new.drop()


# --- the database keeps one open row per (conversation, client_id) ------------------------

# Advisory-lock key of the barrier below (any number no other test uses).
_INSERT_BARRIER_KEY = 7_409_001


@pytest.fixture
def held_connection_inserts():
    """A forced interleaving on PostgreSQL: every INSERT into the connection table first waits
    for an advisory lock the test holds. Two `open_session` calls therefore both run their
    "which rows do I replace?" lookup and then both stop right before inserting; the test
    lets them go together once both are waiting. Yields the release function."""
    from django.db import connection

    table = Connection._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION tether_test_hold_insert() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN PERFORM pg_advisory_xact_lock_shared({_INSERT_BARRIER_KEY}); RETURN NEW; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER tether_test_hold_insert BEFORE INSERT ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION tether_test_hold_insert()"
        )
        cursor.execute("SELECT pg_advisory_lock(%s)", [_INSERT_BARRIER_KEY])
    released = []

    def release() -> None:
        if not released:
            released.append(True)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_INSERT_BARRIER_KEY])

    try:
        yield release
    finally:
        release()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS tether_test_hold_insert ON {table}")
            cursor.execute("DROP FUNCTION IF EXISTS tether_test_hold_insert()")


def _inserts_waiting() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
            [_INSERT_BARRIER_KEY],
        )
        return cursor.fetchone()[0]


@pytest.mark.postgres
def test_concurrent_connects_of_one_client_leave_exactly_one_open_row(user, held_connection_inserts):
    """Both connects find nothing to replace, then insert at the same moment: the database
    lets one row in, the other connect replaces it (its socket is told 4409)."""
    import threading

    from django.db import connection

    from sessions_app import services
    from tests.support.waiting import eventually_sync

    conversation = services.create_conversation(user.pk)
    results: dict[str, object] = {}

    def connect(channel: str) -> None:
        try:
            results[channel] = services.open_session(
                user_id=user.pk, conversation_id=str(conversation.pk), client_id="phone-1",
                channel_name=channel, node="node-1",
            )
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            results[channel] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=connect, args=(f"specific.x!{name}",)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    eventually_sync(lambda: _inserts_waiting() == 2, timeout=10, what="both connects held before their insert")
    held_connection_inserts()
    for thread in threads:
        thread.join(20)
    assert all(isinstance(r, services.OpenedSession) for r in results.values()), results

    rows = {
        channel: (closed_at is None, code, reason)
        for channel, closed_at, code, reason in Connection.objects.filter(client_id="phone-1").values_list(
            "channel_name", "closed_at", "close_code", "close_reason"
        )
    }
    open_channels = [channel for channel, (is_open, _, _) in rows.items() if is_open]
    assert len(rows) == 2 and len(open_channels) == 1, rows
    (winner,) = open_channels
    (loser,) = set(rows) - {winner}
    assert rows[loser] == (False, 4409, "replaced")
    # The winner's socket tells the loser's to go; the loser replaced nobody.
    assert results[winner].replaced_channels == [loser]
    assert results[loser].replaced_channels == []


def test_the_database_refuses_a_second_open_row_for_one_client(user):
    from django.db import IntegrityError, transaction

    from sessions_app import services

    first = services.open_session(user_id=user.pk, conversation_id=None, client_id="phone-1",
                                  channel_name="specific.x!a", node="node-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Connection.objects.create(user_id=user.pk, conversation_id=first.conversation_id, client_id="phone-1",
                                  channel_name="specific.x!b", node="node-1")
    # Closed rows are history and do not count; another client_id is another identity.
    second = services.open_session(user_id=user.pk, conversation_id=first.conversation_id, client_id="phone-1",
                                   channel_name="specific.x!b", node="node-1")
    services.open_session(user_id=user.pk, conversation_id=first.conversation_id, client_id="laptop-1",
                          channel_name="specific.x!c", node="node-1")
    assert second.replaced_channels == ["specific.x!a"]
    assert Connection.objects.filter(client_id="phone-1", closed_at__isnull=True).count() == 1


@pytest.mark.postgres
def test_a_connect_does_not_wait_for_the_conversation_row_lock(user):
    """The streaming group commit holds the conversation row lock for whole batches: a resume
    (open_session) must not queue behind it, so replacement is made atomic without that lock."""
    import threading

    from django.db import connection, transaction

    from sessions_app import services

    conversation = services.create_conversation(user.pk)
    locked, done = threading.Event(), threading.Event()

    def streaming_writer() -> None:
        try:
            with transaction.atomic():
                lock_conversation(conversation.pk)  # what every append does first
                locked.set()
                done.wait(20)
        finally:
            connection.close()

    writer = threading.Thread(target=streaming_writer)
    writer.start()
    try:
        assert locked.wait(10)
        with transaction.atomic(), connection.cursor() as cursor:
            # Waiting on any lock for longer fails the test instead of hanging it.
            cursor.execute("SET LOCAL lock_timeout = '3s'")
            opened = services.open_session(user_id=user.pk, conversation_id=str(conversation.pk),
                                           client_id="phone-1", channel_name="specific.x!a", node="node-1")
        assert opened.replaced_channels == []
    finally:
        done.set()
        writer.join(20)
