"""Redis connections of our own, spoken in RESP through hiredis: the pipelined connection that
carries the node's hot commands (`Pipeline`), and what it shares with the fan-out's pub/sub
connection (realtime/fanout/subscription.py): packing a command, opening the transport (TCP,
TLS or a unix socket, from REDIS_URL), AUTH and CLIENT SETNAME.

Why not redis-py for these: each redis-py command takes a connection from the pool for its whole
round trip and runs a coroutine chain with a retry wrapper and a timeout of its own. Measured on
one machine in one sitting (issue 22): 251 µs of node CPU per PUBLISH one at a time, 102 µs each
with 50 at once, against 83 and 8 µs for the same commands written on one connection and read
back in order. And the pool was a ceiling: in a burst of 500 answers starting together, callers
queued for its 32 connections until REALTIME_REDIS_TIMEOUT, and 27-47 of the 500 messages were
refused `unavailable` (their limit check had timed out) and had to be sent again. On one
pipelined connection a command is written at once, whoever else is waiting.

What `Pipeline` keeps from redis-py's behaviour, because callers rely on it: failures are
redis-py's exception types (`redis.ConnectionError`, `redis.TimeoutError`, `redis.ResponseError`:
realtime.infra.transient.TRANSIENT_ERRORS knows the first two), every command fails after
REALTIME_REDIS_TIMEOUT without a reply, and the next command after a lost connection connects
again.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis
from redis.connection import parse_url


def pack(*args: str | bytes | int | float) -> bytes:
    """One command in RESP: hiredis' own packer (C), byte for byte what a Python loop gave
    (numbers as `repr` writes them, as redis-py sends them) at a third of its cost; a resync's
    slot renewal packs thousands of arguments."""
    return hiredis.pack_command(args)


async def open_transport(protocol: asyncio.Protocol, options: dict) -> None:
    """Connects `protocol` to the Redis that `options` (redis.connection.parse_url) names."""
    loop = asyncio.get_running_loop()
    if "path" in options:
        await loop.create_unix_connection(lambda: protocol, options["path"])
        return
    context = None
    if options.get("connection_class") is redis.connection.SSLConnection:
        context = ssl.create_default_context()
        if options.get("ssl_cert_reqs") == "none":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    await loop.create_connection(lambda: protocol, options.get("host", "localhost"), options.get("port", 6379),
                                 ssl=context)


def handshake(options: dict, client_name: str | None) -> list[tuple[str, ...]]:
    """The commands a new connection sends first: AUTH when the URL has a password, SELECT for
    a database other than 0, CLIENT SETNAME when named."""
    commands: list[tuple[str, ...]] = []
    if options.get("password"):
        commands.append(("AUTH", options["username"], options["password"]) if options.get("username")
                        else ("AUTH", options["password"]))
    if options.get("db"):
        commands.append(("SELECT", str(options["db"])))
    if client_name:
        commands.append(("CLIENT", "SETNAME", client_name))
    return commands


def handshake_failed(command: tuple[str, ...], reply: Any) -> Exception | None:
    """The error a handshake reply means, or None. A Redis that renamed or disabled CLIENT still
    serves: the name only shows in `CLIENT LIST`."""
    if not isinstance(reply, hiredis.ReplyError) or command[0] == "CLIENT":
        return None
    if command[0] == "AUTH":
        return redis.AuthenticationError(str(reply))
    return redis.ResponseError(str(reply))


class Script:
    """A Lua script run by its SHA1 (EVALSHA), sent in full only when Redis does not have it
    (after a restart or SCRIPT FLUSH)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()  # Redis names scripts by their SHA1


class _Connection(asyncio.Protocol):
    """One open connection: commands written as they come, replies matched in order."""

    def __init__(self, lost: Callable[[_Connection], None]) -> None:
        self._reader = hiredis.Reader(encoding="utf-8")
        self._transport: asyncio.Transport | None = None
        # Each command's future and the loop time it was written, oldest first.
        self.waiting: collections.deque[tuple[asyncio.Future, float]] = collections.deque()
        self.failure: Exception | None = None
        # The timer watching the oldest command (Pipeline._check), armed while commands wait.
        self.watch: asyncio.TimerHandle | None = None
        self._lost = lost
        # Commands packed but not yet written: every command of one pass of the loop goes out in
        # one write. One write per command was a quarter of the loop's time when 500 answers
        # started together (500 PUBLISH in a row, a send() each; issue 22).
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self.waiting
        while (reply := self._reader.gets()) is not False:
            if not waiting:  # a reply nobody asked for: the stream cannot be trusted any more
                self.fail(redis.ConnectionError("Redis sent a reply to no command"))
                return
            future, _ = waiting.popleft()
            if not future.done():  # its caller may have been cancelled
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(redis.ConnectionError(f"connection to Redis lost: {exc or 'closed by Redis'}"))

    def send(self, args: Sequence[Any], now: float) -> asyncio.Future:
        if self.failure is not None:
            raise self.failure
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((future, now))
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(pack(*args))
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and self.failure is None:
            self._transport.write(b"".join(out))

    def fail(self, failure: Exception) -> None:
        """Every command still waiting fails with `failure`, and so does every later one."""
        if self.failure is None:
            self.failure = failure
            self._lost(self)
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        self._out.clear()
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(failure)


class Pipeline:
    """The node's connection for many callers' commands at once, on one event loop.

    Callers: `call(*args)` for one command, `eval(script, keys, args)` for a Lua script; both
    return the reply (bulk strings decoded as UTF-8) or raise redis-py's exceptions. Nothing is
    retried: a caller that cannot tell whether its command ran (a lost connection, a timeout)
    decides, as with redis-py.

    Connecting is lazy and shared: the first command after a loss connects, and commands that
    arrive meanwhile wait for that same attempt. A connection that leaves its oldest command
    unanswered for `timeout` seconds (a silent Redis: a partition, not a restart) is dropped,
    failing every command on it with `redis.TimeoutError`; one timer per connection watches the
    oldest command, not one per command.
    """

    def __init__(self, url: str, *, timeout: float, client_name: str | None = None) -> None:
        self.options = parse_url(url)
        self.timeout = timeout
        self.client_name = client_name
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future | None = None

    async def call(self, *args: Any) -> Any:
        connection = self._connection
        if connection is None or connection.failure is not None:
            connection = await self._connect()
        loop = asyncio.get_running_loop()
        future = connection.send(args, loop.time())
        if connection.watch is None:
            connection.watch = loop.call_later(self.timeout, self._check, connection)
        reply = await future
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ResponseError(str(reply))
        return reply

    async def eval(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        # EVAL runs it and keeps it: the next EVALSHA finds it.
        return await self.call("EVAL", script.text, len(keys), *keys, *args)

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.fail(redis.ConnectionError("connection closed"))

    # --- inside -------------------------------------------------------------------------------

    async def _connect(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        # Shielded: a caller that gives up does not cancel the attempt the others wait for.
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future) -> None:
        self._connecting = None
        if attempt.cancelled() or attempt.exception() is not None:
            return
        # Lost between its handshake and now (its `_forget` came before it was kept): not kept,
        # or every later command would fail on it.
        if attempt.result().failure is None:
            self._connection = attempt.result()

    async def _open(self) -> _Connection:
        connection = _Connection(self._forget)
        try:
            async with asyncio.timeout(self.timeout):
                await open_transport(connection, self.options)
                loop = asyncio.get_running_loop()
                for command in handshake(self.options, self.client_name):
                    reply = await connection.send(command, loop.time())
                    if (failure := handshake_failed(command, reply)) is not None:
                        raise failure
        except TimeoutError:
            connection.fail(redis.TimeoutError(f"no connection to Redis within {self.timeout:g} s"))
            raise connection.failure from None
        except OSError as exc:
            raise redis.ConnectionError(f"cannot connect to Redis: {exc}") from exc
        except BaseException:
            connection.fail(redis.ConnectionError("connecting to Redis failed"))
            raise
        return connection

    def _forget(self, connection: _Connection) -> None:
        if self._connection is connection:
            self._connection = None

    def _check(self, connection: _Connection) -> None:
        """The watch: drops the connection when its oldest command has waited `timeout` s."""
        connection.watch = None
        if connection.failure is not None or not connection.waiting:
            return
        loop = asyncio.get_running_loop()
        oldest = connection.waiting[0][1]
        if loop.time() - oldest >= self.timeout:
            connection.fail(redis.TimeoutError(f"no reply from Redis within {self.timeout:g} s"))
            return
        connection.watch = loop.call_at(oldest + self.timeout, self._check, connection)
