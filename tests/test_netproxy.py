"""The fault-injecting TCP proxy used by tests and benchmarks (tests/support/netproxy.py).

An asyncio echo server on loopback stands in for a node; no database, no Django."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.support.netproxy import FaultProxy, ThreadedFaultProxy
from tests.support.ports import free_port
from tests.support.waiting import eventually, eventually_sync

RESET_ERRORS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


class EchoServer:
    """Echoes every byte; records how each connection ended ("eof" or "reset")."""

    def __init__(self) -> None:
        self.received = 0
        self.connections = 0
        self.outcomes: list[str] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> EchoServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        outcome = "eof"
        try:
            while data := await reader.read(65536):
                self.received += len(data)
                writer.write(data)
                await writer.drain()
        except RESET_ERRORS:
            outcome = "reset"
        finally:
            self.outcomes.append(outcome)
            writer.close()


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Fails the test if anything reached the loop's exception handler (e.g. "Task exception
    was never retrieved" from a pump that died unobserved)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    gc.collect()
    await asyncio.sleep(0)  # let exception-handler calls scheduled by finalizers run
    loop.set_exception_handler(previous)
    assert not errors, errors


@pytest.fixture
async def echo(loop_errors: list[dict[str, Any]]) -> AsyncIterator[EchoServer]:
    server = await EchoServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(("127.0.0.1", echo.port)) as fault_proxy:
        yield fault_proxy


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> float:
    """Sends payload, waits for its echo; returns the elapsed seconds."""
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    assert echoed == payload
    return time.monotonic() - started


async def read_or_error(reader: asyncio.StreamReader, timeout: float = 3) -> bytes | BaseException:
    try:
        return await asyncio.wait_for(reader.read(65536), timeout)
    except (OSError, TimeoutError) as exc:
        return exc


async def test_forwards_both_ways_and_counts(proxy: FaultProxy, echo: EchoServer) -> None:
    assert proxy.url() == f"ws://127.0.0.1:{proxy.port}/ws/v1/"
    assert proxy.url("/x") == f"ws://127.0.0.1:{proxy.port}/x"
    reader, writer = await connect(proxy)
    await roundtrip(reader, writer, b"hello")
    payload = bytes(range(256)) * 4096  # 1 MiB, checks ordering and integrity
    await roundtrip(reader, writer, payload)
    assert proxy.accepted == 1
    assert proxy.bytes_up == proxy.bytes_down == 5 + len(payload)
    [conn] = proxy.connections
    assert conn.bytes_up == conn.bytes_down == 5 + len(payload)

    writer.write_eof()  # half-close travels through; the echo server then closes, and so do we
    assert await read_or_error(reader) == b""
    await eventually(lambda: not proxy.connections, timeout=2, what="connection gone")
    assert conn.close_reason == "eof"
    assert echo.outcomes == ["eof"]
    writer.close()


async def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    assert await roundtrip(reader, writer, b"warm-up") < 0.2
    proxy.set_latency(0.2)
    rtt = await roundtrip(reader, writer, b"slow")
    assert 0.35 <= rtt < 1.5, rtt
    proxy.set_latency(0)
    assert await roundtrip(reader, writer, b"fast") < 0.15
    writer.close()


async def test_latency_does_not_serialize_throughput(proxy: FaultProxy) -> None:
    """2 MiB is read in 64 KiB chunks (>= 32 per direction); sleeping before each read would
    take >= 6 s, a delay queue takes about one round trip."""
    reader, writer = await connect(proxy)
    proxy.set_latency(0.1)
    elapsed = await roundtrip(reader, writer, b"x" * (2 * 1024 * 1024))
    assert 0.15 <= elapsed < 1.5, elapsed
    writer.close()


async def test_bandwidth_cap(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    size = 200_000
    cap = 400_000
    proxy.set_bandwidth(cap)
    elapsed = await roundtrip(reader, writer, b"b" * size)
    # up and down are capped separately but pipelined: about size / cap = 0.5 s
    assert 0.4 <= elapsed < 1.5, elapsed
    assert size / elapsed <= cap * 1.25
    proxy.set_bandwidth(None)
    assert await roundtrip(reader, writer, b"b" * size) < 0.3
    writer.close()


async def test_cut_sends_fin_both_ways(proxy: FaultProxy, echo: EchoServer) -> None:
    reader, writer = await connect(proxy)
    await roundtrip(reader, writer, b"before")
    assert proxy.cut() == 1
    assert await read_or_error(reader) == b""
    await eventually(lambda: echo.outcomes, timeout=2, what="upstream closed")
    assert echo.outcomes == ["eof"]
    assert proxy.connections == []
    writer.close()
    # the proxy itself keeps serving
    reader, writer = await connect(proxy)
    await roundtrip(reader, writer, b"after")
    writer.close()


async def test_reset_sends_rst_both_ways(proxy: FaultProxy, echo: EchoServer) -> None:
    reader, writer = await connect(proxy)
    await roundtrip(reader, writer, b"before")
    assert proxy.reset() == 1
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(100), 3)
    await eventually(lambda: echo.outcomes, timeout=2, what="upstream closed")
    assert echo.outcomes == ["reset"]
    writer.close()


async def test_blackhole_drops_traffic_but_keeps_connection_open(proxy: FaultProxy, echo: EchoServer) -> None:
    reader, writer = await connect(proxy)
    await roundtrip(reader, writer, b"before")
    proxy.blackhole()
    writer.write(b"lost")
    await writer.drain()  # writing succeeds: the peer's socket is open
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(100), 0.5)
    assert not reader.at_eof()
    assert not writer.transport.is_closing()
    assert len(proxy.connections) == 1
    assert echo.received == len(b"before")  # nothing reached the upstream
    assert echo.outcomes == []  # ...which saw neither FIN nor RST
    assert proxy.dropped_up == len(b"lost")

    # new connections are swallowed too
    reader2, writer2 = await connect(proxy)
    await eventually(lambda: len(proxy.connections) == 2, timeout=2, what="second connection")
    writer2.write(b"also lost")
    await writer2.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader2.read(100), 0.2)

    proxy.blackhole(False)
    await roundtrip(reader, writer, b"after")  # exactly the new bytes, none of the dropped ones
    await roundtrip(reader2, writer2, b"after too")
    writer.close()
    writer2.close()


async def test_blackhole_holds_eof_until_lifted(proxy: FaultProxy, echo: EchoServer) -> None:
    reader, writer = await connect(proxy)
    await roundtrip(reader, writer, b"before")
    proxy.blackhole()
    writer.write_eof()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(100), 0.3)
    assert echo.outcomes == []
    proxy.blackhole(False)
    assert await read_or_error(reader) == b""
    assert echo.outcomes == ["eof"]
    writer.close()


async def test_refuse_resets_new_connections_only(proxy: FaultProxy, echo: EchoServer) -> None:
    reader, writer = await connect(proxy)
    await roundtrip(reader, writer, b"before")
    proxy.refuse()
    with pytest.raises(RESET_ERRORS):
        refused_reader, refused_writer = await connect(proxy)
        try:
            await asyncio.wait_for(refused_reader.read(100), 3)
        finally:
            refused_writer.close()
    assert proxy.accepted == 2
    assert proxy.refused == 1
    assert echo.connections == 1  # a refused client never reaches the upstream
    await roundtrip(reader, writer, b"still up")  # existing connections are untouched

    proxy.refuse(mode="close")
    closed_reader, closed_writer = await connect(proxy)
    assert await read_or_error(closed_reader) == b""
    closed_writer.close()

    proxy.refuse(False)
    reader2, writer2 = await connect(proxy)
    await roundtrip(reader2, writer2, b"back")
    writer.close()
    writer2.close()


async def test_unreachable_upstream_resets_client(loop_errors: list[dict[str, Any]]) -> None:
    async with FaultProxy(("127.0.0.1", free_port())) as proxy:
        reader, writer = await connect(proxy)
        result = await read_or_error(reader)
        assert isinstance(result, ConnectionResetError), result
        assert proxy.upstream_failures == 1
        writer.close()


async def test_vanishing_peers_are_mirrored_quietly(proxy: FaultProxy, echo: EchoServer) -> None:
    """A client that dies with RST makes the proxy reset the upstream; nothing is logged as an
    unhandled error (the loop_errors fixture checks)."""
    reader, writer = await connect(proxy)
    await roundtrip(reader, writer, b"x")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()
    await eventually(lambda: echo.outcomes, timeout=2, what="upstream closed")
    assert echo.outcomes == ["reset"]
    await eventually(lambda: not proxy.connections, timeout=2, what="connection gone")


async def test_stop_closes_everything_quickly(echo: EchoServer) -> None:
    proxy = await FaultProxy(("127.0.0.1", echo.port)).start()
    clients = [await connect(proxy) for _ in range(3)]
    for reader, writer in clients:
        await roundtrip(reader, writer, b"hi")
    proxy.set_latency(5)  # data stuck in the delay queues must not hold stop() up
    clients[0][1].write(b"in flight")
    proxy.blackhole()
    started = time.monotonic()
    await proxy.stop()
    assert time.monotonic() - started < 2
    for reader, writer in clients:
        result = await read_or_error(reader)
        assert result == b"" or isinstance(result, RESET_ERRORS), result
        writer.close()
    assert proxy.connections == []
    with pytest.raises(OSError):
        await connect(proxy)


# ---- ThreadedFaultProxy, from synchronous code ---------------------------------------------


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


class _ThreadedEcho(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def sync_echo() -> Iterator[tuple[str, int]]:
    server = _ThreadedEcho(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[:2]
    server.shutdown()
    server.server_close()
    thread.join(2)


def _sync_roundtrip(sock: socket.socket, payload: bytes) -> float:
    started = time.monotonic()
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        received += chunk
    assert received == payload
    return time.monotonic() - started


def test_threaded_proxy_from_sync_code(sync_echo: tuple[str, int]) -> None:
    with ThreadedFaultProxy(sync_echo) as proxy:
        assert proxy.url() == f"ws://127.0.0.1:{proxy.port}/ws/v1/"
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=3)
        _sync_roundtrip(sock, b"hello")
        eventually_sync(lambda: proxy.bytes_down == 5, timeout=2, what="counted")
        assert len(proxy.connections) == 1

        proxy.set_latency(0.1)
        assert _sync_roundtrip(sock, b"slow") >= 0.15
        proxy.set_latency(0)

        proxy.blackhole()
        sock.sendall(b"lost")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.settimeout(3)
        proxy.blackhole(False)
        _sync_roundtrip(sock, b"back")

        assert proxy.cut() == 1
        assert sock.recv(100) == b""
        sock.close()

        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=3)
        _sync_roundtrip(sock, b"again")
        assert proxy.reset() == 1
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
        sock.close()

        proxy.refuse()
        # The RST can even beat connect() returning.
        with pytest.raises(RESET_ERRORS), socket.create_connection(("127.0.0.1", proxy.port), timeout=3) as refused:
            refused.recv(100)
        assert proxy.accepted == 3
        assert proxy.refused == 1

        proxy.refuse(False)
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=3)
        _sync_roundtrip(sock, b"last")
        started = time.monotonic()
    proxy_port = proxy.port
    assert time.monotonic() - started < 2
    assert sock.recv(100) == b""
    sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy_port), timeout=1).close()
