"""Baseline for bench/stream_bench.py: the same token stream through a plain Channels
group_send, with no database and no durability. Served by daphne like the real node."""

from __future__ import annotations

import asyncio
import json
import os
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class BaselineConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.group = f"bench.{id(self)}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.seq = 0

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = json.loads(text_data or "{}")
        if frame.get("type") == "message":
            self.producer = asyncio.get_running_loop().create_task(self.produce())

    async def produce(self) -> None:
        rate = float(os.environ.get("BENCH_RATE", "20"))
        total = int(rate * float(os.environ.get("BENCH_SECONDS", "10")))
        start = time.monotonic()
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.channel_layer.group_send(
                self.group, {"type": "bench.delta", "index": i, "text": f"t{time.time():.6f} "}
            )
        await self.channel_layer.group_send(self.group, {"type": "bench.done", "count": total})

    async def bench_delta(self, message: dict) -> None:
        self.seq += 1
        await self.send(text_data=json.dumps({"type": "agent.delta", "seq": self.seq, "index": message["index"],
                                              "text": message["text"]}))

    async def bench_done(self, message: dict) -> None:
        self.seq += 1
        await self.send(text_data=json.dumps({"type": "agent.completed", "seq": self.seq}))


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/v1/", BaselineConsumer.as_asgi())])})
