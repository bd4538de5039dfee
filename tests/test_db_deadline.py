"""A database call that gets no answer is cut at its deadline, and the database's outage is
logged in two lines (issue 25, item 3; realtime/infra/db.py, realtime/infra/outage.py).

The worker threads' connections reach PostgreSQL through tests.support.netproxy.FaultProxy,
which blackholes it mid-call: the server never hears the query, or the client never hears the
answer, and nothing closes. Without a deadline the call waited forever, holding its thread, its
connection and, on the server, the row locks of its transaction."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import pytest
from django.db import connection, connections, transaction

from realtime.infra import outage
from realtime.infra.db import CallWatch, DatabaseTimeout, db
from sessions_app import services
from sessions_app.models import Conversation
from tests.support.netproxy import ThreadedFaultProxy
from tests.support.waiting import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEADLINE = 1.0
# The watcher looks every quarter second at most; a loaded machine adds a little.
MARGIN = 1.0


@pytest.fixture
def proxied_database(settings, monkeypatch, user):
    """Connections opened from now on by the worker threads go through a fault proxy (they
    close theirs after every call). The test's own thread keeps its direct connection: the
    database is flushed through it after the test."""
    settings.REALTIME_DB_TIMEOUT = DEADLINE
    connection.ensure_connection()
    default = connections.settings["default"]
    monkeypatch.setitem(default, "OPTIONS", {**default.get("OPTIONS", {}), "connect_timeout": 2})
    proxy = ThreadedFaultProxy(upstream=(default["HOST"] or "127.0.0.1", int(default["PORT"] or 5432))).start()
    monkeypatch.setitem(default, "HOST", "127.0.0.1")
    monkeypatch.setitem(default, "PORT", str(proxy.port))
    outage.DATABASE.reset()
    yield proxy
    proxy.stop()
    outage.DATABASE.reset()


async def test_a_call_the_database_never_answers_is_cut_at_its_deadline_and_its_locks_freed(
        proxied_database, user, caplog):
    conversation = await db(services.create_conversation)(user.pk)
    locked, go_on = threading.Event(), threading.Event()

    def lock_then_query() -> None:
        with transaction.atomic():
            Conversation.objects.select_for_update().get(pk=conversation.pk)  # held until the transaction ends
            locked.set()
            go_on.wait(10)
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")  # into the void

    caplog.set_level(logging.WARNING, logger=outage.__name__)
    call = asyncio.ensure_future(db(lock_then_query)())
    assert await asyncio.to_thread(locked.wait, 10)
    proxied_database.blackhole()
    go_on.set()
    started = time.monotonic()
    with pytest.raises(DatabaseTimeout, match="no answer from the database within 1 s"):
        await asyncio.wait_for(call, DEADLINE + MARGIN + 5)
    cut_after = time.monotonic() - started
    print(f"\ncall cut {cut_after:.2f}s after the database went silent (deadline {DEADLINE:g}s)")
    assert cut_after <= DEADLINE + MARGIN
    assert outage.DATABASE.down

    # Once the network is back, the server hears the closed connection and rolls back: the row
    # lock is free again for the next writer.
    proxied_database.clear_faults()

    def lock_again() -> bool:
        with transaction.atomic():
            Conversation.objects.select_for_update(nowait=True).get(pk=conversation.pk)
        return True

    async def lockable() -> bool:
        try:
            return await db(lock_again)()
        except Exception:  # noqa: BLE001 - still locked (LockNotAvailable) or still reconnecting
            return False

    assert await eventually(lockable, timeout=5, what="the cut transaction rolled back")
    assert not outage.DATABASE.down
    lines = [r.getMessage() for r in caplog.records if r.name == outage.__name__]
    assert len(lines) == 2, lines
    assert lines[0].startswith("database unreachable (DatabaseTimeout: no answer from the database within 1 s")
    assert lines[1].startswith("database reachable again after ")
    assert not any(r.exc_info for r in caplog.records)


async def test_a_new_connection_the_database_never_answers_fails_within_its_connect_timeout(
        proxied_database, settings):
    proxied_database.blackhole()
    started = time.monotonic()
    with pytest.raises(Exception) as failed:
        await db(services.conversation_last_seq)("00000000-0000-0000-0000-000000000000")
    took = time.monotonic() - started
    print(f"\nconnect into the void failed after {took:.2f}s: {failed.value!r}")
    connect_timeout = connections.settings["default"]["OPTIONS"]["connect_timeout"]
    assert took <= connect_timeout + MARGIN
    assert outage.database_unreachable(failed.value) and outage.DATABASE.down


def test_after_the_process_was_stopped_the_deadlines_start_again():
    """A node frozen (SIGSTOP, a paused VM) mid-call finds its answer waiting once it runs again:
    the time it did not run is no one's fault, so no call is cut for it."""

    class Wrapper:  # what the watcher sees of a Django connection: its driver's socket
        def __init__(self, sock: socket.socket) -> None:
            self.connection = sock

    watch = CallWatch(lambda: 1.0, own_thread=False)  # the test runs each pass itself
    for restarted in (True, False):
        ours, theirs = socket.socketpair()
        with ours, theirs, watch.watching(Wrapper(ours)) as call:
            call.started -= 60  # the call began before a minute-long freeze
            if restarted:
                watch.restart_deadlines()
            watch.cut_overdue()
            assert call.cut is not restarted
