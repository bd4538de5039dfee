"""Through real daphne, a client frame over REALTIME_MAX_FRAME_BYTES always gets a close frame
(1009 or 4413), never a dropped connection (1006), up to well past 16 times the limit.

Frames up to twice the limit reach the application (`frame_too_large` error, then 4413);
larger ones are refused by autobahn's message-size check (1009) while the client is still
sending. Autobahn's default was to drop the TCP connection at once there: the unread rest of
the frame turned the close into a reset and the client saw 1006 with no close frame.
"""

import asyncio
import base64
import json
import os
import struct
from pathlib import Path

import pytest
import websockets
from channels.db import database_sync_to_async

from tests.conftest import access_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LIMIT = 64 * 1024  # REALTIME_MAX_FRAME_BYTES's default


def _message_of(size: int) -> str:
    """A valid `message` frame of exactly ``size`` bytes of UTF-8."""
    head = '{"type":"message","client_msg_id":"6f1e0c4a-8a4e-4a55-9d3c-1f0e2a7b9c11","text":"'
    tail = '"}'
    return head + "x" * (size - len(head) - len(tail)) + tail


async def _close_of_oversized(url: str, token: str, size: int) -> tuple[int | None, list[dict]]:
    """Connects, sends one frame of ``size`` bytes, returns the close code it got (None: no
    close frame) and the frames received after `ready`."""
    ws = await websockets.connect(url, open_timeout=10, max_size=None)
    try:
        await ws.send(json.dumps({"type": "connect", "token": token, "conversation_id": None,
                                  "last_seq": None, "client_id": f"big-{size}"}))
        ready = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert ready["type"] == "ready", ready
        frame = _message_of(size)
        assert len(frame.encode()) == size
        received: list[dict] = []
        try:
            await ws.send(frame)
            while True:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 20)))
        except websockets.ConnectionClosed:
            pass
        await asyncio.wait_for(ws.wait_closed(), 20)
        rcvd = ws.protocol.close_rcvd
        return (rcvd.code if rcvd is not None else None), received
    finally:
        ws.transport.abort()


# Just over the limit (reaches the app), twice the limit (the app's last size), just over
# twice (autobahn's check), and far over it, to past 16 times the limit.
SIZES = [LIMIT + 1, 2 * LIMIT, 2 * LIMIT + 1, 4 * LIMIT, 16 * LIMIT, 16 * LIMIT + 1, 20 * LIMIT]


async def test_oversized_frames_get_a_close_frame(daphne_cluster, user):
    node = daphne_cluster("big", REALTIME_MAX_FRAME_BYTES=LIMIT, REALTIME_DEMO_AGENT_DELAY_MS=0)
    token = await database_sync_to_async(access_for)(user)
    outcomes = {size: await _close_of_oversized(node.ws_url, token, size) for size in SIZES}
    codes = {size: code for size, (code, _) in outcomes.items()}
    assert all(code in (1009, 4413) for code in codes.values()), f"bytes -> close (None: no close frame): {outcomes}"
    for size, (code, received) in outcomes.items():
        if size <= 2 * LIMIT:
            # The application refuses it: error frame first (daphne drops close reasons), 4413.
            assert code == 4413, (size, code)
            assert received[-1]["type"] == "error" and received[-1]["code"] == "frame_too_large", received
        else:
            assert code == 1009, (size, code)


async def test_many_oversized_frames_in_a_row_each_get_a_close_frame(daphne_cluster, user):
    """Repeated: a close that races the rest of the frame must not win only sometimes."""
    node = daphne_cluster("bigrepeat", REALTIME_MAX_FRAME_BYTES=LIMIT, REALTIME_DEMO_AGENT_DELAY_MS=0)
    token = await database_sync_to_async(access_for)(user)
    codes = [(await _close_of_oversized(node.ws_url, token, 16 * LIMIT))[0] for _ in range(10)]
    assert set(codes) <= {1009}, codes


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _raw_websocket(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake by hand: the test then writes frame bytes as it likes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws/v1/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _server_close_code(reader: asyncio.StreamReader) -> int | None:
    """Reads server frames until a close frame (its code) or the end of the stream (None)."""
    try:
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", await reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await reader.readexactly(8))[0]
            payload = await reader.readexactly(length)
            if first & 0x0F == 0x8:
                return struct.unpack("!H", payload[:2])[0]
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


async def test_lingering_close_is_bounded_in_time_and_memory(daphne_cluster):
    """A client that announces a 1 TiB frame and streams it as fast as it can gets its 1009
    close frame, is reset once DAPHNE_CLOSE_HANDSHAKE_TIMEOUT is up, and the node keeps none
    of what it read: its memory does not grow with the bytes streamed."""
    linger = 2.0
    node = daphne_cluster("linger", REALTIME_MAX_FRAME_BYTES=LIMIT, DAPHNE_CLOSE_HANDSHAKE_TIMEOUT=linger)
    reader, writer = await _raw_websocket(node.port)
    rss_before = _rss_bytes(node.proc.pid)
    # A masked text frame of 2**40 bytes; a zero mask key leaves the payload as written.
    writer.write(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 2**40) + b"\0\0\0\0")
    loop = asyncio.get_running_loop()
    close_code = loop.create_task(_server_close_code(reader))
    chunk, sent, started = b"x" * 65536, 0, loop.time()
    rss_peak = rss_before
    try:
        while loop.time() - started < 5 * linger:  # well past the linger time: it must end it
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            if sent % (8 * 1024 * 1024) == 0:
                rss_peak = max(rss_peak, _rss_bytes(node.proc.pid))
        pytest.fail(f"still connected after {5 * linger:g} s and {sent} bytes: the close does not end")
    except ConnectionError:
        pass
    finally:
        writer.transport.abort()
    lasted = loop.time() - started
    assert await asyncio.wait_for(close_code, 10) == 1009
    assert lasted < linger + 2, f"the connection lived {lasted:.1f} s with a linger of {linger:g} s"
    # Enough streamed that keeping it would show: the node read it and threw it away.
    assert sent > 32 * 1024 * 1024, f"only {sent} bytes streamed in {lasted:.1f} s"
    grown = max(rss_peak, _rss_bytes(node.proc.pid)) - rss_before
    assert grown < 8 * 1024 * 1024, f"node grew by {grown} bytes while {sent} bytes were discarded"
