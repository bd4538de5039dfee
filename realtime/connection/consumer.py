"""The /ws/v1/ consumer: the I/O around one socket's ConnectionState.
Design: docs/architecture.md, "One socket".

It reads frames, the clock, Redis and the database, and performs the actions the state machine
(realtime/connection/state.py) returns; it decides nothing about the connection itself. The
connect's steps are realtime/connection/connect.py, the other frames' realtime/connection/frames.py,
the Channels plumbing realtime/connection/base.py; this module has the socket's tasks and ending.
Rules:
- Every write goes through sessions_app.services; every write that commits events goes through
  realtime.fanout.publish.commit_and_publish, which publishes them.
- Sequenced events are sent only by the sender task (`_send_forever`), in the cursor's order.
- What the socket holds (its connection slot, its live-feed membership, its connection row)
  is released by `_release`. Every close calls it, and the connect path calls it again after
  each await at which the socket closed meanwhile: a close at any point of the connect leaves
  nothing behind (tests/test_connect_cleanup.py).
- The node sees a socket only through the surface below "the node's view"
  (realtime.node.runtime.NodeConnection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from django.conf import settings

from realtime.connection import state as cs
from realtime.connection.base import DirectWebsocketConsumer, check_limit, client_address
from realtime.connection.connect import ConnectSteps
from realtime.connection.flow import flow_of
from realtime.connection.frames import FrameHandlers
from realtime.connection.phase_timer import PhaseTimer
from realtime.core import closes, metrics
from realtime.core.wake import Wake
from realtime.core.wire import dumps
from realtime.infra import logcontext, ratelimit
from realtime.infra.db import db
from realtime.infra.transient import warn_failed
from realtime.node.resync import UnclosedRow, close_row
from realtime.node.runtime import NodeRuntime
from sessions_app import services

log = logging.getLogger(__name__)

# How a socket ends on each of the fan-out's control actions (realtime.fanout.publish.CONTROL_ACTIONS).
CONTROL_CLOSES = {
    "replaced": (closes.REPLACED, "a newer connection of this client took over"),
    "disconnect": (closes.GOING_AWAY, "disconnected by an operator; resume"),  # the client resumes
}

# How often a sender whose socket does not read checks whether the backlog drained, seconds.
BACKLOG_POLL = 0.05



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


class ConversationConsumer(ConnectSteps, FrameHandlers, DirectWebsocketConsumer):
    # --- lifecycle ------------------------------------------------------------------------

    def __init__(self, node: NodeRuntime, **kwargs) -> None:
        super().__init__(**kwargs)
        self.node = node  # the node this socket lives on (realtime.server.routing gives it)

    async def connect(self) -> None:
        if self.node.node_id != settings.REALTIME_NODE_ID:
            # Several nodes in one process (tests): the log filter's default names only one.
            # Not bound otherwise: the socket's tasks would each hold a copy (issue 12).
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
        self._sender_wake = Wake()
        self._watchdog_wake = Wake()
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
            rule = ratelimit.rule("REALTIME_RATE_CONNECT_IP")
            verdict = await check_limit(ratelimit.hit(f"ip:{self.remote_addr}", rule))
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

    async def _send(self, frame: dict) -> None:
        await self.send(text_data=dumps(frame))

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
        except Exception as exc:  # noqa: BLE001 - the client resumes, nothing is lost; warn_failed logs a bug's traceback
            warn_failed(log, "reading the log for a socket failed; it is told to resume", exc=exc)
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
                # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own,
                # about 1.1 KB more per idle socket (measured with tracemalloc).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.01, deadline - loop.time())):
                        await self._watchdog_wake.wait()
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
            elif close.reason.drop and self.flow is not None:
                self.flow.drop()
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
            await check_limit(ratelimit.release_slot(f"user:{self.user_id}", slot, owner=self.channel_name))
        feed, self.joined_feed = self.joined_feed, None
        if feed is not None:
            await self.node.fanout.leave(feed, self)
        connection_id, self.connection_id = self.connection_id, None
        if connection_id is not None:
            code, reason = self.state.ended or (None, "closed")
            row = UnclosedRow(connection_id, self.conversation_id, self.state.unflushed_ack(), code, reason,
                              self.state.sent_seq)
            try:
                await close_row(row)
            except Exception as exc:  # noqa: BLE001 - the node's resync closes it later; warn_failed logs a bug's traceback
                warn_failed(log, "closing a connection row failed; the resync closes it", exc=exc)
                self.node.unclosed_rows.append(row)

    # --- the node's view (realtime.node.runtime.NodeConnection) -------------------------------------

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

    def control(self, action: str) -> None:
        """From the fan-out: another socket or the admin ends this one (realtime.fanout.publish.tell)."""
        ending = CONTROL_CLOSES.get(action)
        if ending is None:
            log.warning("unknown control action %r ignored", action)
            return
        self.node.spawn(self._perform(self.state.terminate(*ending)))
