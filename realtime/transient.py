"""Failures that pass by themselves, and how a best-effort call that met one is logged.

Rule: a best-effort call on a hot path (rate limits, fan-out publishes, slot renames, acks) that
fails logs through `warn_failed`: one line for a transient failure, the traceback only for
anything else (a bug). Under a burst of connects on a saturated node the project's Redis calls
wait for the loop and fail by the hundred: we counted 1,269 rate-limit tracebacks in one
benchmark run, and in another (`bench/stream_bench.py --streams 500`, py-spy) formatting the
fan-out's tracebacks was 37% of the loop's busy time, which slowed the loop further.
"""

from __future__ import annotations

import logging

import redis
from django.db import InterfaceError, OperationalError

# Database restarting, Redis unreachable or slow (its pool had no free connection in time).
TRANSIENT_ERRORS = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError, TimeoutError)


def warn_failed(logger: logging.Logger, message: str, *args: object, exc: BaseException) -> None:
    """Call from the `except` block of the failure `exc`; `message` and `args` as for logging."""
    logger.warning(f"{message} (%s)", *args, type(exc).__name__, exc_info=not isinstance(exc, TRANSIENT_ERRORS))
