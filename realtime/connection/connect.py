"""The connect of a socket, step by step: token, limits (rate and slot in one call) with the live
feed joined beside them, session, `ready` (a mixin of realtime.connection.consumer.ConversationConsumer,
whose fields it uses).

Rule: what a step acquires is recorded on the consumer at once, and after every await the
connect asks `_still_open`, which gives back what was acquired if the socket closed meanwhile;
so a close at any await leaves no row, slot or feed member behind (tests/test_connect_cleanup.py).
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from realtime.connection.base import check_limit
from realtime.connection.phase_timer import PhaseTimer
from realtime.core import buckets, metrics
from realtime.core import protocol as p
from realtime.fanout import publish as fanout
from realtime.fanout.hub import FanoutUnavailable
from realtime.infra import logcontext, ratelimit
from realtime.infra.db import db
from realtime.infra.outage import DATABASE
from realtime.infra.transient import warn_failed
from sessions_app import services, tokens

log = logging.getLogger("realtime.connection.consumer")

# Events read with the session itself: `ready` waits for them, so few (the rest of a long
# replay is read while these are sent). We found 500 here put `ready` of a 1,000-event resume
# 3-4x later than of a 1-event one.
FIRST_REPLAY_BATCH = 100


class ConnectSteps:

    async def _connect(self, frame: p.Connect) -> None:
        loop = asyncio.get_running_loop()
        timer = PhaseTimer(loop.time())
        try:
            identity = tokens.verify_access_token(frame.token)
        except tokens.InvalidToken as exc:
            await self._perform(self.state.token_refused(str(exc), tokens.is_expired_but_genuine(frame.token)))
            return
        self.user_id = identity.user_id
        self.state.identified(identity.expires_at)
        self._watchdog_wake.set()
        timer.mark("token", loop.time())
        if DATABASE.refusing():  # known to be out: no limit taken, no feed joined for nothing
            await self._database_unavailable()
            return
        if not await self._limits_and_feed(frame, timer):
            return
        timer.mark("join", loop.time())
        with DATABASE.admit() as admitted:
            if not admitted:
                await self._database_unavailable()
                return
            try:
                opened = await db(services.open_session)(
                    user_id=identity.user_id,
                    conversation_id=frame.conversation_id,
                    client_id=frame.client_id,
                    channel_name=self.channel_name,
                    node=self.node.node_id,
                    remote_addr=self.remote_addr,
                    resumed_from_seq=frame.last_seq,
                    token_sid=identity.standing.sid,
                    token_generation=identity.standing.generation,
                    replay_limit=min(FIRST_REPLAY_BATCH, self.state.limits.replay_batch),
                )
            except services.ServiceError as exc:
                await self._perform(self.state.connect_failed(exc.code, str(exc)))
                return
        self.connection_id = opened.connection_id
        self.conversation_id = opened.conversation_id
        logcontext.bind(conversation_id=opened.conversation_id, connection_id=opened.connection_id)
        timer.mark("open_session", loop.time())
        if not await self._still_open():
            return
        if frame.conversation_id is None:
            await self._rename_slot(ratelimit.slot_member(frame.client_id, opened.conversation_id))
            if not await self._still_open() or not await self._join(opened.conversation_id):
                return
        ready = self.state.opened(
            conversation_id=opened.conversation_id,
            client_last_seq=frame.last_seq,
            last_seq=opened.last_seq,
            first_kept_seq=opened.first_kept_seq,
            created=opened.created,
            intact=opened.intact,
            node=self.node.node_id,
            frames=opened.frames,
        )
        await self._perform(ready)
        timer.mark("ready", loop.time())
        if ready:
            plan = ready[0].frame
            metrics.connect_ready(frame.conversation_id is not None, plan["resumed"], plan["replay_count"],
                                  loop.time() - timer.marks[0][1])
            log.info("connection ready", extra={"seq": opened.last_seq, "resumed": plan["resumed"]})
        timer.conversation_id = opened.conversation_id
        self._replay_timer = (timer, self.state.sent_seq, opened.last_seq)
        if self.state.sent_seq >= opened.last_seq:
            self._replayed()  # nothing to replay
        self._sender_wake.set()
        self._watchdog_wake.set()
        # The replaced sockets listen on this conversation's feed; their rows are closed
        # already, so one that misses this ends at its next resync anyway. Told after `ready`:
        # the new socket need not wait for a Redis round trip (on a busy node each one waits
        # for the loop).
        await fanout.tell(opened.conversation_id, "replaced", opened.replaced_channels)

    async def _database_unavailable(self) -> None:
        """While the database is out, one connect of the process at a time tries it (within
        REALTIME_DB_TIMEOUT); the others are told at once to resume after `retry_after_ms`,
        instead of queueing for the database threads behind calls that wait for their
        deadline (realtime/infra/outage.py)."""
        await self._perform(self.state.connect_failed("unavailable", "database unavailable; resume shortly"))

    async def _limits_and_feed(self, frame: p.Connect, timer: PhaseTimer) -> bool:
        """The limits, then (for a resume) the live feed; False if the connect ends here.

        A resume joins the feed while its limits are checked: the join is a Redis round trip of
        its own, and on a node busy streaming each round trip waits for the loop (we measured
        42-213 ms per connect phase in a rolling restart). The join completes before the log is
        read, so an event committed between the read and the join cannot fall between the
        replay and the live feed; a refused connect leaves the feed again."""
        joining = None
        if frame.conversation_id is not None:
            joining = asyncio.ensure_future(self._join_feed(frame.conversation_id))
        proceeding = False
        try:
            if not await self._take_limits(frame, timer):
                return False
            if joining is not None and not await self._joined(await joining, frame.conversation_id):
                return False
            proceeding = True
            return True
        finally:
            if joining is not None and not proceeding:
                # The connect ends here (refused, failed or closed): a join still under way is
                # stopped, and what it took, even after the close's own release, goes back.
                joining.cancel()
                await asyncio.gather(joining, return_exceptions=True)
                await self._release()

    async def _take_limits(self, frame: p.Connect, timer: PhaseTimer) -> bool:
        """The per-user connect rate and a concurrent-connection slot, in one round trip;
        False if refused or the socket closed meanwhile."""
        member = (
            ratelimit.slot_member(frame.client_id, frame.conversation_id)
            if frame.conversation_id is not None
            else ratelimit.pending_slot_member(self.channel_name)
        )
        verdict = await check_limit(ratelimit.take_connect(
            f"user:{self.user_id}", ratelimit.rule("REALTIME_RATE_CONNECT_USER"), member,
            settings.REALTIME_MAX_CONNECTIONS_PER_USER, _slot_lease(), owner=self.channel_name,
        ))
        if verdict.allowed:
            self.slot = member
        timer.mark("limits", asyncio.get_running_loop().time())
        if verdict.refused_by == 0:
            return await self._passed(verdict, "connect_user", "user")
        return await self._passed(verdict, "connections_per_user", "slots")

    async def _passed(self, verdict: buckets.Verdict, metric: str, limit: str) -> bool:
        """After a limit's await: False if the socket closed meanwhile (undone) or the limit
        refused it (counted under `metric`, the client told which `limit` and when to retry)."""
        if not await self._still_open():
            return False
        if not verdict.allowed:
            metrics.RATE_LIMITED.labels(metric).inc()
            await self._perform(self.state.limited(limit, verdict.retry_after_ms))
            return False
        return True

    async def _still_open(self) -> bool:
        """Called after every await of the connect: if the socket closed meanwhile (watchdog,
        drain, client gone), gives back what the connect acquired since the close's own release."""
        if self.state.closed:
            await self._release()
            return False
        return True

    async def _join(self, conversation_id: str) -> bool:
        return await self._joined(await self._join_feed(conversation_id), conversation_id)

    async def _join_feed(self, conversation_id: str) -> FanoutUnavailable | None:
        """Joins the live feed and records it at once; a failure is returned, not reported, so
        that this can run beside the limits (the connect reports it with `_joined`)."""
        try:
            await self.node.fanout.join(conversation_id, self)
        except FanoutUnavailable as exc:
            return exc
        self.joined_feed = conversation_id
        return None

    async def _joined(self, failure: FanoutUnavailable | None, conversation_id: str) -> bool:
        if failure is not None:
            log.warning("live feed unavailable for %s: %s", conversation_id, failure)
            await self._perform(self.state.connect_failed("feed_unavailable", "live feed unavailable; reconnect"))
            return False
        return await self._still_open()

    async def _rename_slot(self, member: str) -> None:
        """The new conversation has its id: its slot takes the name a resume will use."""
        if self.slot is None:
            return
        try:
            if await ratelimit.rename_slot(f"user:{self.user_id}", self.slot, member, owner=self.channel_name):
                self.slot = member
        # Limits fail open; the pending name is released at close.
        except Exception as exc:  # noqa: BLE001 - warn_failed logs a bug's traceback
            warn_failed(log, "renaming connection slot failed", exc=exc)


def _slot_lease() -> float:
    return ratelimit.slot_lease(settings.REALTIME_RESYNC_INTERVAL, settings.REALTIME_HEARTBEAT_TIMEOUT)
