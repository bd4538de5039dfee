"""Failures that pass by themselves, and how a best-effort call that met one is logged.

Rule: a best-effort call on a hot path (rate limits, fan-out publishes, slot renames, acks) that
fails logs through `warn_failed`: a transient failure in one line, without a traceback, and at
most one line per message per second (the next line says how many were left out); anything
else (a bug) with its traceback, every time. Under a burst of connects on a saturated node the
project's Redis calls wait for the loop and fail by the hundred: we counted 1,269 rate-limit
tracebacks in one benchmark run; in another (`bench/stream_bench.py --streams 500`, py-spy)
formatting the fan-out's tracebacks was 26% of the loop's busy time, and without them the
one-line warnings (about 2,500 in one run) were still 22%, which slowed the loop further.
During an outage of the database or Redis that is already logged (realtime/infra/outage.py),
the transient failures it causes are not logged at all: its two lines say it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from django.db import InterfaceError, OperationalError

from realtime.infra.outage import covering

# Database restarting, Redis unreachable or slow (its pool had no free connection in time).
TRANSIENT_ERRORS = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError, TimeoutError)


class LogThrottle:
    """Lets one line per key through per `window` seconds and counts the rest."""

    def __init__(self, window: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        # key -> (clock time of the last line let through, lines left out since)
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def admit(self, key: tuple[str, str]) -> int | None:
        """None: leave this line out. Otherwise how many were left out since the last one."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.window:
            self._last[key] = (last[0], last[1] + 1)
            return None
        self._last[key] = (now, 0)
        return last[1] if last is not None else 0

    def clear(self) -> None:
        self._last.clear()


# One per process: the messages are the code's own templates, so the keys are few.
THROTTLE = LogThrottle()


def warn_failed(logger: logging.Logger, message: str, *args: object, exc: BaseException) -> None:
    """Call from the `except` block of the failure `exc`; `message` and `args` as for logging."""
    if not isinstance(exc, TRANSIENT_ERRORS):
        logger.warning(f"{message} (%s)", *args, type(exc).__name__, exc_info=True)
        return
    if covering(exc) is not None:  # part of an outage already logged (realtime/infra/outage.py)
        return
    left_out = THROTTLE.admit((logger.name, message))
    if left_out is None:
        return
    more = f"; {left_out} more like this since the last such line" if left_out else ""
    logger.warning(f"{message} (%s){more}", *args, type(exc).__name__)
