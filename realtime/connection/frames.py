"""What the frames after `ready` do, and how their failures are reported (a mixin of
realtime.connection.consumer.ConversationConsumer, whose fields it uses)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from realtime.connection.base import check_limit
from realtime.core import metrics
from realtime.core import protocol as p
from realtime.fanout.publish import commit_and_publish
from realtime.infra import ratelimit
from realtime.infra.db import db
from realtime.infra.transient import TRANSIENT_ERRORS, warn_failed
from sessions_app import services, tokens

log = logging.getLogger("realtime.connection.consumer")


class FrameHandlers:
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
            if transient:  # one line at most per second, none during an outage already logged
                warn_failed(log, f"{handler.__name__.lstrip('_')} failed; the client was told to retry", exc=exc)
            else:
                log.error("%s of %s failed", handler.__name__, self.channel_name, exc_info=True)
            if handler == self._connect:
                await self._perform(self.state.connect_failed("unavailable", "service unavailable; resume shortly"))
            else:
                await self._perform(self.state.handler_failed(ref, transient))


    async def _post(self, frame: p.SendMessage) -> None:
        verdict = await check_limit(ratelimit.hit_all([
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
        except TRANSIENT_ERRORS as exc:
            warn_failed(log, "storing ack %s of %s failed; kept for later", seq, self.connection_id, exc=exc)
            self.state.ack_flush_failed(seq)
