"""A node's pub/sub connection to Redis, read as the bytes arrive.

Why not redis-py's `PubSub`: every message it returns costs a coroutine chain with a health
check, a retry wrapper, a timeout and a dict of its own, and the hub needed one such call per
message. At 100 streams that was a fifth of the node's CPU per event (issue 22's profile,
docs/benchmarks.md). Here `data_received` feeds hiredis, every complete reply is kept, and the
hub takes all of them in one call (`get_messages`): one wake-up per read from the socket, not
per message.

What it does not do, on purpose: reconnect by itself. A lost connection is an error for the
hub, which builds a new subscription and has the conversations' sockets catch up from the log
(realtime/fanout/hub.py); a connection that reconnected silently would lose what was published
meanwhile without anybody knowing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis
from redis.connection import parse_url

from realtime.infra.resp import handshake, handshake_failed, open_transport, pack


class Subscription(asyncio.Protocol):
    """One pub/sub connection. The hub's calls: `connect`, `subscribe`, `unsubscribe`, `ping`,
    `get_messages`, `aclose`. Messages are dicts as redis-py gives them: `type` ("message",
    "subscribe", "unsubscribe", "pong"), `channel` (bytes) and `data`."""

    def __init__(self, url: str, *, connect_timeout: float, client_name: str | None = None) -> None:
        self.options = parse_url(url)
        self.connect_timeout = connect_timeout
        self.client_name = client_name
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._replies: list[Any] = []
        self._waiter: asyncio.Future | None = None
        self._lost: BaseException | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._replies.append(reply)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = redis.ConnectionError(f"pub/sub connection lost: {exc or 'closed by Redis'}")
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- the hub's side -----------------------------------------------------------------------

    async def connect(self) -> None:
        async with asyncio.timeout(self.connect_timeout):
            await open_transport(self, self.options)
            for command in handshake(self.options, self.client_name):
                self._send(*command)
                while not self._replies:
                    await self._wait()
                if (failure := handshake_failed(command, self._replies.pop(0))) is not None:
                    raise failure

    async def subscribe(self, *channels: str) -> None:
        self._send("SUBSCRIBE", *channels)

    async def unsubscribe(self, *channels: str) -> None:
        self._send("UNSUBSCRIBE", *channels)

    async def ping(self, payload: str) -> None:
        self._send("PING", payload)

    async def get_messages(self, timeout: float) -> list[dict]:
        """Every message that arrived, waiting up to `timeout` s for the first; [] if none came.
        Raises once the connection is lost (after what arrived before it)."""
        if not self._replies:
            await self._wait(timeout)
        replies, self._replies = self._replies, []
        if not replies and self._lost is not None:
            raise self._lost
        return [self._message(reply) for reply in replies]

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- inside -------------------------------------------------------------------------------

    def _send(self, *args: str) -> None:
        if self._lost is not None:
            raise self._lost
        if self._transport is None:
            raise redis.ConnectionError("pub/sub connection not open")
        self._transport.write(pack(*args))

    async def _wait(self, timeout: float | None = None) -> None:
        if self._lost is not None:
            raise self._lost
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        # A timer handle rather than asyncio.timeout: no exception is raised and caught per quiet
        # wait, and nothing is cancelled.
        timer = loop.call_later(timeout, self._wake) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    @staticmethod
    def _message(reply: Any) -> dict:
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ResponseError(str(reply))
        if not isinstance(reply, list) or not reply:
            return {"type": None, "channel": b"", "data": reply}
        kind = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if kind == "pong":
            return {"type": "pong", "channel": b"", "data": reply[1] if len(reply) > 1 else b""}
        channel = reply[1] if len(reply) > 1 else b""
        return {"type": kind, "channel": channel, "data": reply[2] if len(reply) > 2 else None}
