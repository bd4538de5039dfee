"""The Channels plumbing under Tether's socket consumer (realtime/consumers.py): a consumer whose
channel-layer receive outlives a Redis outage and that dispatches without Channels' per-message
thread hop, the client's address behind trusted proxies, and rate limits that fail open."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch

from realtime import ratelimit
from realtime.proxies import forwarded_client

log = logging.getLogger("realtime.consumers")

# Retry delays of a failing channel-layer receive (Redis unreachable), in seconds.
LAYER_RETRY_FIRST, LAYER_RETRY_MAX = 0.1, 2.0


class ResilientWebsocketConsumer(AsyncWebsocketConsumer):
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


def client_address(scope: dict) -> str:
    """The peer's address; X-Forwarded-For only when the peer is a trusted proxy
    (realtime/proxies.py: the rule HTTP requests follow too)."""
    client = scope.get("client")
    forwarded = [value.decode("latin1") for name, value in scope.get("headers", []) if name == b"x-forwarded-for"]
    return forwarded_client(str(client[0]) if client else "", forwarded)


async def check_limit(call: Awaitable[ratelimit.Verdict]) -> ratelimit.Verdict:
    """Rate limits fail open: with Redis unreachable the service degrades, it does not stop."""
    try:
        return await call
    except Exception:  # Redis down or slow
        log.warning("rate limit check failed; allowing", exc_info=True)
        return ratelimit.Verdict(True)
