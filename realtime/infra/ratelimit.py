"""Rate limits shared by all nodes: token buckets evaluated atomically in Redis (one Lua call
per check), and the connection slots. The arithmetic of a bucket kept in memory (per-socket
frame rates) is realtime/core/buckets.py."""

from __future__ import annotations

from django.conf import settings

from realtime.core.buckets import LocalBuckets, Rule, Verdict, share_of, share_of_count
from realtime.infra.redis_client import get_pipeline, get_redis, key
from realtime.infra.resp import Script

# The scripts below are put together from these pieces (one round trip each, evaluated
# atomically). Redis' own clock, so nodes with skewed clocks still agree.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# keys: the buckets; args: capacity and refill per second of each bucket in turn. Allowed only
# if every bucket has `cost` tokens, and then taken from all of them, so that a refusal by one
# bucket does not use up another. Returns allowed (0/1), retry_after_ms and the index (from 0)
# of the bucket that makes the caller wait longest.
_TAKE_BUCKETS = """
local function take_buckets(keys, args, cost)
  local n = #keys
  local levels = {}
  local retry = 0
  local which = 0
  for i = 1, n do
    local capacity = tonumber(args[2 * i - 1])
    local rate = tonumber(args[2 * i])
    local state = redis.call('HMGET', keys[i], 'tokens', 'ts')
    local tokens = tonumber(state[1])
    local ts = tonumber(state[2])
    if tokens == nil then tokens = capacity; ts = now end
    tokens = math.min(capacity, tokens + (now - ts) * rate / 1000)
    levels[i] = tokens
    if tokens < cost then
      local wait = math.ceil((cost - tokens) * 1000 / rate)
      if wait > retry then retry = wait; which = i - 1 end
    end
  end
  local allowed = 0
  if retry == 0 then allowed = 1 end
  for i = 1, n do
    local capacity = tonumber(args[2 * i - 1])
    local rate = tonumber(args[2 * i])
    local tokens = levels[i]
    if allowed == 1 then tokens = tokens - cost end
    redis.call('HSET', keys[i], 'tokens', tokens, 'ts', now)
    redis.call('PEXPIRE', keys[i], math.ceil(capacity * 1000 / rate) + 1000)
  end
  return allowed, retry, which
end
"""

# slots: zset of socket identities scored by lease expiry (ms); owners: hash identity -> the
# socket (channel name) holding it now. Expired members are dropped first, so a crashed node's
# slots free themselves. A reconnect of the same identity takes its slot over (it becomes the
# owner): only the owner's release frees it. Returns allowed (0/1) and retry_after_ms.
_TAKE_SLOT = """
local function take_slot(slots, owners, member, limit, lease, owner)
  local expired = redis.call('ZRANGEBYSCORE', slots, '-inf', now)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    redis.call('HDEL', owners, unpack(expired))
  end
  if redis.call('ZSCORE', slots, member) == false and redis.call('ZCARD', slots) >= limit then
    local oldest = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
    return 0, math.max(1, tonumber(oldest[2]) - now)
  end
  redis.call('ZADD', slots, now + lease, member)
  redis.call('HSET', owners, member, owner)
  redis.call('PEXPIRE', slots, lease + 1000)
  redis.call('PEXPIRE', owners, lease + 1000)
  return 1, 0
end
"""

# KEYS: the buckets; ARGV: capacity and refill per second of each bucket in turn, then the cost.
_BUCKETS_LUA = Script(_NOW + _TAKE_BUCKETS + """
local allowed, retry, which = take_buckets(KEYS, ARGV, tonumber(ARGV[2 * #KEYS + 1]))
return {allowed, retry, which}
""")

# A connect's limits in one round trip. KEYS: slot zset, slot owners, the user's connect
# bucket and (a connect that creates a conversation) its new-conversation bucket; ARGV:
# identity, limit, lease ms, owner, then capacity and refill per second of each bucket. The
# slot is taken only if the rates allow; a slot refusal still spends the tokens, as separate
# calls did. Returns allowed (0/1), retry_after_ms and which refused (0 the connect rate, 1 the
# slot, 2 the new-conversation rate, -1 none).
_CONNECT_LUA = Script(_NOW + _TAKE_BUCKETS + _TAKE_SLOT + """
local buckets = {}
local rates = {}
for i = 3, #KEYS do
  buckets[#buckets + 1] = KEYS[i]
  rates[#rates + 1] = ARGV[5 + 2 * (i - 3)]
  rates[#rates + 1] = ARGV[6 + 2 * (i - 3)]
end
local allowed, retry, which = take_buckets(buckets, rates, 1)
if allowed == 0 then
  if which == 0 then return {0, retry, 0} end
  return {0, retry, 2}
end
allowed, retry = take_slot(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
if allowed == 0 then return {0, retry, 1} end
return {1, 0, -1}
""")

# KEYS[1] slot zset, KEYS[2] owners; ARGV: identity, owner. A socket that was replaced no
# longer owns the identity it shares with its successor, so its release is a no-op. A slot with
# no owner recorded (taken before owners were) is released.
_RELEASE_SLOT_LUA = Script("""
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if owner and owner ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
""")

# KEYS[1] slot zset, KEYS[2] owners; ARGV: old identity, new identity, owner. The slot keeps its
# lease. Added before the old one goes: removing a zset's last member deletes the key, and the
# ZADD would then create it again without its expiry.
_RENAME_SLOT_LUA = Script("""
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score == false or redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[3] then return 0 end
redis.call('ZADD', KEYS[1], score, ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
""")


def rule(setting: str) -> Rule:
    capacity, per_seconds = getattr(settings, setting)
    return Rule(capacity=float(capacity), per_second=float(capacity) / float(per_seconds))


async def hit(bucket: str, limit: Rule, cost: float = 1.0) -> Verdict:
    return await hit_all([(bucket, limit)], cost)


async def hit_all(buckets: list[tuple[str, Rule]], cost: float = 1.0) -> Verdict:
    """One event against several buckets at once: allowed only if all allow it.
    `refused_by` is the index of the bucket that makes the client wait longest."""
    args: list[float] = []
    for _, limit in buckets:
        args += [limit.capacity, limit.per_second]
    allowed, retry, which = await get_pipeline().eval(
        _BUCKETS_LUA, [key("rl", b) for b, _ in buckets], [*args, cost]
    )
    return Verdict(bool(int(allowed)), int(retry), int(which) if not int(allowed) else None)


async def take_connect(scope: str, limit: Rule, member: str, slots: int, lease_seconds: float,
                       owner: str, new_conversation: Rule | None = None) -> Verdict:
    """A connect's limits in one round trip: one token of `scope`'s connect rate (as `hit`)
    and, for a connect that creates a conversation, one of its `new_conversation` rate, then one
    of its `slots` concurrent-connection slots for `owner`; renew them with renew_slots, free
    one with release_slot (by the same owner).
    `refused_by`: 0 the connect rate, 1 the slot, 2 the new-conversation rate.

    Why one call (issue 12): every round trip of a connect waits for the node's loop, and on a
    node busy streaming we measured 42-213 ms per round trip in a rolling restart."""
    buckets = [key("rl", scope)]
    rates: list[float] = [limit.capacity, limit.per_second]
    if new_conversation is not None:
        buckets.append(key("rl", f"{scope}:new-conversations"))
        rates += [new_conversation.capacity, new_conversation.per_second]
    allowed, retry, which = await get_pipeline().eval(
        _CONNECT_LUA, [*_slot_keys(scope), *buckets], [member, slots, int(lease_seconds * 1000), owner, *rates],
    )
    return Verdict(bool(int(allowed)), int(retry), int(which) if not int(allowed) else None)


# --- when Redis cannot be asked --------------------------------------------------------------
# A shared limit that cannot be checked (Redis down or slow, or the pool exhausted: load alone
# made checks fail by the hundred in a connect storm, issue 12) must not allow everything: a
# connect storm would buy unlimited agent runs and password guesses. The expensive ones (runs
# per user, logins) refuse (fail closed); the others fall back to this node's share of the
# limit, kept in memory: the limit divided by the live nodes last seen in the registry.

FALLBACK = LocalBuckets()
_live_nodes = 1


def note_live_nodes(count: int) -> None:
    """The registry's live node count, as last read (the reaper reads it every interval)."""
    global _live_nodes
    _live_nodes = max(1, count)


def live_nodes_estimate() -> int:
    """The live node count last seen; 1 until the registry was read once."""
    return _live_nodes


def fallback_hit(bucket: str, limit: Rule, cost: float = 1.0) -> Verdict:
    """`hit` against this node's share of the limit, in memory."""
    return FALLBACK.take(bucket, share_of(limit, live_nodes_estimate()), cost)


def fallback_slots(limit: int) -> int:
    """This node's share of a per-user concurrent-connection limit."""
    return share_of_count(limit, live_nodes_estimate())


def slot_lease(resync_interval: float, heartbeat_timeout: float) -> float:
    """A slot outlives three missed resyncs (every resync renews it): slots of a crashed node
    free themselves."""
    return 3 * resync_interval + heartbeat_timeout


def _slot_keys(scope: str) -> tuple[str, str]:
    return key("slots", scope), key("slot-owners", scope)


# keys: each scope's slots and owners keys in turn; args: the lease (ms), then for each scope
# the number of its members and the members. One command for a whole resync batch: a pipeline
# of three commands per socket (ZADD, two PEXPIREs) was half of an idle node's CPU, redis-py
# reading each reply under a timeout of its own (issue 22: py-spy at 2,000 idle sockets).
_RENEW_SLOTS_LUA = Script(_NOW + """
local lease = tonumber(ARGV[1])
local expires = now + lease
local a = 2
for i = 1, #KEYS, 2 do
  local n = tonumber(ARGV[a])
  for j = 1, n do
    redis.call('ZADD', KEYS[i], 'XX', expires, ARGV[a + j])
  end
  a = a + n + 1
  redis.call('PEXPIRE', KEYS[i], lease + 1000)
  redis.call('PEXPIRE', KEYS[i + 1], lease + 1000)
end
return 1
""")


async def renew_slots(slots: list[tuple[str, str]], lease_seconds: float) -> None:
    """Extends many slots in one round trip (the node's periodic resync). Only slots that
    still exist are extended (ZADD XX): a socket that closed while the resync was under way
    has released its slot, and renewing would resurrect it until the lease ran out."""
    if not slots:
        return
    by_scope: dict[str, list[str]] = {}
    for scope, member in slots:
        by_scope.setdefault(scope, []).append(member)
    keys: list[str] = []
    args: list[str | int] = [int(lease_seconds * 1000)]
    for scope, members in by_scope.items():
        keys.extend(_slot_keys(scope))
        args.append(len(members))
        args.extend(members)
    await get_pipeline().eval(_RENEW_SLOTS_LUA, keys, args)


def slot_member(client_id: str, conversation_id: str) -> str:
    """A slot is held per socket identity, (conversation, client_id): the identity a reconnect
    replaces (4409). Keyed by client_id alone, one client_id could open a socket in every
    conversation of its user on a single slot, and the limit would not hold."""
    return f"{conversation_id}:{client_id}"


def pending_slot_member(channel_name: str) -> str:
    """The slot of a socket whose conversation is being created: renamed once it exists."""
    return f"new:{channel_name}"


async def rename_slot(scope: str, old: str, new: str, owner: str) -> bool:
    return bool(int(await get_pipeline().eval(_RENAME_SLOT_LUA, _slot_keys(scope), [old, new, owner])))


async def release_slot(scope: str, member: str, owner: str | None = None) -> bool:
    """Frees a slot if `owner` still holds it (None: whoever holds it)."""
    if owner is None:
        await release_slots([(scope, member)])
        return True
    return bool(int(await get_pipeline().eval(_RELEASE_SLOT_LUA, _slot_keys(scope), [member, owner])))


async def release_slots(slots: list[tuple[str, str]]) -> None:
    """Frees slots whoever holds them (the reaper, for sockets of dead nodes)."""
    if not slots:
        return
    async with get_redis().pipeline(transaction=False) as pipe:
        for scope, member in slots:
            slots_key, owners_key = _slot_keys(scope)
            pipe.zrem(slots_key, member)
            pipe.hdel(owners_key, member)
        await pipe.execute()
