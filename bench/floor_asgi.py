"""The floor for bench/floor_bench.py: a bare ASGI 3 application that speaks just enough of
Tether's protocol (docs/protocol.md) for the resume and streaming benchmark clients, with no
Django, no Channels consumer, no channel layer, no database and no Redis. Whatever it costs
is what daphne itself costs for the same frames:

    .venv/bin/python -m daphne -b 127.0.0.1 -p 8765 bench.floor_asgi:application

- `connect` with `conversation_id` "floor-K": `ready` (resumed, replay_count K) and then K
  `agent.delta` frames shaped like the events resume_bench appends, seqs after `last_seq`.
  Any other id replays nothing; `null` opens a new conversation (resumed false).
- `message`: BENCH_RATE tokens/s for BENCH_SECONDS s, one `agent.delta` per token, as
  bench/baseline_asgi.py produces them, then `agent.completed` with the whole text.
- `ping`: `pong`. Anything else (`ack`, binary frames, bad JSON) is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

# resume_bench's default event text, so that a replayed frame is as large as Tether's.
TEXT = "lorem ipsum dolor sit amet consectetur adipiscing "
PATH = "/ws/v1/"
HEARTBEAT_INTERVAL_MS = 25000
FLOOR_ID = re.compile(r"floor-(\d+)")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def replay_count(conversation_id: object) -> int:
    """K of a "floor-K" conversation id: how many events the client is said to have missed."""
    if isinstance(conversation_id, str) and (match := FLOOR_ID.fullmatch(conversation_id)):
        return int(match.group(1))
    return 0


class FloorSocket:
    """One WebSocket's protocol state: its conversation's last seq and its running stream."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.seq = 0
        self.producer: asyncio.Task | None = None

    async def send_text(self, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})

    async def on_text(self, text: str | None) -> None:
        try:
            frame = json.loads(text or "")
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind == "connect":
            await self.on_connect(frame)
        elif kind == "message":
            # Runs of a conversation execute one at a time, in message order (as Tether's do).
            self.producer = asyncio.get_running_loop().create_task(self.produce(self.producer))
        elif kind == "ping":
            await self.send_text(json.dumps({"type": "pong", "id": frame.get("id")}))

    async def on_connect(self, frame: dict) -> None:
        conversation_id = frame.get("conversation_id")
        last_seq = frame.get("last_seq")
        last_seq = last_seq if isinstance(last_seq, int) and not isinstance(last_seq, bool) else 0
        count = replay_count(conversation_id)
        resumed = conversation_id is not None
        if not resumed:
            conversation_id = str(uuid.uuid4())
        self.seq = last_seq + count
        await self.send_text(json.dumps({
            "type": "ready", "conversation_id": conversation_id, "resumed": resumed, "last_seq": self.seq,
            "replay_count": count, "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
            "access_expires_at": int(time.time()) + 3600, "node": "floor",
        }))
        # Daphne's send only queues bytes in Twisted's transport; they leave when the loop runs
        # the socket's writer callback. Without these yields `ready` would wait behind the
        # encoding and queueing of all K frames (measured: its first byte 25 ms after `connect`
        # for K=1000, instead of 1 ms), and the floor's open-to-ready would count the replay's
        # work. Two, because after one this task runs again before the writer callback that
        # the loop's poll just queued behind it.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # Encoded on every connect, after `ready` (the least a server can do before it): the
        # cost of turning a log into frames stays in the measured replay, as it does in Tether.
        # `index` counts the events after the first connect's replay, as the benchmark clients
        # number the events they ask to be written while they are away (rep * K + i).
        frames = [json.dumps({"type": "agent.delta", "seq": last_seq + 1 + i, "run_id": None,
                              "index": last_seq - count + i, "text": TEXT}) for i in range(count)]
        for text in frames:
            await self.send_text(text)

    async def produce(self, previous: asyncio.Task | None) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        rate = float(os.environ.get("BENCH_RATE", "20"))
        total = int(rate * float(os.environ.get("BENCH_SECONDS", "10")))
        run_id = str(uuid.uuid4())
        parts: list[str] = []
        start = time.monotonic()
        for i in range(total):
            # Paced from the start, not from the previous token: a late token does not push
            # the later ones back (bench/baseline_asgi.py's schedule).
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            text = f"t{time.time():.6f} "
            parts.append(text)
            self.seq += 1
            await self.send_text(json.dumps({"type": "agent.delta", "seq": self.seq, "run_id": run_id,
                                             "index": i, "text": text}))
        self.seq += 1
        await self.send_text(json.dumps({
            "type": "agent.completed", "seq": self.seq, "run_id": run_id,
            "message": {"id": str(uuid.uuid4()), "role": "assistant", "text": "".join(parts)},
        }))

    def stop(self) -> None:
        if self.producer is not None:
            self.producer.cancel()


async def websocket(scope: dict, receive: Receive, send: Send) -> None:
    socket = FloorSocket(send)
    try:
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.connect":
                # Tether refuses every other path at the handshake (403); so does the floor.
                await send({"type": "websocket.accept"} if scope.get("path") == PATH else {"type": "websocket.close"})
            elif kind == "websocket.receive":
                if event.get("text") is not None:
                    await socket.on_text(event["text"])
            elif kind == "websocket.disconnect":
                return
    finally:
        socket.stop()


async def not_found(receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"not found\n"})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: dict, receive: Receive, send: Send) -> None:
    """The ASGI 3 entry point daphne serves."""
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
    elif scope["type"] == "http":
        await not_found(receive, send)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
