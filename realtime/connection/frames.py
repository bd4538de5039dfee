"""What the frames after `ready` do: `message`, `cancel`, `auth.refresh`, and the storing of
acks. Each handler runs for one socket and its session; how a failing handler is reported
(`unavailable` or `server_error`, the socket stays up) is the consumer's `_guarded`."""

from __future__ import annotations

import logging

from realtime.connection.base import check_limit
from realtime.connection.session import Session, Socket
from realtime.core import metrics
from realtime.core import protocol as p
from realtime.fanout.publish import commit_and_publish, publish_committed
from realtime.infra import ratelimit
from realtime.infra.db import db
from realtime.infra.transient import TRANSIENT_ERRORS, warn_failed
from sessions_app import services, tokens

log = logging.getLogger("realtime.connection")


class Frames:
    """The frame handlers of one socket. They touch the socket only through `Socket` and read
    the ids of its open session (user, conversation, connection row)."""

    def __init__(self, socket: Socket, session: Session) -> None:
        self.socket = socket
        self.session = session

    async def post(self, frame: p.SendMessage) -> None:
        socket, session = self.socket, self.session
        # No fallback: each stored message starts a paid agent run, so runs per user fail
        # closed (`unavailable`, the client sends the same message again after retry_after_ms).
        verdict = await check_limit(ratelimit.hit_all([
            (f"conv:{session.conversation_id}", ratelimit.rule("REALTIME_RATE_MESSAGES")),
            (f"runs:user:{session.user_id}", ratelimit.rule("REALTIME_RATE_RUNS_USER")),
        ]))
        if verdict.unchecked:
            metrics.RATE_LIMITED.labels("unchecked").inc()
            await socket.perform(socket.state.limit_unchecked(frame.client_msg_id))
            return
        if not verdict.allowed:
            per_user = verdict.refused_by == 1
            metrics.RATE_LIMITED.labels("runs_per_user" if per_user else "messages").inc()
            await socket.perform(socket.state.message_limited(frame.client_msg_id, verdict.retry_after_ms, per_user))
            return
        try:
            # Stored with the other messages that reach the node meanwhile (`NodeRuntime.posts`).
            posted = await socket.node.posts(
                services.NewMessage(session.conversation_id, frame.client_msg_id, frame.text))
        except services.ConversationNotFound:
            await socket.perform(socket.state.conversation_gone())
            return
        await publish_committed(posted)
        await socket.perform(socket.state.message_posted(frame.client_msg_id, posted.seq, posted.duplicate))
        if not posted.duplicate:
            socket.node.kick(session.conversation_id)

    async def cancel(self, run_id: str) -> None:
        socket, session = self.socket, self.session
        try:
            cancel = await commit_and_publish(services.request_cancel, session.conversation_id, run_id,
                                              session.client_id or "")
        except services.ConversationNotFound:
            await socket.perform(socket.state.cancel_unknown(run_id))
            return
        if cancel.outcome == "cancelling":
            socket.node.cancel_local_run(run_id)

    async def respond_approval(self, frame: p.RespondApproval) -> None:
        """A person's decision on a tool call, from any socket of the conversation: the first
        one wins; the run, waiting for it, is queued again on whichever node claims it."""
        socket, session = self.socket, self.session
        answer = await commit_and_publish(services.resolve_approval, session.conversation_id, frame.call_id,
                                          frame.decision, session.client_id or "")
        await socket.perform(socket.state.approval_answered(frame.call_id, answer.outcome, answer.decision))
        if answer.events:  # decided now (or found expired): the run is queued again
            socket.node.kick(session.conversation_id)

    async def renew(self, frame: p.AuthRefresh) -> None:
        socket, session = self.socket, self.session
        kind = "access" if frame.refresh is None else "refresh"
        try:
            if frame.refresh is not None:
                renewed = await db(tokens.rotate_refresh_token)(frame.refresh, session.user_id)
            else:
                renewed = await db(tokens.accept_new_access_token)(frame.access, session.user_id)
        except tokens.RefreshRefused as exc:
            metrics.AUTH_REFRESHES.labels(kind, "refused").inc()
            await db(services.record_auth_refresh)(session.connection_id, refused=str(exc))
            await socket.perform(socket.state.refresh_refused(str(exc)))
            return
        metrics.AUTH_REFRESHES.labels(kind, "ok").inc()
        await db(services.record_auth_refresh)(session.connection_id, standing=renewed.standing)
        await socket.perform(socket.state.refreshed(renewed.access_expires_at, renewed.access, renewed.refresh))
        socket.woken()

    async def flush_ack(self, seq: int) -> None:
        """A failed store is not reported: the ack is stored at the next flush, resync or close."""
        session = self.session
        try:
            await self.socket.node.acks(services.AckWrite(session.connection_id, session.conversation_id, seq))
        except TRANSIENT_ERRORS as exc:
            warn_failed(log, "storing ack %s of %s failed; kept for later", seq, session.connection_id, exc=exc)
            self.socket.state.ack_flush_failed(seq)
