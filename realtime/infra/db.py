"""Runs ORM work off the event loop on a pool of threads, each call within a deadline.

`thread_sensitive=False` spreads database calls over the default executor instead of
funnelling every connection's queries through one shared thread.

Deadline (issue 25): a call still running after `REALTIME_DB_TIMEOUT` seconds has its database
connection shut down under it and fails with `DatabaseTimeout`, an OperationalError, which every
caller already treats as "the database is unavailable now". A PostgreSQL that stops answering
without closing the connection (a partition, or a proxy in front of it that blackholes) held a
call forever otherwise: nothing times out while something still acknowledges the packets, and
the thread, the socket and the transaction's row locks on the server stayed taken. Shutting
the socket down wakes the waiting thread at once, and the server rolls the transaction back
when the close reaches it. Whether a cut call committed is unknown to the caller, as with any
failure: every write is idempotent or fenced (client_msg_id, fencing tokens, the run's text).
New connections are bounded by libpq's `connect_timeout` (project/settings.py).

Every call's outcome is reported to realtime.infra.outage.DATABASE, which logs an outage once
when it starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, Error, OperationalError, close_old_connections, connections

from realtime.infra.outage import DATABASE

log = logging.getLogger(__name__)

# How often the watcher looks for calls past their deadline, at most (seconds).
WATCH_INTERVAL = 0.25
# A watcher that woke this much later than it asked was not running (the process was stopped,
# SIGSTOP or a paused VM, or starved): the calls' deadlines start again, since their answers may
# be waiting unread in their sockets.
WATCH_LATE = 1.0


class DatabaseTimeout(OperationalError):
    """A database call got no answer within REALTIME_DB_TIMEOUT; its connection was closed."""


class _Call:
    __slots__ = ("connection", "started", "lock", "done", "cut")

    def __init__(self, connection: Any) -> None:
        self.connection = connection  # the calling thread's Django DatabaseWrapper
        self.started = time.monotonic()
        self.lock = threading.Lock()  # held while the call ends, and while it is cut
        self.done = False
        self.cut = False


class CallWatch:
    """The database calls running in this process and one thread that cuts those past their
    deadline. Calls register from the threads that run them."""

    def __init__(self, timeout: Callable[[], float], *, own_thread: bool = True) -> None:
        """`own_thread=False`: no watcher thread; whoever holds the watch calls `cut_overdue`
        (a test that must decide when a pass runs)."""
        self.timeout = timeout
        self._calls: set[_Call] = set()
        self._lock = threading.Lock()
        self._own_thread = own_thread
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watching(self, connection: Any) -> Iterator[_Call]:
        """Around one call in the thread that runs it, on that thread's `connection`."""
        call = _Call(connection)
        with self._lock:
            self._calls.add(call)
            if self._own_thread and self._thread is None:
                self._thread = threading.Thread(target=self._watch_forever, name="db-deadlines", daemon=True)
                self._thread.start()
        try:
            yield call
        finally:
            # Under the call's lock: once `done` is set the connection may be closed and its
            # socket's number reused by another connection, which must never be cut.
            with call.lock:
                call.done = True
            with self._lock:
                self._calls.discard(call)

    def cut_overdue(self) -> int:
        """Cuts every call past its deadline; returns how many were cut."""
        now, timeout = time.monotonic(), self.timeout()
        with self._lock:
            overdue = [c for c in self._calls if not c.cut and now - c.started >= timeout]
        cut = 0
        for call in overdue:
            with call.lock:
                if not call.done and _shut_down(call.connection):
                    call.cut = True
                    cut += 1
        return cut

    def restart_deadlines(self) -> None:
        """Every running call's deadline counts from now."""
        now = time.monotonic()
        with self._lock:
            for call in self._calls:
                call.started = now

    def _watch_forever(self) -> None:
        while True:
            interval = min(WATCH_INTERVAL, self.timeout() / 4)
            asleep = time.monotonic()
            time.sleep(interval)
            try:
                if time.monotonic() - asleep > interval + WATCH_LATE:
                    self.restart_deadlines()
                self.cut_overdue()
            except Exception:  # the watcher must outlive a bug in one pass
                log.exception("cutting overdue database calls failed")


def _shut_down(connection: Any) -> bool:
    """Shuts down the socket of a Django connection's driver connection; False if it has none
    (still connecting: libpq's connect_timeout bounds that) or is not a socket (SQLite)."""
    driver = getattr(connection, "connection", None)
    try:
        fd = driver.fileno()
    except Exception:  # noqa: BLE001 - not connected, closed, or not a socket at all
        return False
    if getattr(connection, "in_atomic_block", False):
        # Django's own flag for a connection lost inside a transaction: the atomic block then
        # neither tries to roll back on it nor reconnects to restore autocommit (which would
        # wait for the unanswering database once more, up to its connect timeout). Set before
        # the shutdown, which wakes the call's thread at once.
        connection.closed_in_transaction = True
    duplicate = socket.socket(fileno=os.dup(fd))
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:  # already shut down or reset: the call fails by itself
        return True
    finally:
        duplicate.close()
    return True


WATCH = CallWatch(lambda: settings.REALTIME_DB_TIMEOUT)


class HandedCalls:
    """The calls handed to a database thread that have not ended there: waiting for a busy
    thread, running, or running on after their caller stopped waiting (a cancelled caller cannot
    stop its thread, see `db`). `WATCH` knows only the running ones.

    Who waits for none to be left (`wait_idle`): the test suite, before it empties the database
    after a test. A node stopped at a test's end can leave a call running in its threads, and
    Django's flush is one TRUNCATE of every table, in an order that changes with the hash seed:
    when it holds a table and waits for one the call's transaction holds, and the transaction
    then asks for the first, PostgreSQL breaks the deadlock by failing one of them. A fresh-clone
    CI failed the flush after `test_acks_stored_together.py`'s last test, which had passed (its
    PostgreSQL error was not kept); counted here, that test ends with one call still running
    (it ended 3 ms later)."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    @property
    def count(self) -> int:
        return self._count

    def hand(self) -> _Ticket:
        """A call is about to be handed to a thread."""
        with self._changed:
            self._count += 1
        return _Ticket()

    def start(self, ticket: _Ticket) -> bool:
        """In the thread: whether the call is still wanted (False: its caller gave up before
        the thread took it, see `drop`)."""
        with self._changed:
            if ticket.dropped:
                return False
            ticket.started = True
            return True

    def end(self) -> None:
        """In the thread: a started call ended."""
        with self._changed:
            self._end()

    def drop(self, ticket: _Ticket) -> None:
        """The caller gave up (cancelled, or the call could not be handed): a call no thread
        started will never start; one already started ends in its thread."""
        with self._changed:
            if not ticket.started and not ticket.dropped:
                ticket.dropped = True
                self._end()

    def _end(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Whether no call is left, waiting at most `timeout` seconds for that."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout)


class _Ticket:
    __slots__ = ("started", "dropped")

    def __init__(self) -> None:
        self.started = False
        self.dropped = False


HANDED = HandedCalls()


def _answered(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, bool]:
    """`fn`'s result within the deadline, on the calling thread's default database connection,
    and whether the database answered a statement of it (a call may return without one)."""
    connection = connections[DEFAULT_DB_ALIAS]
    statements = 0

    def count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict) -> Any:
        nonlocal statements
        result = execute(sql, params, many, context)
        statements += 1
        return result

    with WATCH.watching(connection) as call, connection.execute_wrapper(count):
        try:
            return fn(*args, **kwargs), statements > 0
        except Error as exc:
            with call.lock:  # the watcher may be cutting it right now: wait for its verdict
                cut = call.cut
            if cut:
                raise DatabaseTimeout(
                    f"no answer from the database within {settings.REALTIME_DB_TIMEOUT:g} s; "
                    "the call's connection was closed") from exc
            raise


def bounded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run within the deadline (for sync callers: /readyz)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        return _answered(fn, *args, **kwargs)[0]

    return run


_commit_executor: ThreadPoolExecutor | None = None
_commit_executor_lock = threading.Lock()


def commit_executor() -> ThreadPoolExecutor:
    """The delta group commit's own thread (and database connection).

    Why its own: the streams' writes must never queue behind other calls. With the shared pool
    that took 16 threads (REALTIME_DB_THREADS), and 16 threads handing the GIL back and forth
    with the loop cost a node more CPU than their queries (issue 22: at 500 streams 154 µs per
    delivered event with 16 threads, 112-115 with 2 or 4, p99 454 ms against 248-266 ms). With
    its own thread the shared pool can be small."""
    global _commit_executor
    with _commit_executor_lock:
        if _commit_executor is None:
            _commit_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-commit")
        return _commit_executor


def _in_thread(ticket: _Ticket, fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[Any, bool]:
    """One call in a database thread, as Channels' `database_sync_to_async` makes it: connections
    past their CONN_MAX_AGE or broken are closed before and after."""
    if not HANDED.start(ticket):
        return None, False
    try:
        close_old_connections()
        try:
            return _answered(fn, *args, **kwargs)
        finally:
            close_old_connections()
    finally:
        HANDED.end()


def db(fn: Callable[..., Any], *, executor: ThreadPoolExecutor | None = None) -> Callable[..., Any]:
    """`fn` as a coroutine function run in a database thread (the loop's default executor, or
    `executor`), within the deadline.

    Why not `database_sync_to_async` (which this used until issue 22): asgiref's wrapper around
    the executor (a shield, a task context, an exception context, the context's copy carried
    back) cost 105-116 µs of CPU per call beyond the bare `run_in_executor` (150-180 µs on that
    slow machine), this one 41-96 µs, measured in one sitting. Nothing here needs what it adds:
    the caller's context variables (log fields) reach the thread by a copy, and no database
    function runs async code. As with it, a cancelled caller stops waiting at once
    while its call runs to its end in the thread; `HANDED` counts the call until then."""

    async def run(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        ticket = HANDED.hand()
        try:
            result, answered = await asyncio.get_running_loop().run_in_executor(
                executor, contextvars.copy_context().run, _in_thread, ticket, fn, args, kwargs)
        except BaseException as exc:
            # Cancelled (or not handed at all: an executor shut down); a call its thread
            # already started runs on, one still waiting for a thread never starts.
            HANDED.drop(ticket)
            if isinstance(exc, Exception):
                DATABASE.failed(exc, started=started)  # starts an outage only if the database was not reached
            raise
        if answered:  # a call that ran no statement proves nothing about the database
            DATABASE.succeeded()
        return result

    return run
