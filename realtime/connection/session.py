"""A socket's session: the connect, step by step, and what it holds until `release()`.

The connect: token, limits (the user's connect rate and a connection slot, in one call) with the
live feed joined beside them, the session row and the replay's first batch, `ready`. What it
takes is owned here: the user, the slot, the feed membership, the connection row (and the
conversation they belong to).

Rule: what a step acquires is recorded here at once, and after every await the connect asks
`_still_open`, which gives back what was acquired if the socket closed meanwhile; so a close at
any await leaves no row, slot or feed member behind (tests/test_connect_cleanup.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from django.conf import settings

from realtime.connection import state as cs
from realtime.connection.base import check_limit
from realtime.connection.phase_timer import PhaseTimer
from realtime.core import buckets, metrics
from realtime.core import protocol as p
from realtime.fanout import publish as fanout
from realtime.fanout.hub import FanoutUnavailable, Listener
from realtime.infra import logcontext, ratelimit
from realtime.infra.db import db
from realtime.infra.outage import DATABASE
from realtime.infra.transient import warn_failed
from realtime.node.resync import UnclosedRow, close_row
from realtime.node.runtime import NodeRuntime
from sessions_app import services, tokens

log = logging.getLogger("realtime.connection")

# Events read with the session itself: `ready` waits for them, so few (the rest of a long
# replay is read while these are sent). We found 500 here put `ready` of a 1,000-event resume
# 3-4x later than of a 1-event one.
FIRST_REPLAY_BATCH = 100


class Socket(Listener, Protocol):
    """What a session may touch on its socket (realtime.connection.consumer.ConversationConsumer):
    the state machine it feeds, the node it lives on, the socket's own address (the slot's
    owner, the row's `channel_name`) and client address, and the socket's ways to act. The
    socket is also the live feed's listener of the conversation it joins."""

    state: cs.ConnectionState
    node: NodeRuntime
    channel_name: str
    remote_addr: str

    async def perform(self, actions: list[cs.Action]) -> None:
        """Performs the state machine's actions (send, close, ...)."""

    def woken(self) -> None:
        """The state changed: the sender and the watchdog look again."""

    def replay_started(self, timer: PhaseTimer, upto: int) -> None:
        """`ready` is out: the connect's timer goes on until the replay up to `upto` is sent."""


class Session:
    """One socket's connect and what it holds. Every field is set as soon as it is acquired and
    taken off again by `release`, which gives it back."""

    def __init__(self, socket: Socket) -> None:
        self.socket = socket
        self.user_id: str | None = None
        self.client_id: str | None = None  # the connect's client_id: who answers an approval
        self.slot: str | None = None  # identity of the concurrent-connection slot held
        self.joined_feed: str | None = None  # conversation whose live feed this socket is in
        self.conversation_id: str | None = None  # set once the session is open; kept after release
        self.connection_id: str | None = None  # the open Connection row

    @property
    def state(self) -> cs.ConnectionState:
        return self.socket.state

    # --- the connect ----------------------------------------------------------------------

    async def connect(self, frame: p.Connect) -> None:
        socket, state = self.socket, self.state
        loop = asyncio.get_running_loop()
        timer = PhaseTimer(loop.time())
        try:
            identity = tokens.verify_access_token(frame.token)
        except tokens.InvalidToken as exc:
            await socket.perform(state.token_refused(str(exc), tokens.is_expired_but_genuine(frame.token)))
            return
        self.user_id = identity.user_id
        self.client_id = frame.client_id
        state.identified(identity.expires_at)
        socket.woken()
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
                    channel_name=socket.channel_name,
                    node=socket.node.node_id,
                    remote_addr=socket.remote_addr,
                    resumed_from_seq=frame.last_seq,
                    token_sid=identity.standing.sid,
                    token_generation=identity.standing.generation,
                    replay_limit=min(FIRST_REPLAY_BATCH, state.limits.replay_batch),
                )
            except services.ServiceError as exc:
                await socket.perform(state.connect_failed(exc.code, str(exc)))
                return
        self.connection_id = opened.connection_id
        self.conversation_id = opened.conversation_id
        logcontext.bind(conversation_id=opened.conversation_id, connection_id=opened.connection_id,
                        client_id=frame.client_id)
        timer.mark("open_session", loop.time())
        if not await self._still_open():
            return
        if frame.conversation_id is None:
            await self._rename_slot(ratelimit.slot_member(frame.client_id, opened.conversation_id))
            if not await self._still_open() or not await self._join(opened.conversation_id):
                return
        ready = state.opened(
            conversation_id=opened.conversation_id,
            client_last_seq=frame.last_seq,
            last_seq=opened.last_seq,
            first_kept_seq=opened.first_kept_seq,
            created=opened.created,
            intact=opened.intact,
            node=socket.node.node_id,
            frames=opened.frames,
        )
        await socket.perform(ready)
        timer.mark("ready", loop.time())
        if ready:
            plan = ready[0].frame
            metrics.connect_ready(frame.conversation_id is not None, plan["resumed"], plan["replay_count"],
                                  loop.time() - timer.marks[0][1])
            log.info("connection ready", extra={"seq": opened.last_seq, "resumed": plan["resumed"],
                                                "replay_count": plan["replay_count"]})
        timer.conversation_id = opened.conversation_id
        socket.replay_started(timer, opened.last_seq)
        socket.woken()
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
        await self.socket.perform(self.state.connect_failed("unavailable", "database unavailable; resume shortly"))

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
                await self.release()

    async def _take_limits(self, frame: p.Connect, timer: PhaseTimer) -> bool:
        """The per-user connect rate and a concurrent-connection slot, in one round trip;
        False if refused or the socket closed meanwhile."""
        owner = self.socket.channel_name
        member = (
            ratelimit.slot_member(frame.client_id, frame.conversation_id)
            if frame.conversation_id is not None
            else ratelimit.pending_slot_member(owner)
        )
        creating = frame.conversation_id is None
        new_conversations = ratelimit.rule("REALTIME_RATE_NEW_CONVERSATIONS_USER") if creating else None
        verdict = await check_limit(
            ratelimit.take_connect(
                f"user:{self.user_id}", ratelimit.rule("REALTIME_RATE_CONNECT_USER"), member,
                settings.REALTIME_MAX_CONNECTIONS_PER_USER, _slot_lease(), owner=owner,
                new_conversation=new_conversations,
            ),
            fallback=lambda: self._local_limits(new_conversations),
        )
        if verdict.allowed:
            self.slot = member
        timer.mark("limits", asyncio.get_running_loop().time())
        if verdict.refused_by == 0:
            return await self._passed(verdict, "connect_user", "user")
        if verdict.refused_by == 2:
            return await self._passed(verdict, "new_conversations_user", "conversations")
        return await self._passed(verdict, "connections_per_user", "slots")

    def _local_limits(self, new_conversations: buckets.Rule | None) -> buckets.Verdict:
        """The connect's limits when Redis cannot be asked: this node's share of each, kept in
        memory (realtime.infra.ratelimit, "when Redis cannot be asked"). The slots are counted
        among this node's own sockets of the user."""
        scope = f"user:{self.user_id}"
        verdict = ratelimit.fallback_hit(scope, ratelimit.rule("REALTIME_RATE_CONNECT_USER"))
        if not verdict.allowed:
            return buckets.Verdict(False, verdict.retry_after_ms, 0)
        if new_conversations is not None:
            verdict = ratelimit.fallback_hit(f"{scope}:new-conversations", new_conversations)
            if not verdict.allowed:
                return buckets.Verdict(False, verdict.retry_after_ms, 2)
        held = sum(1 for s in _sessions_on(self.socket.node)
                   if s is not self and s.user_id == self.user_id and s.slot is not None)
        if held >= ratelimit.fallback_slots(settings.REALTIME_MAX_CONNECTIONS_PER_USER):
            return buckets.Verdict(False, self.state.limits.unavailable_retry_ms, 1)
        return buckets.Verdict(True)

    async def _passed(self, verdict: buckets.Verdict, metric: str, limit: str) -> bool:
        """After a limit's await: False if the socket closed meanwhile (undone) or the limit
        refused it (counted under `metric`, the client told which `limit` and when to retry)."""
        if not await self._still_open():
            return False
        if not verdict.allowed:
            metrics.RATE_LIMITED.labels(metric).inc()
            await self.socket.perform(self.state.limited(limit, verdict.retry_after_ms))
            return False
        return True

    async def _still_open(self) -> bool:
        """Called after every await of the connect: if the socket closed meanwhile (watchdog,
        drain, client gone), gives back what the connect acquired since the close's own release."""
        if self.state.closed:
            await self.release()
            return False
        return True

    async def _join(self, conversation_id: str) -> bool:
        return await self._joined(await self._join_feed(conversation_id), conversation_id)

    async def _join_feed(self, conversation_id: str) -> FanoutUnavailable | None:
        """Joins the live feed and records it at once; a failure is returned, not reported, so
        that this can run beside the limits (the connect reports it with `_joined`)."""
        try:
            await self.socket.node.fanout.join(conversation_id, self.socket)
        except FanoutUnavailable as exc:
            return exc
        self.joined_feed = conversation_id
        return None

    async def _joined(self, failure: FanoutUnavailable | None, conversation_id: str) -> bool:
        if failure is not None:
            log.warning("live feed unavailable for %s: %s", conversation_id, failure)
            await self.socket.perform(self.state.connect_failed("feed_unavailable", "live feed unavailable; reconnect"))
            return False
        return await self._still_open()

    async def _rename_slot(self, member: str) -> None:
        """The new conversation has its id: its slot takes the name a resume will use."""
        if self.slot is None:
            return
        try:
            if await ratelimit.rename_slot(f"user:{self.user_id}", self.slot, member, owner=self.socket.channel_name):
                self.slot = member
        # Limits fail open; the pending name is released at close.
        except Exception as exc:  # noqa: BLE001 - warn_failed logs a bug's traceback
            warn_failed(log, "renaming connection slot failed", exc=exc)

    # --- giving back ----------------------------------------------------------------------

    async def release(self) -> None:
        """Gives back whatever the session holds now. Safe to call more than once, and from
        several tasks at once. Shielded: an ending task cancelled while it releases (the
        client's disconnect cancels the watchdog that was closing the socket) must not leave a
        resource taken off the session but never given back."""
        await asyncio.shield(asyncio.ensure_future(self._release_now()))

    async def _release_now(self) -> None:
        # Each resource is taken off the session before its release is awaited, so concurrent
        # calls never release one twice.
        socket, state = self.socket, self.state
        slot, self.slot = self.slot, None
        if slot is not None:
            # A no-op for a replaced socket: its successor owns the identity they share. If Redis
            # cannot be asked, the slot's lease frees it (it is no longer renewed).
            try:
                await ratelimit.release_slot(f"user:{self.user_id}", slot, owner=socket.channel_name)
            except Exception as exc:  # noqa: BLE001 - warn_failed logs a bug's traceback
                warn_failed(log, "releasing connection slot failed; its lease will free it", exc=exc)
        feed, self.joined_feed = self.joined_feed, None
        if feed is not None:
            await socket.node.fanout.leave(feed, socket)
        connection_id, self.connection_id = self.connection_id, None
        if connection_id is not None:
            code, reason = state.ended or (None, "closed")
            row = UnclosedRow(connection_id, self.conversation_id, state.unflushed_ack(), code, reason, state.sent_seq)
            try:
                await close_row(row)
            except Exception as exc:  # noqa: BLE001 - the node's resync closes it later; warn_failed logs a bug's traceback
                warn_failed(log, "closing a connection row failed; the resync closes it", exc=exc)
                socket.node.unclosed_rows.append(row)


def _sessions_on(node: NodeRuntime) -> list[Session]:
    """The sessions of the node's sockets (each socket of this package holds one)."""
    sessions = (getattr(socket, "session", None) for socket in list(node.connections))
    return [session for session in sessions if isinstance(session, Session)]


def _slot_lease() -> float:
    return ratelimit.slot_lease(settings.REALTIME_RESYNC_INTERVAL, settings.REALTIME_HEARTBEAT_TIMEOUT)
