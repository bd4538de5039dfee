"""A fault-injecting TCP proxy for tests and benchmarks.

Put it between a client and a real server (a daphne node, Redis, ...) to make the network
misbehave on demand: latency, a bandwidth cap, clean cuts (FIN), resets (RST), a blackhole
(traffic silently dropped while both TCP connections stay open) or a node that refuses new
connections. Every fault can be switched at any time and applies to live and new connections.

`FaultProxy` lives on the caller's event loop; `ThreadedFaultProxy` runs one on its own loop in a
background thread for synchronous code and for code whose event loop must not be shared.
Pure asyncio and stdlib, so it needs nothing beyond what the tests already have.

Why ~700 lines in one module: each fault is a small state of the same relay (the pair of
connections and its pumps); the threaded wrapper mirrors the same API. Splitting them would
scatter one proxy's behaviour over files that are always read together.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

__all__ = ["FaultProxy", "Pump", "ProxiedConnection", "RefuseMode", "ThreadedFaultProxy"]

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

RefuseMode = Literal["reset", "close"]
Direction = Literal["up", "down"]

CHUNK_SIZE = 64 * 1024
# Bytes a pump may hold in flight per direction before it stops reading (and TCP backpressure
# reaches the sender) - the proxy's "window". Throughput under latency L is at most limit / L.
DEFAULT_BUFFER_LIMIT = 4 * 1024 * 1024
# Under a bandwidth cap data leaves in slices worth this much time, so the flow is smooth
# instead of a 64 KiB burst followed by a long pause.
BANDWIDTH_SLICE_SECONDS = 0.02
# stop(): how long connections get to close cleanly before they are aborted.
STOP_GRACE_SECONDS = 0.75


def _set_rst_on_close(writer: asyncio.StreamWriter) -> None:
    """SO_LINGER (on, 0 s): close() then discards unsent data and sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, ValueError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _abort(writer: asyncio.StreamWriter) -> None:
    """Ends a connection with TCP RST, like a crashed host or a firewall reset."""
    _set_rst_on_close(writer)
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter) -> None:
    """Ends a connection with FIN. Half-closing first means the peer sees EOF right away even
    if close() itself is held back by data still being flushed."""
    transport = writer.transport
    if not transport.is_closing():
        with contextlib.suppress(OSError, RuntimeError):
            if transport.can_write_eof():
                transport.write_eof()
    transport.close()


async def _wait_for_change(event: asyncio.Event, timeout: float) -> None:
    """Sleeps up to `timeout`, waking early when a fault setting changes (so a lowered latency
    or a blackhole takes effect on data that is already waiting)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


@dataclass(frozen=True)
class _End:
    """End of one direction: clean EOF (`error` is None) or the error that broke the read."""

    error: BaseException | None = None


_Item = tuple[float, bytes | _End]


class _ByteQueue:
    """FIFO of (received_at, chunk) bounded in bytes, for exactly one producer and one consumer.

    Bounded by bytes rather than items so many small messages are not throttled by an item
    count, while a fast sender still meets backpressure eventually."""

    def __init__(self, limit: int) -> None:
        self._items: deque[tuple[_Item, int]] = deque()
        self._size = 0
        self._limit = limit
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    async def put(self, received: float, data: bytes) -> None:
        while self._size >= self._limit:
            self._space.clear()
            await self._space.wait()
        self._items.append(((received, data), len(data)))
        self._size += len(data)
        self._ready.set()

    def put_end(self, received: float, end: _End) -> None:
        """Ends never wait for space: they carry no payload and must not be lost."""
        self._items.append(((received, end), 0))
        self._ready.set()

    async def get(self) -> _Item:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item, size = self._items.popleft()
        self._size -= size
        if self._size < self._limit:
            self._space.set()
        return item


class Pump:
    """One direction of a proxied connection.

    A reader task timestamps each chunk into a queue and a writer task releases it at
    received + latency. Reading never waits for the delay, so a slow link still carries data at
    full speed (a long fat pipe), rather than one chunk per latency period."""

    def __init__(
        self,
        connection: ProxiedConnection,
        direction: Direction,
        source: asyncio.StreamReader,
        dest: asyncio.StreamWriter,
        buffer_limit: int,
    ) -> None:
        self.connection = connection
        self.direction = direction
        self.forwarded = 0  # bytes written towards the destination
        self.dropped = 0  # bytes discarded by the blackhole
        self.eof_forwarded = False
        # Loop time at which the source's EOF or error was read (None while it is open): when a
        # peer closed its side, even if a blackhole holds the news back from the other peer.
        self.source_ended_at: float | None = None
        self._source = source
        self._dest = dest
        self._queue = _ByteQueue(buffer_limit)
        self._next_send = 0.0  # bandwidth pacing: loop time the next slice may leave

    def __repr__(self) -> str:
        return f"<Pump {self.direction} forwarded={self.forwarded} dropped={self.dropped}>"

    async def read_loop(self) -> None:
        proxy = self.connection.proxy
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await self._source.read(CHUNK_SIZE)
            except Exception as exc:  # noqa: BLE001 - a peer reset or vanished: passed on in order, like an RST
                self.source_ended_at = loop.time()
                self._queue.put_end(loop.time(), _End(exc))
                return
            if not data:
                self.source_ended_at = loop.time()
                self._queue.put_end(loop.time(), _End())
                return
            if proxy.blackholed:
                self._drop(len(data))
                continue
            await self._queue.put(loop.time(), data)

    async def write_loop(self) -> None:
        try:
            await self._forward()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the destination is gone: tear the whole connection down
            self.connection.fail(exc)

    async def _forward(self) -> None:
        while True:
            received, item = await self._queue.get()
            if isinstance(item, _End):
                # EOF and errors are held (not dropped) by a blackhole: a real peer would
                # retransmit its FIN / RST until it gets through.
                await self._wait_until_due(received, hold=True)
                if item.error is not None:
                    self.connection.fail(item.error)
                else:
                    self._forward_eof()
                return
            if await self._wait_until_due(received, hold=False):
                await self._send(item)
            else:
                self._drop(len(item))

    async def _wait_until_due(self, received: float, *, hold: bool) -> bool:
        """Waits out the latency; False if the blackhole swallowed the item (unless `hold`)."""
        proxy = self.connection.proxy
        loop = asyncio.get_running_loop()
        while True:
            changed = proxy.changed
            if proxy.blackholed:
                if not hold:
                    return False
                await changed.wait()
                continue
            delay = received + proxy.latency - loop.time()
            if delay <= 0:
                return True
            await _wait_for_change(changed, delay)

    async def _send(self, data: bytes) -> None:
        proxy = self.connection.proxy
        loop = asyncio.get_running_loop()
        while data:
            changed = proxy.changed
            if proxy.blackholed:
                self._drop(len(data))
                return
            rate = proxy.bandwidth
            if rate is None:
                piece, data = data, b""
            else:
                now = loop.time()
                if self._next_send > now:
                    await _wait_for_change(changed, self._next_send - now)
                    continue
                size = max(1, int(rate * BANDWIDTH_SLICE_SECONDS))
                piece, data = data[:size], data[size:]
                # Timer lateness must not erode the rate, but idle time must not become a burst.
                self._next_send = max(self._next_send, now - BANDWIDTH_SLICE_SECONDS) + len(piece) / rate
            self._dest.write(piece)
            self.forwarded += len(piece)
            proxy.count(self.direction, len(piece))
            await self._dest.drain()

    def _forward_eof(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            if self._dest.can_write_eof():
                self._dest.write_eof()
        self.eof_forwarded = True

    def _drop(self, size: int) -> None:
        self.dropped += size
        self.connection.proxy.count_dropped(self.direction, size)


class ProxiedConnection:
    """One client connection and its upstream connection, joined by two pumps.

    It ends cleanly once both directions have passed on their EOF, with RST when either peer
    fails (mirroring the failure to the other side), or when the proxy cuts or resets it."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        buffer_limit: int,
    ) -> None:
        self.proxy = proxy
        self.client_address: tuple[str, int] | None = client[1].get_extra_info("peername")
        self.client_to_upstream = Pump(self, "up", client[0], upstream[1], buffer_limit)
        self.upstream_to_client = Pump(self, "down", upstream[0], client[1], buffer_limit)
        self.closed = False
        # "eof" (both sides finished), "cut", "reset", "error" (a peer failed) or "stopped"
        self.close_reason: str | None = None
        self.error: BaseException | None = None
        self._client_writer = client[1]
        self._upstream_writer = upstream[1]
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        state = self.close_reason or "open"
        return f"<ProxiedConnection {self.client_address} {state} up={self.bytes_up} down={self.bytes_down}>"

    @property
    def bytes_up(self) -> int:
        return self.client_to_upstream.forwarded

    @property
    def bytes_down(self) -> int:
        return self.upstream_to_client.forwarded

    @property
    def writers(self) -> tuple[asyncio.StreamWriter, asyncio.StreamWriter]:
        return self._client_writer, self._upstream_writer

    def cut(self) -> None:
        """Clean close: FIN to both peers, data still queued in the proxy is discarded."""
        self._end("cut", _close)

    def reset(self) -> None:
        """Abort: RST to both peers."""
        self._end("reset", _abort)

    async def run_until_closed(self) -> None:
        loop = asyncio.get_running_loop()
        for pump in (self.client_to_upstream, self.upstream_to_client):
            self._tasks.append(loop.create_task(pump.read_loop()))
            self._tasks.append(loop.create_task(pump.write_loop()))
        try:
            # return_exceptions: every task's outcome is collected, none is left "never retrieved"
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            if not self.closed:  # both EOFs went through, or the proxy is stopping
                self._end("eof" if self._both_eofs() else "stopped", _close)

    def _both_eofs(self) -> bool:
        return self.client_to_upstream.eof_forwarded and self.upstream_to_client.eof_forwarded

    def fail(self, exc: BaseException) -> None:
        if not self.closed:
            log.debug("%r failed: %r", self, exc)
            self.error = exc
            self._end("error", _abort)

    def _end(self, reason: str, closer: Callable[[asyncio.StreamWriter], None]) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for writer in self.writers:
            closer(writer)


class FaultProxy:
    """TCP proxy on the running event loop whose faults can be switched at any time.

    Not thread-safe: call it from its own loop (use ThreadedFaultProxy from other threads).
    Fault settings may be changed before start()."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    ) -> None:
        self.upstream = upstream
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.buffer_limit = buffer_limit
        # faults
        self.latency = 0.0
        self.bandwidth: float | None = None
        self.blackholed = False
        self.refusing: RefuseMode | None = None
        # counters (totals since construction, closed connections included)
        self.bytes_up = 0
        self.bytes_down = 0
        self.dropped_up = 0
        self.dropped_down = 0
        self.accepted = 0  # every accepted client socket, refused ones included
        self.refused = 0
        self.upstream_failures = 0  # clients reset because the upstream could not be reached
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: list[ProxiedConnection] = []
        self._connecting: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()

    def __repr__(self) -> str:
        where = f"{self.listen_host}:{self._port}" if self._port else "stopped"
        return f"<FaultProxy {where} -> {self.upstream[0]}:{self.upstream[1]}>"

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        if self._server is not None:
            raise RuntimeError("proxy already started")
        self._server = await asyncio.start_server(self._handle_client, self.listen_host, self.listen_port)
        self._port = self._server.sockets[0].getsockname()[1]
        log.debug("%r listening", self)
        return self

    async def stop(self) -> None:
        """Stops listening and closes every connection (FIN, RST for any that will not close);
        returns within about 2 s."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        self.cut()
        handlers = [task for task in self._handlers if not task.done()]
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.wait(handlers, timeout=STOP_GRACE_SECONDS)
        # close() waits for buffered data to be flushed; a peer that is not reading would keep
        # the socket open forever, so whatever has not closed by now is aborted.
        writers = [writer for conn in connections for writer in conn.writers]
        waits = [asyncio.ensure_future(_quietly_wait_closed(writer)) for writer in writers]
        if waits:
            await asyncio.wait(waits, timeout=STOP_GRACE_SECONDS)
            for writer, wait in zip(writers, waits, strict=True):
                if not wait.done():
                    _abort(writer)
            await asyncio.wait(waits, timeout=0.1)
            for wait in waits:
                wait.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 0.2)
        log.debug("%r stopped", self)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("proxy not started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self.listen_host, self.port

    def url(self, path: str = "/ws/v1/", scheme: str = "ws") -> str:
        return f"{scheme}://{self.listen_host}:{self.port}{path}"

    @property
    def connections(self) -> list[ProxiedConnection]:
        """Live proxied connections (connected to the upstream and not closed)."""
        return [conn for conn in self._connections if not conn.closed]

    # ---- faults -------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """One-way delay added to every chunk in both directions; applies to data already queued."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self.latency = float(seconds)
        self._notify()

    def set_bandwidth(self, bytes_per_second: float | None) -> None:
        """Throughput cap per direction and per connection; None removes it."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bandwidth must be > 0 (or None for unlimited)")
        self.bandwidth = bytes_per_second
        self._notify()

    def blackhole(self, enabled: bool = True) -> None:
        """Silently drop all traffic, both ways, on live and new connections, closing nothing:
        no FIN, no RST, so peers see a half-open connection. Bytes read meanwhile are discarded;
        an EOF or peer error that arrives meanwhile is held and passed on once it is turned off."""
        self.blackholed = enabled
        self._notify()

    def refuse(self, enabled: bool = True, mode: RefuseMode = "reset") -> None:
        """New clients are accepted then at once reset (RST, default) or closed (FIN, mode
        "close"), without any upstream connection: a node that is down while its port still
        answers. Live connections are left alone. The RST can reach a client before its
        connect() has returned, so either connect() or the first read/write fails."""
        self.refusing = mode if enabled else None

    def cut(self) -> int:
        """Closes all current connections cleanly: FIN to the clients and to the upstream.
        Returns how many client connections were closed."""
        return self._end_all(_close, ProxiedConnection.cut)

    def reset(self) -> int:
        """Aborts all current connections with TCP RST on both sides. Returns how many."""
        return self._end_all(_abort, ProxiedConnection.reset)

    def clear_faults(self) -> None:
        """Back to a perfect network: no latency, no cap, no blackhole, no refusal."""
        self.latency = 0.0
        self.bandwidth = None
        self.blackholed = False
        self.refusing = None
        self._notify()

    # ---- internals ----------------------------------------------------------------------

    def _notify(self) -> None:
        """Wakes every pump waiting on a delay so it re-reads the settings."""
        self.changed.set()
        self.changed = asyncio.Event()

    def count(self, direction: Direction, size: int) -> None:
        if direction == "up":
            self.bytes_up += size
        else:
            self.bytes_down += size

    def count_dropped(self, direction: Direction, size: int) -> None:
        if direction == "up":
            self.dropped_up += size
        else:
            self.dropped_down += size

    def _end_all(
        self, closer: Callable[[asyncio.StreamWriter], None], ender: Callable[[ProxiedConnection], None]
    ) -> int:
        connecting = list(self._connecting.items())
        self._connecting.clear()
        for task, writer in connecting:  # still connecting upstream: only the client exists
            task.cancel()
            closer(writer)
        live = self.connections
        for conn in live:
            ender(conn)
        return len(connecting) + len(live)

    async def _handle_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)  # also keeps the task referenced (asyncio only holds it weakly)
        task.add_done_callback(self._handlers.discard)
        self.accepted += 1
        if self.refusing is not None or self._server is None:
            self.refused += 1
            (_abort if self.refusing == "reset" else _close)(writer)
            return
        self._connecting[task] = writer
        try:
            upstream = await asyncio.open_connection(*self.upstream)
        except asyncio.CancelledError:
            if not writer.transport.is_closing():
                _abort(writer)
            raise
        except OSError as exc:
            self.upstream_failures += 1
            log.debug("%r: upstream unreachable (%r), resetting client", self, exc)
            _abort(writer)
            return
        finally:
            self._connecting.pop(task, None)
        conn = ProxiedConnection(self, (reader, writer), upstream, self.buffer_limit)
        self._connections.append(conn)
        try:
            await conn.run_until_closed()
        finally:
            self._connections.remove(conn)


async def _quietly_wait_closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        await writer.wait_closed()


def _read(name: str) -> property:
    """ThreadedFaultProxy's view of a FaultProxy attribute, read from the calling thread."""
    return property(lambda self: getattr(self.proxy, name), doc=f"FaultProxy.{name}")


def _on_loop(method: Callable[Concatenate[FaultProxy, P], T]) -> Callable[Concatenate[ThreadedFaultProxy, P], T]:
    """ThreadedFaultProxy's version of a FaultProxy method: run on the proxy's loop, waited for."""

    @functools.wraps(method)
    def call(self: ThreadedFaultProxy, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(functools.partial(method, self.proxy, *args, **kwargs))

    return call


class ThreadedFaultProxy:
    """A FaultProxy on its own event loop in a daemon thread.

    For synchronous code (benchmarks, plain-socket tests) and for async code on another loop.
    Every call is run on the proxy's loop and waited for, so a fault is in force when the call
    returns. Usable as a context manager; `options` are FaultProxy's (listen_host, listen_port,
    buffer_limit)."""

    def __init__(self, upstream: tuple[str, int], *, call_timeout: float = 5.0, **options: Any) -> None:
        self.proxy = FaultProxy(upstream, **options)
        self.call_timeout = call_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<ThreadedFaultProxy {self.proxy!r}>"

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> ThreadedFaultProxy:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name=f"fault-proxy-{id(self):x}", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self.proxy.start(), loop).result(self.call_timeout)
        except BaseException:
            self._stop_loop()
            raise
        return self

    def stop(self) -> None:
        """Closes every connection and the listener, then ends the thread (about 2 s at most)."""
        loop = self._loop
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), loop).result(self.call_timeout)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.call_timeout)

    def __enter__(self) -> ThreadedFaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        """Runs fn(*args) on the proxy's loop and returns its result (directly if not started)."""
        loop = self._loop
        if loop is None or threading.current_thread() is self._thread:
            return fn(*args)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread through the future
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(self.call_timeout)

    # ---- same surface as FaultProxy -----------------------------------------------------
    # Counters and the address are plain values, safe to read from any thread; the faults are
    # switched on the proxy's loop, and are in force when the call returns.
    port = _read("port")
    address = _read("address")
    bytes_up = _read("bytes_up")
    bytes_down = _read("bytes_down")
    accepted = _read("accepted")
    refused = _read("refused")
    set_latency = _on_loop(FaultProxy.set_latency)
    set_bandwidth = _on_loop(FaultProxy.set_bandwidth)
    blackhole = _on_loop(FaultProxy.blackhole)
    refuse = _on_loop(FaultProxy.refuse)
    cut = _on_loop(FaultProxy.cut)
    reset = _on_loop(FaultProxy.reset)
    clear_faults = _on_loop(FaultProxy.clear_faults)

    def url(self, path: str = "/ws/v1/", scheme: str = "ws") -> str:
        return self.proxy.url(path, scheme)

    @property
    def connections(self) -> list[ProxiedConnection]:
        """Snapshot of the live connections (their attributes are only read from this thread)."""
        return self._call(lambda: self.proxy.connections)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Body of ThreadedFaultProxy's thread: serve until stopped, then tidy up the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
