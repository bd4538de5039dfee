"""A client that never reads cannot make its node buffer a whole replay (issue 9, item 10).

A raw client with a tiny receive buffer asks for the whole log of a 40 MB conversation and then
reads nothing. The node's sender waits while the socket's transport holds more than
REALTIME_MAX_UNSENT_BYTES, and drops the socket (`slow_consumer`, 4408 on its row) once that
lasted REALTIME_SEND_STALL_TIMEOUT. The node's memory grows by a small part of the log while it
waits, and the node keeps serving others meanwhile."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from pathlib import Path

import pytest
import websockets
from channels.db import database_sync_to_async

from sessions_app.models import Connection, Conversation, Event
from tests.conftest import access_for
from tests.support.sdk_chat import FAST_NODE_ENV, wait_ready
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EVENTS = 10_000
TEXT = "x" * 4000  # ~40 MB of log in all
UNSENT_BOUND = 256 * 1024
STALL = 3.0


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _long_conversation(user) -> str:
    conversation = Conversation.objects.create(owner=user, last_seq=EVENTS)
    Event.objects.bulk_create(
        [Event(conversation=conversation, seq=s, type="note", payload={"text": TEXT}) for s in range(1, EVENTS + 1)],
        batch_size=1000,
    )
    return str(conversation.pk)


def _masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _open_non_reader(port: int, frame: dict) -> socket.socket:
    """A socket with a tiny receive buffer that says `connect` and then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/v1/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing after the handshake is read
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(_masked_text_frame(json.dumps(frame)))
    return sock


async def test_a_client_that_never_reads_is_bounded_and_dropped(daphne_cluster, user):
    node = daphne_cluster("slow", **FAST_NODE_ENV, REALTIME_MAX_UNSENT_BYTES=UNSENT_BOUND,
                          REALTIME_SEND_STALL_TIMEOUT=STALL, REALTIME_HEARTBEAT_TIMEOUT=120)
    await wait_ready(node)
    conversation_id = await database_sync_to_async(_long_conversation)(user)
    token = access_for(user)
    before = _rss(node.proc.pid)

    sock = await asyncio.to_thread(_open_non_reader, node.port, {
        "type": "connect", "token": token, "conversation_id": conversation_id, "last_seq": 0, "client_id": "stuck"})
    opened = time.monotonic()
    peak = before

    async def dropped():
        nonlocal peak
        peak = max(peak, _rss(node.proc.pid))
        row = await database_sync_to_async(
            lambda: Connection.objects.filter(client_id="stuck").values_list("close_code", "close_reason").first()
        )()
        return row if row is not None and row[0] is not None else None

    # Meanwhile the node serves others: a well-behaved client connects and gets ready at once.
    async with websockets.connect(node.ws_url) as other:
        await other.send(json.dumps({"type": "connect", "token": token, "conversation_id": None,
                                     "last_seq": None, "client_id": "fine"}))
        ready = json.loads(await asyncio.wait_for(other.recv(), 10))
        assert ready["type"] == "ready"

    row = await eventually(dropped, timeout=STALL + 30, interval=0.1, what="the non-reader dropped")
    took = time.monotonic() - opened
    sock.close()
    assert row == (4408, "slow_consumer")
    assert took >= STALL
    grew = peak - before
    print(f"\nnode RSS grew by {grew / 2**20:.1f} MiB while a non-reader asked for "
          f"{EVENTS * len(TEXT) / 2**20:.0f} MiB; dropped after {took:.1f} s")
    assert grew < 16 * 2**20, f"the node buffered {grew / 2**20:.1f} MiB for one socket"
