"""A dependency that stopped answering, as this process sees it: PostgreSQL or Redis.

Rule: an outage is logged twice, when this process first meets it ("database unreachable
(OperationalError: ...)") and when the dependency answers again ("database reachable again
after 31.2 s (212 failures reported, 40 warnings left out)"). In between, the transient failures of calls that
meet it are counted, not logged (realtime/infra/transient.py `warn_failed` asks `covering`).
We found a 30 s PostgreSQL outage wrote a traceback per event: every run sweep, renewal, delta
batch, resync and closed socket (issue 25).

Who reports: every database call of a node goes through realtime/infra/db.py, which reports
each call's outcome to `DATABASE`; for Redis, the node's heartbeat (realtime/node/runtime.py)
reports its announce, which runs every few seconds on every node.

While the database is out, a connect lets at most one database call through at a time
(`DATABASE.admit()`): the others are refused at once with `going_away` and `retry_after_ms`
instead of waiting in the database threads' queue behind calls that wait for their deadline.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import redis
from django.db import InterfaceError, OperationalError

log = logging.getLogger(__name__)


def database_unreachable(exc: BaseException) -> bool:
    """A failure to reach PostgreSQL (refused, reset, closed, timed out, shutting down), as
    opposed to an error the database answered with (a deadlock, a statement timeout)."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    # Connection exceptions (08...), operator intervention: shutdown, crash, starting up (57P..).
    return sqlstate is None or sqlstate.startswith(("08", "57P"))


def redis_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError | TimeoutError)


class Outage:
    """One dependency's reachability in this process. Thread-safe: database calls report from
    their threads."""

    def __init__(self, name: str, unreachable: Callable[[BaseException], bool]) -> None:
        self.name = name
        self._unreachable = unreachable
        self._lock = threading.Lock()
        self.since: float | None = None  # monotonic time the outage was first met
        self.failed_calls = 0  # failures reported to `failed` since
        self.left_out = 0  # warnings `warn_failed` left out since
        self.ended_at = 0.0  # monotonic time the last outage ended
        self._probing = False

    @property
    def down(self) -> bool:
        return self.since is not None

    def covers(self, exc: BaseException) -> bool:
        """True when `exc` is this outage meeting one more call (it is already logged)."""
        return self.since is not None and self._unreachable(exc)

    def failed(self, exc: BaseException, logger: logging.Logger = log, started: float | None = None) -> bool:
        """A call (begun at monotonic time `started`) failed. Starts the outage (one line) when
        `exc` means the dependency is unreachable; returns whether it does. A call begun before
        the last outage ended starts none: it met that one (we saw calls that had waited for a
        connection through a whole partition fail just after it healed)."""
        if not self._unreachable(exc):
            return False
        with self._lock:
            self.failed_calls += 1
            if self.since is not None:
                return True
            if started is not None and started < self.ended_at:
                return True
            self.since = time.monotonic()
            self.failed_calls, self.left_out = 1, 0
        logger.warning("%s unreachable (%s: %s); calls fail until it answers again",
                       self.name, type(exc).__name__, _first_line(exc))
        return True

    def succeeded(self, logger: logging.Logger = log) -> None:
        """A call succeeded: ends the outage (one line) if there was one."""
        if self.since is None:  # the common case: no lock
            return
        with self._lock:
            if self.since is None:
                return
            self.ended_at = time.monotonic()
            lasted, failed, left_out = self.ended_at - self.since, self.failed_calls, self.left_out
            self.since, self.failed_calls, self.left_out = None, 0, 0
        logger.warning("%s reachable again after %.1f s (%d failures reported, %d warnings left out)",
                       self.name, lasted, failed, left_out)

    def refusing(self) -> bool:
        """`admit` would refuse now (a hint: `admit` decides)."""
        return self.since is not None and self._probing

    @contextlib.contextmanager
    def admit(self) -> Iterator[bool]:
        """For a caller that should not queue behind a dead dependency (a connect): yields
        False while the dependency is out and another caller is already trying it; otherwise
        True, and this caller is the one trying it."""
        with self._lock:
            if self.since is not None and self._probing:
                admitted = False
            else:
                admitted = True
                probing = self._probing = self.since is not None
        if not admitted:
            yield False
            return
        try:
            yield True
        finally:
            if probing:
                with self._lock:
                    self._probing = False

    def reset(self) -> None:
        """Forgets any outage (tests)."""
        with self._lock:
            self.since, self.failed_calls, self.left_out, self._probing = None, 0, 0, False
            self.ended_at = 0.0


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


DATABASE = Outage("database", database_unreachable)
REDIS = Outage("Redis", redis_unreachable)


def covering(exc: BaseException) -> Outage | None:
    """The outage already logged that `exc` is part of, if any (its warning is left out)."""
    for outage in (DATABASE, REDIS):
        if outage.covers(exc):
            with outage._lock:  # noqa: SLF001 - the same module's state
                outage.left_out += 1
            return outage
    return None
