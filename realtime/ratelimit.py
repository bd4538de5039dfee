"""Rate limits shared by all nodes: token buckets evaluated atomically in Redis (one Lua call
per check), and a local bucket for per-connection frame rates (no I/O on the hot path)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

from realtime.redis_client import get_redis, key

# KEYS[1] bucket; ARGV: capacity, refill per second, cost. Redis' own clock, so nodes with
# skewed clocks still agree. Returns {allowed (0/1), retry_after_ms}.
_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = capacity; ts = now end
tokens = math.min(capacity, tokens + (now - ts) * rate / 1000)
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, retry}
"""

# KEYS[1] zset of connection ids scored by lease expiry (ms); ARGV: id, limit, lease ms.
# Expired members are dropped first, so a crashed node's slots free themselves.
_SLOT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(1, tonumber(oldest[2]) - now)}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + 1000)
return {1, 0}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_ms: int = 0


@dataclass(frozen=True)
class Rule:
    """`capacity` events at once, refilled at `per_second` (sustained rate)."""

    capacity: float
    per_second: float


def rule(setting: str) -> Rule:
    capacity, per_seconds = getattr(settings, setting)
    return Rule(capacity=float(capacity), per_second=float(capacity) / float(per_seconds))


async def hit(bucket: str, limit: Rule, cost: float = 1.0) -> Verdict:
    redis = get_redis()
    allowed, retry = await redis.eval(
        _BUCKET_LUA, 1, key("rl", bucket), limit.capacity, limit.per_second, cost
    )
    return Verdict(bool(int(allowed)), int(retry))


async def take_slot(scope: str, member: str, limit: int, lease_seconds: float) -> Verdict:
    """Holds one of `limit` concurrent slots; renew by calling again, free with release_slot."""
    redis = get_redis()
    allowed, retry = await redis.eval(_SLOT_LUA, 1, key("slots", scope), member, limit, int(lease_seconds * 1000))
    return Verdict(bool(int(allowed)), int(retry))


async def renew_slots(slots: list[tuple[str, str]], lease_seconds: float) -> None:
    """Extends many slots in one round trip (the node's periodic resync). Only slots that
    still exist are extended (ZADD XX): a socket that closed while the resync was under way
    has released its slot, and renewing would resurrect it until the lease ran out."""
    if not slots:
        return
    redis = get_redis()
    until = (await redis.time())[0] * 1000 + int(lease_seconds * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        for scope, member in slots:
            pipe.zadd(key("slots", scope), {member: until}, xx=True)
            pipe.pexpire(key("slots", scope), int(lease_seconds * 1000) + 1000)
        await pipe.execute()


def slot_member(client_id: str, conversation_id: str) -> str:
    """A slot is held per socket identity, (conversation, client_id): the identity a reconnect
    replaces (4409). Keyed by client_id alone, one client_id could open a socket in every
    conversation of its user on a single slot, and the limit would not hold."""
    return f"{conversation_id}:{client_id}"


def pending_slot_member(channel_name: str) -> str:
    """The slot of a socket whose conversation is being created: renamed once it exists."""
    return f"new:{channel_name}"


# KEYS[1] slot zset; ARGV: old member, new member. The slot keeps its lease. Added before
# the old one goes: removing a zset's last member deletes the key, and the ZADD would then
# create it again without its expiry.
_RENAME_SLOT_LUA = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score == false then return 0 end
redis.call('ZADD', KEYS[1], score, ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""


async def rename_slot(scope: str, old: str, new: str) -> bool:
    return bool(int(await get_redis().eval(_RENAME_SLOT_LUA, 1, key("slots", scope), old, new)))


async def release_slot(scope: str, member: str) -> None:
    await get_redis().zrem(key("slots", scope), member)


async def release_slots(slots: list[tuple[str, str]]) -> None:
    if not slots:
        return
    async with get_redis().pipeline(transaction=False) as pipe:
        for scope, member in slots:
            pipe.zrem(key("slots", scope), member)
        await pipe.execute()


class LocalBucket:
    """Per-connection frame budget, kept in memory: checked on every inbound frame."""

    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, limit: Rule):
        self.capacity = limit.capacity
        self.rate = limit.per_second
        self.tokens = limit.capacity
        self.stamp = time.monotonic()

    def take(self, cost: float = 1.0) -> Verdict:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return Verdict(True)
        return Verdict(False, int((cost - self.tokens) * 1000 / self.rate) + 1)
