"""Live fan-out of committed events through Redis pub/sub, one subscription per node.

Pub/sub is at-most-once and not durable, like the channel layer: it only tells consumers
that committed events exist; they fill any gap from the event log, and a periodic resync
catches whatever a Redis outage swallowed. It also carries the control messages that end a
socket (`tell`): a socket has no channel-layer channel (realtime/connection/base.py).

Why not a channel-layer group per conversation: channels_redis delivers to each consumer
through the process's channel, one BZPOPMIN round trip per message per socket; at a few
hundred events/s that queue grew without bound (measured: 1,000 messages waiting, seconds
of delay). A node-level subscription gets a pushed stream with no per-message round trip
and hands each message to the sockets of that conversation in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Protocol

import redis
from django.conf import settings

from realtime.core import metrics
from realtime.core.wake import Wake
from realtime.fanout.publish import channel_for
from realtime.fanout.subscription import Subscription
from realtime.infra.redis_client import key

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT = 5.0
# The reader's longest wait for a message between two checks of how long Redis has been silent.
READ_POLL = 1.0
# The payload of the reader's own PINGs: the reader must see every reply to know Redis still
# answers.
PING_PAYLOAD = "tether-fanout-ping"


class Listener(Protocol):
    """A local socket of a conversation (realtime.node.runtime.NodeConnection). The calls are made from
    the fan-out's reader and must not block: they only record what happened and wake the
    socket's sender (or spawn its close)."""

    channel_name: str  # the socket's address for control messages

    def live(self, message: dict) -> None: ...

    def lost_live_feed(self) -> None: ...

    def control(self, action: str) -> None: ...


class FanoutUnavailable(Exception):
    """The live feed cannot be joined now (Redis unreachable): the client should retry."""


class SubscriptionSilent(redis.ConnectionError):
    """Redis stopped answering on the subscription connection without closing it (a partition,
    a blackhole): to the reader, a lost connection."""


class FanoutHub:
    """A node's single pub/sub connection and the local sockets of each conversation."""

    def __init__(self, health_check_interval: float | None = None, reply_timeout: float | None = None) -> None:
        # After this many seconds without anything from Redis the reader pings it, and after
        # `reply_timeout` more without a reply it takes the connection for lost (issue 25: with
        # no socket timeout, a Redis that went silent without closing the connection, a
        # partition, kept the reader waiting forever and the node's sockets without live events).
        self.health_check_interval = (
            settings.REALTIME_FANOUT_PING_INTERVAL if health_check_interval is None else health_check_interval)
        self.reply_timeout = settings.REALTIME_REDIS_TIMEOUT if reply_timeout is None else reply_timeout
        self.members: dict[str, set[Listener]] = {}
        # The conversations this node wants to hear, each with a future resolved when the
        # confirmation of the last SUBSCRIBE sent for it is read (joins wait for it).
        self._confirmed: dict[str, asyncio.Future] = {}
        # The conversations whose SUBSCRIBE went out on the current connection, with no
        # UNSUBSCRIBE since: what the syncer compares `_confirmed` with.
        self._subscribed: set[str] = set()
        # SUBSCRIBEs sent per conversation whose confirmation has not been read yet: only the
        # last one's confirmation means "live now" (an older one may precede an UNSUBSCRIBE).
        self._unconfirmed: dict[str, int] = {}
        self._lock: asyncio.Lock | None = None
        self._pubsub: Any = None  # realtime.fanout.subscription.Subscription
        self._reader: asyncio.Task | None = None
        self._syncer: asyncio.Task | None = None
        self._sync_wake = Wake()  # joins and leaves changed `_confirmed`: the syncer catches up
        # Conversations resubscribed after a lost connection: once their SUBSCRIBE is confirmed,
        # their sockets read the log (what was published meanwhile never reached this node).
        self._catch_up: set[str] = set()
        # While the subscription is lost: when that was noticed (loop time) and how many
        # reconnects were tried since; an outage is logged once when noticed, once when over.
        self._down_since: float | None = None
        self._attempts = 0
        self.reconnects = 0

    async def join(self, conversation_id: str, listener: Listener) -> None:
        """Returns once this node's subscription is live: events committed after this
        returns reach `listener` (or are found by its gap fill)."""
        cid = str(conversation_id)
        if self._down_since is not None:
            # Refused at once rather than after SUBSCRIBE_TIMEOUT: the client comes back later.
            raise FanoutUnavailable("the live feed is down (Redis unreachable)")
        self.members.setdefault(cid, set()).add(listener)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SUBSCRIBE_TIMEOUT
        try:
            await self._ensure_running()
            if cid not in self._confirmed:
                self._confirmed[cid] = confirmed = loop.create_future()
                if cid in self._subscribed and not self._unconfirmed.get(cid):
                    # Left and joined again before the syncer ran: never unsubscribed, and
                    # no confirmation will come.
                    confirmed.set_result(None)
                else:
                    self._sync_wake.set()
            while True:
                confirmed = self._confirmed.get(cid)
                if confirmed is None:
                    raise FanoutUnavailable("subscription dropped")
                try:
                    await asyncio.wait_for(asyncio.shield(confirmed), max(0.01, deadline - loop.time()))
                    return
                except asyncio.CancelledError:
                    if asyncio.current_task().cancelling():
                        raise
                    # The connection was rebuilt meanwhile: wait for the new subscription.
        except asyncio.CancelledError:
            await self.leave(cid, listener)
            raise
        except Exception as exc:
            await self.leave(cid, listener)
            if isinstance(exc, FanoutUnavailable):
                raise
            raise FanoutUnavailable(str(exc) or type(exc).__name__) from exc

    async def leave(self, conversation_id: str, listener: Listener) -> None:
        cid = str(conversation_id)
        members = self.members.get(cid)
        if members is None:
            return
        members.discard(listener)
        if members:
            return
        del self.members[cid]
        confirmed = self._confirmed.pop(cid, None)
        if confirmed is not None:
            confirmed.cancel()
            self._sync_wake.set()

    async def _sync_forever(self) -> None:
        """Brings the subscription in line with `_confirmed`: one UNSUBSCRIBE and one SUBSCRIBE
        for everything that changed since the last pass.

        Why one task instead of a SUBSCRIBE per join under the lock (issue 12): in a burst of
        500 connects on a node already streaming, each join waited its turn at the lock, one
        loop iteration per waiter on a saturated loop, and joins timed out after
        SUBSCRIBE_TIMEOUT (`bench/stream_bench.py --streams 500`: sockets turned away with
        "live feed unavailable"). Here a burst costs one command per loop iteration."""
        while True:
            await self._sync_wake.wait()
            self._sync_wake.clear()
            async with self._lock:
                if self._pubsub is None:
                    continue
                wanted = set(self._confirmed)
                gone, new = self._subscribed - wanted, wanted - self._subscribed
                try:
                    # Bounded: the commands only write to the socket, but a silent connection
                    # must never hold the lock the reader needs to rebuild it.
                    async with asyncio.timeout(self.reply_timeout):
                        if gone:
                            self._subscribed -= gone
                            await self._pubsub.unsubscribe(*(channel_for(cid) for cid in gone))
                        if new:
                            self._subscribed |= new
                            for cid in new:
                                self._unconfirmed[cid] = self._unconfirmed.get(cid, 0) + 1
                            await self._pubsub.subscribe(*(channel_for(cid) for cid in new))
                except asyncio.CancelledError:
                    raise
                except Exception:  # a dead connection: the reader rebuilds it with every member
                    log.debug("updating the subscription failed", exc_info=True)

    async def _ensure_running(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self._reader is not None and not self._reader.done():
            return
        async with self._lock:
            if self._reader is not None and not self._reader.done():
                return
            await self._connect()
            loop = asyncio.get_running_loop()
            self._reader = loop.create_task(self._read_forever(), name="fanout-reader")
            if self._syncer is None or self._syncer.done():
                self._syncer = loop.create_task(self._sync_forever(), name="fanout-syncer")

    async def _connect(self) -> None:
        """A new subscription connection as `_pubsub`, or an error within twice the reply
        timeout (a Redis that accepts the TCP connection but never answers cannot hold it)."""
        # The reader idles for as long as the conversations are quiet: no socket timeout; the
        # reader's own pings find a silent connection.
        pubsub = Subscription(settings.REDIS_URL, connect_timeout=settings.REALTIME_REDIS_TIMEOUT,
                              client_name=f"{settings.REDIS_KEY_PREFIX}-fanout")
        try:
            async with asyncio.timeout(2 * self.reply_timeout):
                await pubsub.connect()
                # Always subscribed to something (from redis-py's PubSub, which checked the
                # health of a connection subscribed to nothing while our reader read it; kept:
                # a connection in subscribed mode from its first moment). Nobody publishes on
                # this channel; the reader ignores its confirmation.
                await pubsub.subscribe(key("fanout", "keepalive"))
        except BaseException:
            await self._discard(pubsub)
            raise
        self._pubsub = pubsub

    async def _discard(self, pubsub: Any) -> None:
        """Closes a subscription connection that is being given up; it may be broken or silent."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.reply_timeout):
                await pubsub.aclose()

    async def _read_forever(self) -> None:
        while True:
            try:
                await self._read_until_lost()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis restarted, unreachable or silent; _lost logs a bug's traceback
                self._lost(exc)
            backoff = 0.1
            while True:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if await self._resubscribe():
                    break

    async def _read_until_lost(self) -> None:
        """Reads and dispatches until the connection fails, or until Redis, quiet for
        `health_check_interval`, does not answer a PING within `reply_timeout`."""
        loop = asyncio.get_running_loop()
        heard, pinged_at = loop.time(), None
        while True:
            due = heard + self.health_check_interval if pinged_at is None else pinged_at + self.reply_timeout
            wait = min(READ_POLL, max(0.01, due - loop.time()))
            # Every message that arrived since the last read, in one call (one wake-up per read
            # from the socket, not per message: realtime/fanout/subscription.py).
            messages = await self._pubsub.get_messages(timeout=wait)
            now = loop.time()
            if not messages:
                if pinged_at is not None and now - pinged_at >= self.reply_timeout:
                    raise SubscriptionSilent(f"no reply from Redis for {now - heard:.1f} s")
                if pinged_at is None and now - heard >= self.health_check_interval:
                    await self._pubsub.ping(PING_PAYLOAD)
                    pinged_at = loop.time()
                continue
            heard, pinged_at = now, None
            if self._down_since is not None:
                self._back(now)
            for message in messages:
                self._dispatch(message)

    def _lost(self, exc: Exception) -> None:
        """Logs the start of an outage once (a connection lost again before Redis answered on
        it belongs to the same outage)."""
        if self._down_since is not None:
            log.debug("fan-out subscription still down: %r", exc)
            return
        self._down_since = asyncio.get_running_loop().time()
        self._attempts = 0
        expected = isinstance(exc, redis.RedisError | OSError | TimeoutError)
        log.warning(
            "fan-out subscription lost (%s: %s); resubscribing, sockets catch up from the log once it is back",
            type(exc).__name__, exc, exc_info=not expected,
        )

    def _back(self, now: float) -> None:
        log.warning(
            "fan-out subscription back after %.1f s (%d attempts); the sockets of %d conversations catch up "
            "from the log", now - self._down_since, self._attempts, len(self._catch_up),
        )
        self._down_since = None

    def _dispatch(self, message: dict) -> None:
        kind = message["type"]
        channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
        cid = channel.rsplit(":", 1)[-1] if channel else ""
        if kind == "subscribe":
            unconfirmed = self._unconfirmed.pop(cid, 0)
            if unconfirmed > 1:
                self._unconfirmed[cid] = unconfirmed - 1  # a later SUBSCRIBE is still on its way
                return
            confirmed = self._confirmed.get(cid)
            if unconfirmed == 1:
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)
                if cid in self._catch_up:
                    # Resubscribed after a lost connection, live again from now: what was
                    # published meanwhile is in the log.
                    self._catch_up.discard(cid)
                    for listener in list(self.members.get(cid, ())):
                        listener.lost_live_feed()
            elif confirmed is not None and confirmed.done():
                # A confirmation nobody waits for: the subscription was made again behind our
                # back (never by realtime/fanout/subscription.py, which does not reconnect by
                # itself). Whatever was published in between may be lost to this node, so its
                # sockets catch up from the log.
                self.reconnects += 1
                for listener in list(self.members.get(cid, ())):
                    listener.lost_live_feed()
        elif kind == "message":
            # Handed to each socket synchronously: a socket only records the news and wakes its
            # own sender, so a slow socket holds up nobody (we found a task per delivery cost
            # more than the delivery itself at hundreds of events per second).
            payload = json.loads(message["data"])
            if payload.get("type") == "conn.control":
                to = set(payload["to"])
                for listener in list(self.members.get(cid, ())):
                    if listener.channel_name in to:
                        listener.control(payload["action"])
                return
            metrics.fanout_arrived(payload.get("ts"))
            for listener in list(self.members.get(cid, ())):
                listener.live(payload)

    async def _resubscribe(self) -> bool:
        """After a lost connection: a new subscription for every local conversation; each
        conversation's sockets catch up from the log once its SUBSCRIBE is confirmed (what was
        published meanwhile is gone). False if Redis is still unreachable."""
        async with self._lock:
            old, self._pubsub = self._pubsub, None
            for confirmed in self._confirmed.values():
                confirmed.cancel()
            self._confirmed, self._subscribed, self._unconfirmed = {}, set(), {}
            if old is not None:
                await self._discard(old)
            self._attempts += 1
            try:
                await self._connect()
                for cid in list(self.members):
                    self._confirmed[cid] = asyncio.get_running_loop().create_future()
                if self._confirmed:
                    self._subscribed = set(self._confirmed)
                    self._unconfirmed = dict.fromkeys(self._confirmed, 1)
                    self._catch_up = set(self._confirmed)
                    async with asyncio.timeout(self.reply_timeout):
                        await self._pubsub.subscribe(*(channel_for(cid) for cid in self._confirmed))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - still down (logged once by _lost): the reader retries with backoff
                log.debug("resubscribing failed: %r", exc)
                if self._pubsub is not None:
                    await self._discard(self._pubsub)
                    self._pubsub = None
                return False
        self.reconnects += 1
        return True

    async def stop(self) -> None:
        for task in (self._reader, self._syncer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._reader = self._syncer = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):  # shutting down
                await self._pubsub.aclose()
            self._pubsub = None
        self.members.clear()
        self._confirmed.clear()
        self._subscribed.clear()
        self._unconfirmed.clear()
        self._catch_up.clear()
        self._down_since = None
        self._lock = None
