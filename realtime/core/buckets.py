"""Token-bucket arithmetic without I/O: a limit (`Rule`), a verdict (`Verdict`), the bucket a
socket keeps in memory for its inbound frame rate (`LocalBucket`), and a node's share of a
shared limit when the shared one cannot be checked (`LocalBuckets`, `share_of`). The shared
buckets live in Redis (realtime/infra/ratelimit.py, the same rule evaluated in Lua)."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_ms: int = 0
    refused_by: int | None = None
    # The shared limit could not be checked (Redis down, slow, or its pool exhausted): a
    # refusal for that reason, not because the client went over the limit.
    unchecked: bool = False


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


def share_of(limit: Rule, nodes: int) -> Rule:
    """One node's share of a limit shared by `nodes` nodes; at least one event at once, so
    that a share never refuses everything."""
    nodes = max(1, nodes)
    return Rule(capacity=max(1.0, limit.capacity / nodes), per_second=limit.per_second / nodes)


def share_of_count(limit: int, nodes: int) -> int:
    """One node's share of a concurrency limit (connection slots), rounded up."""
    return max(1, math.ceil(limit / max(1, nodes)))


class LocalBuckets:
    """Buckets in this process, by name: the fallback when a shared limit cannot be checked
    (realtime/infra/ratelimit.py `fallback_hit`). The least recently used are forgotten past
    `max_buckets`, so a flood of names (addresses, users) cannot grow memory without bound; a
    forgotten bucket starts full again. Thread-safe: REST throttles run in worker threads."""

    def __init__(self, max_buckets: int = 10000) -> None:
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, LocalBucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, name: str, limit: Rule, cost: float = 1.0, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None or bucket.capacity != limit.capacity or bucket.rate != limit.per_second:
                bucket = LocalBucket(limit, now)  # new, or the share changed with the node count
                self._buckets[name] = bucket
            self._buckets.move_to_end(name)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
            return bucket.take(cost, now)

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()
