"""The /ws/v1/ consumer: the socket side of a conversation. Thin by design: frames are parsed
by realtime.protocol, writes go through sessions_app.services, agent work happens in the
node's RunSupervisor (never inside this consumer)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings

from realtime import protocol as p
from realtime import ratelimit, tokens
from realtime.auth import InvalidToken, verify_access_token
from realtime.db import db
from realtime.fanout import FanoutUnavailable, publish
from sessions_app import services

log = logging.getLogger(__name__)

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


# Retry delays of a failing channel-layer receive (Redis unreachable), in seconds.
LAYER_RETRY_FIRST, LAYER_RETRY_MAX = 0.1, 2.0


class ConversationConsumer(AsyncWebsocketConsumer):
    # --- lifecycle ------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """AsyncConsumer.__call__, except that the channel-layer receive outlives a Redis
        outage. Channels' own receive task raises when Redis is unreachable, which ends the
        application instance: daphne closes every socket of the node with 1011 and
        `disconnect()` never runs (row, slot and fan-out membership are left behind). The
        layer only carries `conn.replaced` here, which the periodic resync also finds, so the
        socket can simply wait for Redis to come back."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = self._layer_receive
            sources.append(self.channel_receive)
        try:
            await await_many_dispatch(sources, self.dispatch)
        except StopConsumer:
            pass

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
        self.node = self.scope["tether_node"]
        self.phase = p.Phase.AWAITING_CONNECT
        self.cursor = p.DeliveryCursor()
        self.budget = p.BadFrameBudget(settings.REALTIME_BAD_FRAME_LIMIT, settings.REALTIME_BAD_FRAME_WINDOW)
        self.conversation_id: str | None = None
        self.connection_id: str | None = None
        self.user_id: str | None = None
        self.access_expires_at = 0
        self.expiry_warned = False
        self.joined_feed: str | None = None
        self.early_upto = 0
        self.acked_seq = self.acked_written = 0
        self.ack_written_at = float("-inf")
        self.cleaned_up = False
        self.deliver_lock = asyncio.Lock()
        self.frame_bucket = ratelimit.LocalBucket(ratelimit.rule("REALTIME_RATE_FRAMES"))
        self.frame_overruns = 0
        self.slot: str | None = None
        self.remote_addr = client_address(self.scope)
        loop = asyncio.get_running_loop()
        self.opened_at = self.last_frame_at = loop.time()
        await self.accept()
        if self.node.draining:
            # Accept-then-close so the client reads why and retries elsewhere at once
            # (a refused handshake would only be an HTTP 403 to it).
            self.watchdog = None
            await self.node_draining({})
            return
        self.node.connections.add(self)
        self.watchdog = asyncio.create_task(self._watch())
        if self.remote_addr:
            await self._limit(f"ip:{self.remote_addr}", "REALTIME_RATE_CONNECT_IP")

    async def disconnect(self, code: int) -> None:
        await self._cleanup(code, "client_closed" if code in (1000, 1001) else "connection_lost")

    # --- inbound frames -------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_frame_at = asyncio.get_running_loop().time()
        if self.phase is p.Phase.CLOSED:
            return
        verdict = self.frame_bucket.take()
        if not verdict.allowed:
            self.frame_overruns += 1
            if self.frame_overruns > settings.REALTIME_FRAME_OVERRUN_CLOSE:
                await self._terminate(p.CLOSE_RATE_LIMITED, "rate_limited", "too many frames",
                                      retry_after_ms=verdict.retry_after_ms)
            else:
                await self._send(p.error_frame("rate_limited", "too many frames; slow down",
                                               retry_after_ms=verdict.retry_after_ms))
            return
        self.frame_overruns = 0
        try:
            obj = p.decode_frame(text_data, bytes_data, settings.REALTIME_MAX_FRAME_BYTES)
            frame = p.parse_frame(obj, settings.REALTIME_MAX_MESSAGE_CHARS)
            p.check_phase(self.phase, frame)
        except p.ProtocolError as err:
            await self._refuse(err)
            return
        try:
            await self._dispatch(frame)
        except p.ProtocolError as err:
            await self._refuse(err)

    async def _dispatch(self, frame: p.ClientFrame) -> None:
        if isinstance(frame, p.Ping):
            await self._send({"type": "pong", "id": frame.id})
        elif isinstance(frame, p.Ack):
            await self._on_ack(frame.seq)
        elif isinstance(frame, p.SendMessage):
            await self._on_message(frame)
        elif isinstance(frame, p.Connect):
            await self._on_connect(frame)
        elif isinstance(frame, p.AuthRefresh):
            await self._on_auth_refresh(frame)
        elif isinstance(frame, p.Cancel):
            await self._on_cancel(frame)

    async def _refuse(self, err: p.ProtocolError) -> None:
        if err.close_code is not None:
            await self._terminate(err.close_code, err.code, err.detail)
            return
        await self._send(err.frame())
        if err.code in ("bad_frame", "too_long") and not self.budget.spend(time.monotonic()):
            await self._terminate(
                p.CLOSE_BAD_FRAMES, "bad_frame", f"more than {self.budget.limit} bad frames in {self.budget.window:g} s"
            )

    async def _on_connect(self, frame: p.Connect) -> None:
        try:
            identity = verify_access_token(frame.token)
        except InvalidToken as exc:
            code = "token_expired" if tokens.is_expired_but_genuine(frame.token) else "unauthenticated"
            await self._terminate(p.CLOSE_UNAUTHENTICATED, code, f"access token refused: {exc}")
            return
        self.user_id = identity.user_id
        self.access_expires_at = identity.expires_at
        if not await self._limit(f"user:{identity.user_id}", "REALTIME_RATE_CONNECT_USER"):
            return
        if not await self._take_slot(
            ratelimit.slot_member(frame.client_id, frame.conversation_id)
            if frame.conversation_id is not None
            else ratelimit.pending_slot_member(self.channel_name)
        ):
            return
        # Join the live feed before reading where the log stands, so an event committed
        # between the read and the join cannot fall between the replay and the live feed.
        if frame.conversation_id is not None and not await self._join(frame.conversation_id):
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
            )
        except services.ServiceError as exc:
            close = {
                "not_found": p.CLOSE_NOT_FOUND,
                "forbidden": p.CLOSE_FORBIDDEN,
            }.get(exc.code, p.CLOSE_UNAUTHENTICATED)
            await self._terminate(close, exc.code, str(exc))
            return
        self.conversation_id = opened.conversation_id
        self.connection_id = opened.connection_id
        if frame.conversation_id is None:
            await self._rename_slot(ratelimit.slot_member(frame.client_id, opened.conversation_id))
        if self.joined_feed is None and not await self._join(opened.conversation_id):
            return
        for channel in opened.replaced_channels:
            try:
                await self.channel_layer.send(channel, {"type": "conn.replaced"})
            except Exception:  # noqa: BLE001 - its row is closed: its next resync ends it anyway
                log.warning("telling %s it was replaced failed", channel, exc_info=True)

        plan = p.plan_resume(frame.last_seq, opened.last_seq, opened.first_kept_seq, opened.created)
        await self._send(
            {
                "type": "ready",
                "conversation_id": opened.conversation_id,
                "resumed": plan.resumed,
                "last_seq": opened.last_seq,
                "replay_count": plan.replay_count,
                "heartbeat_interval_ms": settings.REALTIME_HEARTBEAT_INTERVAL_MS,
                "access_expires_at": self.access_expires_at,
                "node": self.node.node_id,
            }
        )
        self.cursor.sent_seq = plan.replay_from
        async with self.deliver_lock:
            await self._fill(opened.last_seq)
            # Live events announced while the backlog was read: the log has them too.
            while self.early_upto > self.cursor.sent_seq and self.phase is not p.Phase.CLOSED:
                await self._fill(self.early_upto)
            if self.phase is p.Phase.CLOSED:
                return
            self.phase = p.Phase.READY
        self.watchdog_wake()

    async def _on_ack(self, seq: int) -> None:
        """Acks only steer retention and the admin, so they are written at most every
        REALTIME_ACK_FLUSH_INTERVAL per socket (and at close), not once per frame."""
        self.acked_seq = max(self.acked_seq, seq)
        now = asyncio.get_running_loop().time()
        if now - self.ack_written_at >= settings.REALTIME_ACK_FLUSH_INTERVAL:
            await self._flush_ack(now)

    async def _flush_ack(self, now: float) -> None:
        if self.acked_seq > self.acked_written:
            self.ack_written_at = now
            self.acked_written = self.acked_seq
            await db(services.record_ack)(self.connection_id, self.conversation_id, self.acked_seq)

    async def _on_message(self, frame: p.SendMessage) -> None:
        verdict = await _check(ratelimit.hit(f"conv:{self.conversation_id}", ratelimit.rule("REALTIME_RATE_MESSAGES")))
        if not verdict.allowed:
            await self._send(p.error_frame("rate_limited", "too many messages in this conversation",
                                           frame.client_msg_id, retry_after_ms=verdict.retry_after_ms))
            return
        posted = await db(services.post_user_message)(self.conversation_id, frame.client_msg_id, frame.text)
        await publish(self.conversation_id, posted.events)
        ack = {"type": "message.ack", "client_msg_id": frame.client_msg_id, "seq": posted.seq}
        await self._send({**ack, "duplicate": posted.duplicate})
        if not posted.duplicate:
            self.node.kick(self.conversation_id)

    async def _on_cancel(self, frame: p.Cancel) -> None:
        try:
            outcome, events = await db(services.request_cancel)(self.conversation_id, frame.run_id)
        except services.ConversationNotFound:
            await self._send(p.error_frame("not_found", "no such run in this conversation", frame.run_id))
            return
        await publish(self.conversation_id, events)
        if outcome == "cancelling":
            self.node.cancel_local_run(frame.run_id)

    async def _on_auth_refresh(self, frame: p.AuthRefresh) -> None:
        try:
            if frame.refresh is not None:
                renewed = await db(tokens.rotate_refresh_token)(frame.refresh, self.user_id)
            else:
                renewed = await db(tokens.accept_new_access_token)(frame.access, self.user_id)
        except tokens.RefreshRefused as exc:
            # The socket keeps its current expiry: a failed renewal is not a reason to drop it.
            await db(services.record_auth_refresh)(self.connection_id, refused=str(exc))
            await self._send(p.error_frame("refresh_failed", str(exc)))
            return
        await db(services.record_auth_refresh)(self.connection_id, standing=renewed.standing)
        self.access_expires_at = renewed.access_expires_at
        self.expiry_warned = False
        reply: dict[str, Any] = {"type": "auth.refreshed", "access_expires_at": renewed.access_expires_at}
        if renewed.access is not None:
            reply["access"] = renewed.access
            reply["refresh"] = renewed.refresh
        await self._send(reply)
        self.watchdog_wake()

    # --- outbound events ------------------------------------------------------------------

    async def conv_events(self, message: dict) -> None:
        """From the node's fan-out: committed events (or just their highest seq)."""
        if self.phase is p.Phase.CLOSED:
            return
        if self.phase is not p.Phase.READY:
            # Joined but still replaying: remember how far the log goes, never drop.
            self.early_upto = max(self.early_upto, message["upto"])
            return
        async with self.deliver_lock:
            if self.phase is not p.Phase.READY:
                return
            events = message.get("events")
            if events is None:
                await self._fill(message["upto"])
                return
            for event in events:
                arrival = self.cursor.classify(event["seq"])
                if arrival is p.Arrival.DUPLICATE:
                    continue
                if arrival is p.Arrival.GAP:
                    # The layer lost or reordered something: the log has it.
                    await self._fill(event["seq"] - 1)
                await self._send(event)
                self.cursor.advance(event["seq"])

    async def catch_up(self) -> None:
        """The fan-out lost messages (Redis reconnected): read the log up to its end."""
        if self.phase is not p.Phase.READY:
            return
        last_seq = await db(services.conversation_last_seq)(self.conversation_id)
        async with self.deliver_lock:
            if self.phase is p.Phase.READY and last_seq > self.cursor.sent_seq:
                await self._fill(last_seq)

    async def conn_replaced(self, message: dict) -> None:
        await self._terminate(p.CLOSE_REPLACED, "replaced", "a newer connection of this client took over")

    async def node_draining(self, message: dict) -> None:
        await self._terminate(
            p.CLOSE_GOING_AWAY, "going_away", "server is restarting", frame_type="reconnect",
            retry_after_ms=message.get("retry_after_ms", 0),
        )

    async def _fill(self, upto: int) -> None:
        """Sends every logged event in (sent_seq, upto] in order. Caller holds deliver_lock."""
        while self.cursor.sent_seq < upto:
            batch = await db(services.events_after)(
                self.conversation_id, self.cursor.sent_seq, upto, settings.REALTIME_REPLAY_BATCH
            )
            if not batch or batch[0]["seq"] != self.cursor.sent_seq + 1:
                # Pruned under our feet: the client must reload; nothing else can be honest.
                await self._terminate(p.CLOSE_GOING_AWAY, "going_away", "event log moved on; resume again")
                return
            for event in batch:
                await self._send(event)
                self.cursor.advance(event["seq"])

    async def _limit(self, bucket: str, setting: str) -> bool:
        """Connection-attempt limits; over them: rate_limited error, then 4429."""
        verdict = await _check(ratelimit.hit(bucket, ratelimit.rule(setting)))
        if verdict.allowed:
            return True
        await self._terminate(p.CLOSE_RATE_LIMITED, "rate_limited", "too many connection attempts",
                              retry_after_ms=verdict.retry_after_ms)
        return False

    async def _take_slot(self, member: str) -> bool:
        """Concurrent connections per user across all nodes, one slot per (conversation,
        client_id); the slot's lease is renewed at every resync, so slots of crashed nodes
        free themselves."""
        verdict = await _check(ratelimit.take_slot(
            f"user:{self.user_id}", member, settings.REALTIME_MAX_CONNECTIONS_PER_USER, self._slot_lease()))
        if verdict.allowed:
            self.slot = member
            return True
        await self._terminate(p.CLOSE_RATE_LIMITED, "rate_limited", "too many open connections for this user",
                              retry_after_ms=verdict.retry_after_ms)
        return False

    async def _rename_slot(self, member: str) -> None:
        """The new conversation has its id: its slot takes the name a resume will use."""
        if self.slot is None:
            return
        try:
            if await ratelimit.rename_slot(f"user:{self.user_id}", self.slot, member):
                self.slot = member
        except Exception:  # noqa: BLE001 - limits fail open; the pending name is released at close
            log.warning("renaming connection slot failed", exc_info=True)

    @staticmethod
    def _slot_lease() -> float:
        return slot_lease()

    async def _send(self, frame: dict) -> None:
        await self.send(text_data=_dumps(frame))

    async def _join(self, conversation_id: str) -> bool:
        try:
            await self.node.fanout.join(conversation_id, self)
        except FanoutUnavailable as exc:
            log.warning("live feed unavailable for %s: %s", conversation_id, exc)
            await self._terminate(p.CLOSE_GOING_AWAY, "going_away", "live feed unavailable; reconnect",
                                  retry_after_ms=1000)
            return False
        self.joined_feed = conversation_id
        return True

    # --- ending ---------------------------------------------------------------------------

    async def _terminate(
        self, close_code: int, code: str, detail: str, frame_type: str = "error", **extra: Any
    ) -> None:
        """Every server-side close: explanatory frame first (daphne drops close reasons)."""
        if self.phase is p.Phase.CLOSED:
            return
        self.phase = p.Phase.CLOSED
        try:
            if frame_type == "error":
                await self._send(p.error_frame(code, detail, **extra))
            else:
                await self._send({"type": frame_type, "reason": detail, **extra})
            await self.close(code=close_code)
        except Exception:  # noqa: BLE001 - the peer may already be gone
            log.debug("close of %s failed", self.channel_name, exc_info=True)
        await self._cleanup(close_code, code)

    async def _cleanup(self, close_code: int | None, reason: str) -> None:
        """Releases everything the connection held. Idempotent: every ending path calls it."""
        if self.cleaned_up:
            return
        self.cleaned_up = True
        self.phase = p.Phase.CLOSED
        self.node.connections.discard(self)
        if self.watchdog is not None and self.watchdog is not asyncio.current_task():
            self.watchdog.cancel()
        # A replaced socket's slot (same conversation and client_id) now belongs to the socket
        # that replaced it, so releasing it would free that one's slot.
        if self.slot is not None and reason != "replaced":
            await _check(ratelimit.release_slot(f"user:{self.user_id}", self.slot))
        if self.joined_feed is not None:
            await self.node.fanout.leave(self.joined_feed, self)
        if self.connection_id is not None:
            try:
                if self.acked_seq > self.acked_written:
                    await db(services.record_ack)(self.connection_id, self.conversation_id, self.acked_seq)
                await db(services.close_connection)(self.connection_id, close_code, reason, self.cursor.sent_seq)
            except Exception:  # noqa: BLE001 - the node reaper closes rows left open
                log.warning("closing connection row %s failed", self.connection_id, exc_info=True)

    # --- watchdog: connect timeout, heartbeat, token expiry, resync --------------------------

    def watchdog_wake(self) -> None:
        """Deadlines moved: let the watchdog recompute its sleep."""
        wake = getattr(self, "_wake", None)
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.phase is not p.Phase.CLOSED:
                now = loop.time()
                deadline = await self._check_deadlines(now)
                if deadline is None:
                    return
                self._wake = loop.create_future()
                try:
                    await asyncio.wait_for(self._wake, max(0.01, deadline - loop.time()))
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a watchdog bug must not leave a zombie behind
            log.exception("watchdog of %s failed; closing", self.channel_name)
            await self._terminate(p.CLOSE_GOING_AWAY, "going_away", "internal error; resume")

    async def _check_deadlines(self, now: float) -> float | None:
        """Acts on every deadline that passed; returns the next one (None once closed)."""
        if self.phase is p.Phase.AWAITING_CONNECT:
            deadline = self.opened_at + settings.REALTIME_CONNECT_TIMEOUT
            if now >= deadline:
                await self._terminate(
                    p.CLOSE_UNAUTHENTICATED, "unauthenticated",
                    f"no 'connect' frame within {settings.REALTIME_CONNECT_TIMEOUT:g} s",
                )
                return None
            return deadline
        heartbeat_deadline = self.last_frame_at + settings.REALTIME_HEARTBEAT_TIMEOUT
        if now >= heartbeat_deadline:
            await self._terminate(
                p.CLOSE_HEARTBEAT, "heartbeat_timeout",
                f"no frame for {settings.REALTIME_HEARTBEAT_TIMEOUT:g} s",
            )
            return None
        deadlines = [heartbeat_deadline]

        wall = time.time()
        expires_in = self.access_expires_at - wall
        if expires_in <= 0:
            await self._terminate(p.CLOSE_UNAUTHENTICATED, "token_expired", "access token expired; refresh it")
            return None
        warn_in = expires_in - settings.REALTIME_TOKEN_WARNING
        if warn_in <= 0 and not self.expiry_warned:
            self.expiry_warned = True
            await self._send({"type": "auth.expiring", "access_expires_at": self.access_expires_at})
        deadlines.append(now + expires_in if self.expiry_warned else now + max(warn_in, 0))

        return min(deadlines)

    # --- resync (driven by the node for all its sockets at once: realtime/resync.py) -------

    def resync_entry(self) -> tuple[str, int, int] | None:
        """What the node's periodic resync writes and checks for this socket."""
        if self.phase is not p.Phase.READY or self.connection_id is None:
            return None
        return (self.connection_id, self.cursor.sent_seq, self.acked_seq)

    async def apply_resync(self, state: str, last_seq: int) -> None:
        """Acts on what the resync found: a row closed by someone else (replaced, or reaped by
        another node), a deactivated user or a revoked token, or events the fan-out dropped."""
        if self.phase is not p.Phase.READY:
            return
        if state == "replaced":
            await self._terminate(p.CLOSE_REPLACED, "replaced", "a newer connection of this client took over")
        elif state == "closed":
            # Reaped (this node was taken for dead, e.g. cut off from Redis for longer than the
            # node TTL): the client did nothing wrong and must come back, which 4409 forbids.
            await self._terminate(p.CLOSE_GOING_AWAY, "going_away", "this connection was closed by the server; resume")
        elif state == "inactive":
            await self._terminate(p.CLOSE_UNAUTHENTICATED, "unauthenticated", "user is deactivated")
        elif state == "revoked":
            await self._terminate(p.CLOSE_UNAUTHENTICATED, "unauthenticated", "token was revoked; sign in again")
        elif last_seq > self.cursor.sent_seq:
            async with self.deliver_lock:
                if self.phase is p.Phase.READY:
                    await self._fill(last_seq)


def slot_lease() -> float:
    """A slot outlives three missed resyncs: slots of a crashed node free themselves."""
    return 3 * settings.REALTIME_RESYNC_INTERVAL + settings.REALTIME_HEARTBEAT_TIMEOUT


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


async def _check(call: Any) -> Any:
    """Rate limits fail open: with Redis unreachable the service degrades, it does not stop."""
    try:
        return await call
    except Exception:  # noqa: BLE001 - Redis down or slow
        log.warning("rate limit check failed; allowing", exc_info=True)
        return ratelimit.Verdict(True)
