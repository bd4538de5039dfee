"""The Channels plumbing under Tether's socket consumer (realtime/connection/consumer.py): a consumer with
no channel-layer channel that dispatches without Channels' per-message thread hop, the client's
address behind trusted proxies, and what a rate limit that cannot be checked decides."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from realtime.core import buckets
from realtime.infra.proxies import forwarded_client
from realtime.infra.transient import warn_failed

log = logging.getLogger("realtime.connection")


def socket_address() -> str:
    """A socket's name: the slot owner, the Connection row's `channel_name`, and the address
    of the fan-out's control messages. Unique across nodes and restarts."""
    return f"ws.{uuid.uuid4().hex}"


class DirectWebsocketConsumer(AsyncWebsocketConsumer):
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """AsyncConsumer.__call__ without a channel-layer channel: the socket's messages from
        other sockets and the admin (`replaced`, `disconnect`) arrive through the node's fan-out
        (realtime.fanout.publish.tell), addressed to `channel_name`, a name made here.

        Why no layer channel (issue 12): channels_redis keeps a buffer and a receive task per
        channel, and Channels a dispatch task per source. We measured 3-5 KB per idle socket
        for them, and the layer's receive setup at 6% of the node's loop time in a resume
        loop (a node with one socket reopens a Redis connection for it at every reconnect).
        With one source the dispatch is a plain loop. It also ends a hazard: a layer receive
        that failed while Redis was down ended the application instance, and daphne closed
        every socket of the node with 1011 without `disconnect()`."""
        self.scope = scope
        self.channel_layer = None
        self.channel_name = socket_address()
        self.base_send = send
        with contextlib.suppress(StopConsumer):
            while True:
                await self.dispatch(await receive())

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch hops to the shared sync thread before every message to close
        stale DB connections: at thousands of events per second that hop is the bottleneck.
        This consumer never touches the ORM on its own thread (realtime.infra.db does, and closes
        its connections itself), so it dispatches directly."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)


def client_address(scope: dict) -> str:
    """The peer's address; X-Forwarded-For only when the peer is a trusted proxy
    (realtime/infra/proxies.py: the rule HTTP requests follow too)."""
    client = scope.get("client")
    forwarded = [value.decode("latin1") for name, value in scope.get("headers", []) if name == b"x-forwarded-for"]
    return forwarded_client(str(client[0]) if client else "", forwarded)


async def check_limit(call: Awaitable[buckets.Verdict],
                      fallback: Callable[[], buckets.Verdict] | None = None) -> buckets.Verdict:
    """A shared limit that cannot be checked (Redis down or slow, its pool exhausted under
    load) never allows everything (issue 24). With a `fallback` (this node's share of the limit,
    realtime.infra.ratelimit.fallback_hit) that decides; without one the limit fails closed: a
    Verdict refused and `unchecked`, which the caller reports as `unavailable` with
    retry_after_ms. Runs per user fail closed (runs cost money); the connect limits fall back."""
    try:
        return await call
    # Redis down or slow; warn_failed logs a bug's traceback.
    except Exception as exc:  # noqa: BLE001 - see above
        if fallback is None:
            warn_failed(log, "rate limit check failed; refusing", exc=exc)
            return buckets.Verdict(False, unchecked=True)
        warn_failed(log, "rate limit check failed; this node's share decides", exc=exc)
        return fallback()
