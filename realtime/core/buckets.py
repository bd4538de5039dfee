"""Token-bucket arithmetic without I/O: a limit (`Rule`), a verdict (`Verdict`), and the bucket
a socket keeps in memory for its inbound frame rate (`LocalBucket`). The shared buckets live in
Redis (realtime/infra/ratelimit.py, the same rule evaluated in Lua)."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_ms: int = 0
    refused_by: int | None = None


@dataclass(frozen=True)
class Rule:
    """`capacity` events at once, refilled at `per_second` (sustained rate)."""

    capacity: float
    per_second: float


class LocalBucket:
    """Per-connection frame budget, kept in memory: checked on every inbound frame. Pure: the
    caller passes the (monotonic) time, as the connection state machine does."""

    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, limit: Rule, now: float | None = None):
        self.capacity = limit.capacity
        self.rate = limit.per_second
        self.tokens = limit.capacity
        self.stamp = time.monotonic() if now is None else now

    def take(self, cost: float = 1.0, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return Verdict(True)
        return Verdict(False, int((cost - self.tokens) * 1000 / self.rate) + 1)
