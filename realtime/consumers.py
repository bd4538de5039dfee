"""The /ws/v1/ consumer: the I/O around one socket's ConnectionState.
Design: docs/architecture.md, "One socket".

It reads frames, the clock, Redis and the database, and performs the actions the state machine
(realtime/connection_state.py) returns; it decides nothing about the connection itself.
Rules:
- Every write goes through sessions_app.services; every write that commits events goes through
  realtime.fanout.commit_and_publish, which publishes them.
- Sequenced events are sent only by the sender task (`_send_forever`), in the cursor's order.
- What the socket holds (its connection slot, its live-feed membership, its connection row)
  is released by `_release`. Every close calls it, and the connect path calls it again after
  each await at which the socket closed meanwhile: a close at any point of the connect leaves
  nothing behind (tests/test_connect_cleanup.py).
- The node sees a socket only through the surface below "the node's view"
  (realtime.node.NodeConnection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings
from django.db import InterfaceError, OperationalError

from realtime import closes, logcontext, metrics, ratelimit, tokens
from realtime import connection_state as cs
from realtime import protocol as p
from realtime.auth import InvalidToken, verify_access_token
from realtime.db import db
from realtime.fanout import FanoutUnavailable, commit_and_publish
from realtime.flow import flow_of
from realtime.node import NodeRuntime
from realtime.phase_timer import PhaseTimer
from sessions_app import services

log = logging.getLogger(__name__)

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# Retry delays of a failing channel-layer receive (Redis unreachable), in seconds.
LAYER_RETRY_FIRST, LAYER_RETRY_MAX = 0.1, 2.0
# Events read with the session itself: `ready` waits for them, so few (the rest of a long
# replay is read while these are sent). We found 500 here put `ready` of a 1,000-event resume
# 3-4x later than of a 1-event one.
FIRST_REPLAY_BATCH = 100
# How often a sender whose socket does not read checks whether the backlog drained, seconds.
BACKLOG_POLL = 0.05

# Failures that pass by themselves (database restarting, Redis unreachable): the client is told
# to retry the same frame; anything else is a bug, logged with its traceback.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError, TimeoutError)


def connection_limits() -> cs.Limits:
    """The state machine's settings, read when a socket opens (tests change them per test)."""
    frames = ratelimit.rule("REALTIME_RATE_FRAMES")
    return cs.Limits(
        max_frame_bytes=settings.REALTIME_MAX_FRAME_BYTES,
        max_message_chars=settings.REALTIME_MAX_MESSAGE_CHARS,
        connect_timeout=settings.REALTIME_CONNECT_TIMEOUT,
        heartbeat_interval_ms=settings.REALTIME_HEARTBEAT_INTERVAL_MS,
        heartbeat_timeout=settings.REALTIME_HEARTBEAT_TIMEOUT,
        token_warning=settings.REALTIME_TOKEN_WARNING,
        bad_frame_limit=settings.REALTIME_BAD_FRAME_LIMIT,
        bad_frame_window=settings.REALTIME_BAD_FRAME_WINDOW,
        frame_capacity=frames.capacity,
        frame_per_second=frames.per_second,
        frame_overrun_close=settings.REALTIME_FRAME_OVERRUN_CLOSE,
        ack_flush_interval=settings.REALTIME_ACK_FLUSH_INTERVAL,
        replay_batch=settings.REALTIME_REPLAY_BATCH,
        max_unsent_bytes=settings.REALTIME_MAX_UNSENT_BYTES,
        send_stall_timeout=settings.REALTIME_SEND_STALL_TIMEOUT,
    )


class ConversationConsumer(AsyncWebsocketConsumer):
    # --- lifecycle ------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """AsyncConsumer.__call__, except that the channel-layer receive outlives a Redis
        outage. Channels' own receive task raises when Redis is unreachable, which ends the
        application instance: daphne closes every socket of the node with 1011 and
        `disconnect()` never runs (row, slot and fan-out membership are left behind). The
        layer only carries `conn.replaced` and `conn.disconnect` here, which the periodic
        resync also finds, so the socket can simply wait for Redis to come back."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = self._layer_receive
            sources.append(self.channel_receive)
        with contextlib.suppress(StopConsumer):
            await await_many_dispatch(sources, self.dispatch)

    async def _layer_receive(self) -> dict:
        delay = LAYER_RETRY_FIRST
        while True:
            try:
                return await self.channel_layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: the socket lives on without the layer
                log.warning("channel layer receive failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, LAYER_RETRY_MAX)

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch hops to the shared sync thread before every message to close
        stale DB connections: at thousands of events per second that hop is the bottleneck.
        This consumer never touches the ORM on its own thread (realtime.db does, and closes
        its connections itself), so it dispatches directly."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.node: NodeRuntime = self.scope["tether_node"]
        logcontext.bind(node=self.node.node_id)
        self.state = cs.ConnectionState(connection_limits(), asyncio.get_running_loop().time())
        # Set by the connect, in this order; each is held until `_release` gives it back.
        self.user_id: str | None = None
        self.slot: str | None = None  # identity of the concurrent-connection slot held
        self.joined_feed: str | None = None  # conversation whose live feed this socket is in
        self.conversation_id: str | None = None
        self.connection_id: str | None = None  # the open Connection row
        self.remote_addr = client_address(self.scope)
        self.flow = flow_of(self.scope)  # the transport's backlog; None in-process
        self._sender_wake = asyncio.Event()
        self._watchdog_wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        # The connect's phase timer until the replay is sent: (timer, replay from, replay up to).
        self._replay_timer: tuple[PhaseTimer, int, int] | None = None
        await self.accept()
        if self.node.draining:
            # Accept-then-close so the client reads why and retries elsewhere at once
            # (a refused handshake would only be an HTTP 403 to it).
            await self.go_away()
            return
        self.node.connections.add(self)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch()), loop.create_task(self._send_forever())]
        if self.remote_addr:
            verdict = await _check(ratelimit.hit(f"ip:{self.remote_addr}", ratelimit.rule("REALTIME_RATE_CONNECT_IP")))
            if not verdict.allowed:
                metrics.RATE_LIMITED.labels("connect_ip").inc()
                await self._perform(self.state.limited("ip", verdict.retry_after_ms))

    async def disconnect(self, code: int) -> None:
        first = not self.state.closed  # after a server close, that close was counted
        ended = self.state.disconnected(code)
        if first:
            self._ended(*ended)
        await self._end()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        actions = self.state.receive(text_data, bytes_data, asyncio.get_running_loop().time())
        if self.state.frame_overruns:  # this frame found the per-socket bucket empty
            metrics.RATE_LIMITED.labels("frames").inc()
        await self._perform(actions)

    # --- performing the state machine's actions -------------------------------------------

    async def _perform(self, actions: list[cs.Action]) -> None:
        for action in actions:
            if isinstance(action, cs.Send):
                await self._send(action.frame)
            elif isinstance(action, cs.Close):
                await self._close(action)
            elif isinstance(action, cs.Authenticate):
                await self._guarded(self._connect, action.frame, None)
            elif isinstance(action, cs.PostMessage):
                await self._guarded(self._post, action.frame, action.frame.client_msg_id)
            elif isinstance(action, cs.CancelRun):
                await self._guarded(self._cancel, action.run_id, action.run_id)
            elif isinstance(action, cs.Renew):
                await self._guarded(self._renew, action.frame, None)
            elif isinstance(action, cs.FlushAck):
                await self._flush_ack(action.seq)

    async def _guarded(self, handler: Callable[[Any], Awaitable[None]], arg: Any, ref: Any) -> None:
        """A frame's I/O failing becomes a documented error frame (`unavailable` or
        `server_error`, with a retry hint); a failing connect tells the client to resume
        shortly. The socket and the node stay up."""
        try:
            await handler(arg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported to the client, never a 1011
            transient = isinstance(exc, TRANSIENT_ERRORS)
            log.log(logging.WARNING if transient else logging.ERROR, "%s of %s failed",
                    handler.__name__, self.channel_name, exc_info=not transient)
            if handler == self._connect:
                await self._perform(self.state.connect_failed("unavailable", "service unavailable; resume shortly"))
            else:
                await self._perform(self.state.handler_failed(ref, transient))

    async def _send(self, frame: dict) -> None:
        await self.send(text_data=_dumps(frame))

    # --- the connect ------------------------------------------------------------------------

    async def _connect(self, frame: p.Connect) -> None:
        loop = asyncio.get_running_loop()
        timer = PhaseTimer(loop.time())
        try:
            identity = verify_access_token(frame.token)
        except InvalidToken as exc:
            await self._perform(self.state.token_refused(str(exc), tokens.is_expired_but_genuine(frame.token)))
            return
        self.user_id = identity.user_id
        self.state.identified(identity.expires_at)
        self._watchdog_wake.set()
        timer.mark("token", loop.time())
        verdict = await _check(ratelimit.hit(f"user:{self.user_id}", ratelimit.rule("REALTIME_RATE_CONNECT_USER")))
        timer.mark("user_limit", loop.time())
        if not await self._still_open():
            return
        if not verdict.allowed:
            metrics.RATE_LIMITED.labels("connect_user").inc()
            await self._perform(self.state.limited("user", verdict.retry_after_ms))
            return
        member = (
            ratelimit.slot_member(frame.client_id, frame.conversation_id)
            if frame.conversation_id is not None
            else ratelimit.pending_slot_member(self.channel_name)
        )
        verdict = await _check(ratelimit.take_slot(
            f"user:{self.user_id}", member, settings.REALTIME_MAX_CONNECTIONS_PER_USER, _slot_lease(),
            owner=self.channel_name,
        ))
        if verdict.allowed:
            self.slot = member
        timer.mark("slot", loop.time())
        if not await self._still_open():
            return
        if not verdict.allowed:
            metrics.RATE_LIMITED.labels("connections_per_user").inc()
            await self._perform(self.state.limited("slots", verdict.retry_after_ms))
            return
        # Join the live feed before reading where the log stands, so an event committed
        # between the read and the join cannot fall between the replay and the live feed.
        if frame.conversation_id is not None and not await self._join(frame.conversation_id):
            return
        timer.mark("join", loop.time())
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
        for channel in opened.replaced_channels:
            try:
                await self.channel_layer.send(channel, {"type": "conn.replaced"})
            except Exception:  # its row is closed: its next resync ends it anyway
                log.warning("telling %s it was replaced failed", channel, exc_info=True)
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

    async def _still_open(self) -> bool:
        """Called after every await of the connect: if the socket closed meanwhile (watchdog,
        drain, client gone), gives back what the connect acquired since the close's own release."""
        if self.state.closed:
            await self._release()
            return False
        return True

    async def _join(self, conversation_id: str) -> bool:
        try:
            await self.node.fanout.join(conversation_id, self)
        except FanoutUnavailable as exc:
            log.warning("live feed unavailable for %s: %s", conversation_id, exc)
            await self._perform(self.state.connect_failed("feed_unavailable", "live feed unavailable; reconnect"))
            return False
        self.joined_feed = conversation_id
        return await self._still_open()

    async def _rename_slot(self, member: str) -> None:
        """The new conversation has its id: its slot takes the name a resume will use."""
        if self.slot is None:
            return
        try:
            if await ratelimit.rename_slot(f"user:{self.user_id}", self.slot, member, owner=self.channel_name):
                self.slot = member
        except Exception:  # limits fail open; the pending name is released at close
            log.warning("renaming connection slot failed", exc_info=True)

    # --- the other frames -------------------------------------------------------------------

    async def _post(self, frame: p.SendMessage) -> None:
        verdict = await _check(ratelimit.hit_all([
            (f"conv:{self.conversation_id}", ratelimit.rule("REALTIME_RATE_MESSAGES")),
            (f"runs:user:{self.user_id}", ratelimit.rule("REALTIME_RATE_RUNS_USER")),
        ]))
        if not verdict.allowed:
            per_user = verdict.refused_by == 1
            metrics.RATE_LIMITED.labels("runs_per_user" if per_user else "messages").inc()
            await self._perform(self.state.message_limited(frame.client_msg_id, verdict.retry_after_ms, per_user))
            return
        try:
            posted = await commit_and_publish(
                services.post_user_message, self.conversation_id, frame.client_msg_id, frame.text
            )
        except services.ConversationNotFound:
            await self._perform(self.state.conversation_gone())
            return
        await self._perform(self.state.message_posted(frame.client_msg_id, posted.seq, posted.duplicate))
        if not posted.duplicate:
            self.node.kick(self.conversation_id)

    async def _cancel(self, run_id: str) -> None:
        try:
            cancel = await commit_and_publish(services.request_cancel, self.conversation_id, run_id)
        except services.ConversationNotFound:
            await self._perform(self.state.cancel_unknown(run_id))
            return
        if cancel.outcome == "cancelling":
            self.node.cancel_local_run(run_id)

    async def _renew(self, frame: p.AuthRefresh) -> None:
        try:
            if frame.refresh is not None:
                renewed = await db(tokens.rotate_refresh_token)(frame.refresh, self.user_id)
            else:
                renewed = await db(tokens.accept_new_access_token)(frame.access, self.user_id)
        except tokens.RefreshRefused as exc:
            metrics.AUTH_REFRESHES.labels("access" if frame.refresh is None else "refresh", "refused").inc()
            await db(services.record_auth_refresh)(self.connection_id, refused=str(exc))
            await self._perform(self.state.refresh_refused(str(exc)))
            return
        metrics.AUTH_REFRESHES.labels("access" if frame.refresh is None else "refresh", "ok").inc()
        await db(services.record_auth_refresh)(self.connection_id, standing=renewed.standing)
        await self._perform(self.state.refreshed(renewed.access_expires_at, renewed.access, renewed.refresh))
        self._watchdog_wake.set()

    async def _flush_ack(self, seq: int) -> None:
        """A failed store is not reported: the ack is stored at the next flush, resync or close."""
        try:
            await db(services.record_ack)(self.connection_id, self.conversation_id, seq)
        except TRANSIENT_ERRORS:
            log.warning("storing ack %s of %s failed; kept for later", seq, self.connection_id, exc_info=True)
            self.state.ack_flush_failed(seq)

    # --- the sender and the watchdog ------------------------------------------------------

    async def _send_forever(self) -> None:
        """The only sender of sequenced events: replays, live events and repairs, in order."""
        try:
            while not self.state.closed:
                step = self.state.next_delivery()
                if step is None:
                    self._sender_wake.clear()
                    if self.state.next_delivery() is None and not self.state.closed:
                        await self._sender_wake.wait()
                    continue
                if isinstance(step, cs.ReadLog):
                    await self._perform(self.state.log_read(step, await self._read(step)))
                    continue
                ahead = self.state.read_ahead()
                reading = asyncio.ensure_future(self._read(ahead)) if ahead is not None else None
                try:
                    for seq, text in step.frames:
                        if self.flow is not None and not await self._backlog_allows():
                            return
                        await self.send(text_data=text)
                        self.state.delivered(seq)
                    if reading is not None:
                        await self._perform(self.state.log_read(ahead, await reading))
                finally:
                    if reading is not None and not reading.done():
                        reading.cancel()
                if self._replay_timer is not None and self.state.sent_seq >= self._replay_timer[2]:
                    self._replayed()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client resumes; nothing is lost
            transient = isinstance(exc, TRANSIENT_ERRORS)
            log.warning("sending to %s failed: %s", self.channel_name, exc, exc_info=not transient)
            await self._perform(self.state.failed("the server could not read the event log; resume"))

    async def _read(self, step: cs.ReadLog) -> list[tuple[int, str]]:
        return await db(services.frames_after)(self.conversation_id, step.after, step.upto, step.limit)

    async def _backlog_allows(self) -> bool:
        """Waits while the transport holds more than the bound unsent; False once closed."""
        loop = asyncio.get_running_loop()
        while True:
            verdict = self.state.may_send(self.flow.unsent_bytes(), loop.time())
            if verdict is True:
                return True
            if verdict is not False:
                await self._perform(verdict)
                return False
            if self.state.closed:
                return False
            # No callback tells when a Twisted transport drains; a stalled socket polls.
            await asyncio.sleep(BACKLOG_POLL)

    def _replayed(self) -> None:
        timer, replay_from, replay_upto = self._replay_timer
        self._replay_timer = None
        timer.mark("replay", asyncio.get_running_loop().time())
        timer.report(replay_upto - replay_from)

    async def _watch(self) -> None:
        """Connect timeout, heartbeat, token expiry and its warning: whatever `tick` says."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._watchdog_wake.clear()
                actions, deadline = self.state.tick(loop.time(), time.time())
                await self._perform(actions)
                if deadline is None:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._watchdog_wake.wait(), max(0.01, deadline - loop.time()))
        except asyncio.CancelledError:
            raise
        except Exception:  # a watchdog bug must not leave a zombie behind
            log.exception("watchdog of %s failed; closing", self.channel_name)
            await self._perform(self.state.failed("internal error; resume"))

    # --- ending ---------------------------------------------------------------------------

    async def _close(self, close: cs.Close) -> None:
        """Every server-side close: explanatory frame first (daphne drops close reasons)."""
        self._ended(close.reason.close_code, close.reason.code)
        try:
            await self._send(close.frame())
            await self.close(code=close.reason.close_code)
            if close.reason.abort and self.flow is not None:
                self.flow.abort()
        except Exception:  # the peer may already be gone
            log.debug("close of %s failed", self.channel_name, exc_info=True)
        await self._end()

    def _ended(self, close_code: int | None, reason: str) -> None:
        """Counts and logs the end of the socket, once (the first ending, server's or client's)."""
        metrics.connect_ended(close_code, reason, was_ready=self.connection_id is not None)
        log.info("connection closed: %s", reason, extra={
            "close_code": close_code, "seq": self.state.sent_seq,
            "conversation_id": self.conversation_id, "connection_id": self.connection_id})

    async def _end(self) -> None:
        """Stops the socket's tasks and releases what it holds. Safe to call more than once."""
        self.node.connections.discard(self)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await self._release()

    async def _release(self) -> None:
        """Gives back whatever the socket holds now. Shielded: an ending task cancelled while it
        releases (the client's disconnect cancels the watchdog that was closing the socket)
        must not leave a resource taken off the consumer but never given back."""
        await asyncio.shield(asyncio.ensure_future(self._release_now()))

    async def _release_now(self) -> None:
        # Each resource is taken off the consumer before its release is awaited, so concurrent
        # calls never release one twice.
        slot, self.slot = self.slot, None
        if slot is not None:
            # A no-op for a replaced socket: its successor owns the identity they share.
            await _check(ratelimit.release_slot(f"user:{self.user_id}", slot, owner=self.channel_name))
        feed, self.joined_feed = self.joined_feed, None
        if feed is not None:
            await self.node.fanout.leave(feed, self)
        connection_id, self.connection_id = self.connection_id, None
        if connection_id is not None:
            code, reason = self.state.ended or (None, "closed")
            try:
                ack = self.state.unflushed_ack()
                if ack is not None:
                    await db(services.record_ack)(connection_id, self.conversation_id, ack)
                await db(services.close_connection)(connection_id, code, reason, self.state.sent_seq)
            except Exception:  # the node reaper closes rows left open
                log.warning("closing connection row %s failed", connection_id, exc_info=True)

    # --- the node's view (realtime.node.NodeConnection) -------------------------------------

    def live(self, message: dict) -> None:
        """From the node's fan-out: committed events (or just their highest seq)."""
        if self.state.live(message):
            self._sender_wake.set()

    def lost_live_feed(self) -> None:
        """The fan-out lost messages (Redis reconnected): read the log to its end."""
        if self.state.lost_live_feed():
            self._sender_wake.set()

    def resync_entry(self) -> tuple[str, int, int] | None:
        """(connection id, delivered seq, acked seq) for the node's periodic resync."""
        entry = self.state.resync_entry()
        if entry is None or self.connection_id is None:
            return None
        return (self.connection_id, *entry)

    def resync_slot(self) -> tuple[str, str] | None:
        """The slot the resync renews: (scope, identity)."""
        return (f"user:{self.user_id}", self.slot) if self.slot is not None else None

    def resynced(self, state: str, last_seq: int, acked_stored: int) -> None:
        if state == "ok" and last_seq > self.state.known_upto:  # committed, never announced to us
            metrics.RESYNC_REPAIRED_EVENTS.inc(last_seq - self.state.known_upto)
        actions = self.state.resynced(state, last_seq, acked_stored)
        if actions:
            self.node.spawn(self._perform(actions))
        else:
            self._sender_wake.set()

    async def go_away(self, retry_after_ms: int = 0) -> None:
        """The node drains: tell the client to reconnect elsewhere now."""
        await self._perform(self.state.terminate(
            closes.DRAINING, "server is restarting", retry_after_ms=retry_after_ms))

    # --- channel-layer messages -------------------------------------------------------------

    async def conn_replaced(self, message: dict) -> None:
        await self._perform(self.state.terminate(closes.REPLACED, "a newer connection of this client took over"))

    async def conn_disconnect(self, message: dict) -> None:
        """An operator ended this socket (admin); the client resumes."""
        await self._perform(self.state.terminate(closes.GOING_AWAY, "disconnected by an operator; resume"))


def _slot_lease() -> float:
    return ratelimit.slot_lease(settings.REALTIME_RESYNC_INTERVAL, settings.REALTIME_HEARTBEAT_TIMEOUT)


def client_address(scope: dict) -> str:
    """The peer's address; X-Forwarded-For only when the peer is a trusted proxy."""
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    if peer and peer in settings.REALTIME_TRUSTED_PROXIES:
        for name, value in scope.get("headers", []):
            if name == b"x-forwarded-for":
                # The right-most address not belonging to our proxies is the client.
                hops = [h.strip() for h in value.decode("latin1").split(",") if h.strip()]
                for hop in reversed(hops):
                    if hop not in settings.REALTIME_TRUSTED_PROXIES:
                        return hop[:64]
    return peer


async def _check(call: Awaitable[ratelimit.Verdict]) -> ratelimit.Verdict:
    """Rate limits fail open: with Redis unreachable the service degrades, it does not stop."""
    try:
        return await call
    except Exception:  # Redis down or slow
        log.warning("rate limit check failed; allowing", exc_info=True)
        return ratelimit.Verdict(True)
