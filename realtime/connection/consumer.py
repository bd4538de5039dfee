"""The /ws/v1/ consumer: the I/O around one socket's ConnectionState.
Design: docs/architecture.md, "One socket".

It reads frames, the clock, Redis and the database, and performs the actions the state machine
(realtime/connection/state.py) returns; it decides nothing about the connection itself. The
connect and what it holds are the socket's `Session` (realtime/connection/session.py), the other
frames' handlers `Frames` (realtime/connection/frames.py), the Channels plumbing
realtime/connection/base.py; this module has the socket's tasks and ending.
Rules:
- Every write goes through sessions_app.services; every write that commits events goes through
  realtime.fanout.publish.commit_and_publish, which publishes them.
- Sequenced events are sent only by the sender task (`_send_forever`), in the cursor's order.
- What the socket holds (its connection slot, its live-feed membership, its connection row)
  is released by `session.release()`. Every close calls it, and the connect calls it again after
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
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from realtime.connection import state as cs
from realtime.connection.base import DirectWebsocketConsumer, check_limit, client_address
from realtime.connection.flow import flow_of
from realtime.connection.frames import Frames
from realtime.connection.phase_timer import PhaseTimer
from realtime.connection.session import Session
from realtime.core import closes, metrics
from realtime.core.wake import Wake
from realtime.core.wire import dumps
from realtime.infra import logcontext, ratelimit
from realtime.infra.db import db
from realtime.infra.proxies import address_bucket
from realtime.infra.transient import TRANSIENT_ERRORS, warn_failed
from realtime.node.runtime import NodeRuntime
from sessions_app import services

log = logging.getLogger("realtime.connection")

# How often a sender whose socket does not read checks whether the backlog drained, seconds.
BACKLOG_POLL = 0.05

# The shared limits the state machine asks for (`CheckLimit.kind`): their setting and the
# `kind` label of tether_rate_limit_refusals_total.
LIMIT_RULES = {"ip": ("REALTIME_RATE_CONNECT_IP", "connect_ip")}


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


class ConversationConsumer(DirectWebsocketConsumer):
    """One socket (its session's `Socket`, the node's `NodeConnection`)."""

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
        # What the connect takes (user, slot, feed membership, row), until `session.release()`.
        self.session = Session(self)
        self.frames = Frames(self, self.session)
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
        # The address's bucket, not the address: IPv6 is counted by its /64.
        await self.perform(self.state.admit(address_bucket(self.remote_addr)))

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
        await self.perform(actions)

    # --- performing the state machine's actions -------------------------------------------

    async def perform(self, actions: list[cs.Action]) -> None:
        for action in actions:
            if isinstance(action, cs.Send):
                await self._send(action.frame)
            elif isinstance(action, cs.Close):
                await self._close(action)
            elif isinstance(action, cs.Authenticate):
                await self._guarded(self.session.connect(action.frame), "connect", self._connect_failed)
            elif isinstance(action, cs.PostMessage):
                ref = action.frame.client_msg_id
                await self._guarded(self.frames.post(action.frame), "message", self._frame_failed(ref))
            elif isinstance(action, cs.CancelRun):
                await self._guarded(self.frames.cancel(action.run_id), "cancel", self._frame_failed(action.run_id))
            elif isinstance(action, cs.Renew):
                await self._guarded(self.frames.renew(action.frame), "auth.refresh", self._frame_failed(None))
            elif isinstance(action, cs.FlushAck):
                await self.frames.flush_ack(action.seq)
            elif isinstance(action, cs.CheckLimit):
                await self._check_limit(action)
            elif isinstance(action, cs.AnswerApproval):
                call_id = action.frame.call_id
                await self._guarded(self.frames.respond_approval(action.frame), "approval.respond",
                                    self._frame_failed(call_id))

    async def _send(self, frame: dict) -> None:
        await self.send(text_data=dumps(frame))

    async def _guarded(self, handling: Awaitable[None], what: str,
                       failed: Callable[[bool], list[cs.Action]]) -> None:
        """A frame's I/O failing becomes a documented error frame (`failed(transient)`: for a
        frame `unavailable` or `server_error` with a retry hint; for the connect, a close
        telling the client to resume shortly). The socket and the node stay up."""
        try:
            await handling
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported to the client, never a 1011
            transient = isinstance(exc, TRANSIENT_ERRORS)
            if transient:  # one line at most per second, none during an outage already logged
                warn_failed(log, f"{what} failed; the client was told to retry", exc=exc)
            else:
                log.error("%s of %s failed", what, self.channel_name, exc_info=True)
            await self.perform(failed(transient))

    def _connect_failed(self, transient: bool) -> list[cs.Action]:
        return self.state.connect_failed("unavailable", "service unavailable; resume shortly")

    def _frame_failed(self, ref: Any) -> Callable[[bool], list[cs.Action]]:
        return lambda transient: self.state.handler_failed(ref, transient)

    async def _check_limit(self, check: cs.CheckLimit) -> None:
        setting, metric = LIMIT_RULES[check.kind]
        rule = ratelimit.rule(setting)
        # Redis cannot be asked: this node's share of the limit decides (never "allow all").
        verdict = await check_limit(ratelimit.hit(check.bucket, rule),
                                    fallback=lambda: ratelimit.fallback_hit(check.bucket, rule))
        if not verdict.allowed:
            metrics.RATE_LIMITED.labels(metric).inc()
        await self.perform(self.state.limit_checked(check, verdict.allowed, verdict.retry_after_ms))

    # --- what the session and the frame handlers call (session.Socket) --------------------

    def woken(self) -> None:
        self._sender_wake.set()
        self._watchdog_wake.set()

    def replay_started(self, timer: PhaseTimer, upto: int) -> None:
        self._replay_timer = (timer, self.state.sent_seq, upto)
        if self.state.sent_seq >= upto:
            self._replayed()  # nothing to replay

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
                    await self.perform(self.state.log_read(step, await self._read(step)))
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
                        await self.perform(self.state.log_read(ahead, await reading))
                finally:
                    if reading is not None and not reading.done():
                        reading.cancel()
                if self._replay_timer is not None and self.state.sent_seq >= self._replay_timer[2]:
                    self._replayed()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the client resumes, nothing is lost; warn_failed logs a bug's traceback
            warn_failed(log, "reading the log for a socket failed; it is told to resume", exc=exc)
            await self.perform(self.state.failed("the server could not read the event log; resume"))

    async def _read(self, step: cs.ReadLog) -> list[tuple[int, str]]:
        return await db(services.frames_after)(self.session.conversation_id, step.after, step.upto, step.limit)

    async def _backlog_allows(self) -> bool:
        """Waits while the transport holds more than the bound unsent; False once closed."""
        loop = asyncio.get_running_loop()
        while True:
            verdict = self.state.may_send(self.flow.unsent_bytes(), loop.time())
            if verdict is True:
                return True
            if verdict is not False:
                await self.perform(verdict)
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
                await self.perform(actions)
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
            await self.perform(self.state.failed("internal error; resume"))

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
        session = self.session
        metrics.connect_ended(close_code, reason, was_ready=session.connection_id is not None)
        # Extras, not the bound context: the watchdog and sender tasks that may end the socket
        # were started before the connect bound its ids. A protocol-level code (1009 from
        # daphne's size check, 1006...) says its cause, which the close reason cannot.
        cause = logcontext.close_cause(close_code)
        extra = {"close_code": close_code, "seq": self.state.sent_seq, "conversation_id": session.conversation_id,
                 "connection_id": session.connection_id, "client_id": session.client_id}
        if cause:
            extra["cause"] = cause
        log.info("connection closed: %s%s", reason, f" ({close_code}: {cause})" if cause else "", extra=extra)

    async def _end(self) -> None:
        """Stops the socket's tasks and releases what it holds. Safe to call more than once."""
        self.node.connections.discard(self)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await self.session.release()

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
        connection_id = self.session.connection_id
        if entry is None or connection_id is None:
            return None
        return (connection_id, *entry)

    def resync_slot(self) -> tuple[str, str] | None:
        """The slot the resync renews: (scope, identity)."""
        session = self.session
        return (f"user:{session.user_id}", session.slot) if session.slot is not None else None

    def resynced(self, state: str, last_seq: int, acked_stored: int) -> None:
        if state == "ok" and last_seq > self.state.known_upto:  # committed, never announced to us
            metrics.RESYNC_REPAIRED_EVENTS.inc(last_seq - self.state.known_upto)
        actions = self.state.resynced(state, last_seq, acked_stored)
        if actions:
            self.node.spawn(self.perform(actions))
        else:
            self._sender_wake.set()

    async def go_away(self, retry_after_ms: int = 0) -> None:
        """The node drains: tell the client to reconnect elsewhere now."""
        await self.perform(self.state.terminate(
            closes.DRAINING, "server is restarting", retry_after_ms=retry_after_ms))

    def control(self, action: str) -> None:
        """From the fan-out: another socket or the admin ends this one (realtime.fanout.publish.tell)."""
        actions = self.state.control(action)
        if actions is None:
            log.warning("unknown control action %r ignored", action)
            return
        self.node.spawn(self.perform(actions))
