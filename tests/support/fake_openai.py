"""A real OpenAI-compatible streaming HTTP server on loopback (plain asyncio), for tests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field


@dataclass
class Behaviour:
    chunks: list[str] = field(default_factory=lambda: ["Hello", ", ", "world", "!"])
    drop_after: int | None = None  # close the TCP connection after this many chunks
    status: int = 200
    stall_after: int | None = None  # stop sending (without closing) after this many chunks
    chunk_delay: float = 0.005


class FakeOpenAI:
    def __init__(self, behaviour: Behaviour | None = None):
        self.behaviour = behaviour or Behaviour()
        self.requests: list[dict] = []
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aenter__(self) -> FakeOpenAI:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        for writer in list(self._writers):
            writer.close()
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode().split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            self.requests.append(json.loads(await reader.readexactly(length)))
            b = self.behaviour
            if b.status != 200:
                body = b'{"error": {"message": "upstream exploded"}}'
                writer.write(
                    f"HTTP/1.1 {b.status} Error\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            for i, text in enumerate(b.chunks):
                if b.drop_after is not None and i >= b.drop_after:
                    writer.transport.abort()
                    return
                if b.stall_after is not None and i >= b.stall_after:
                    await asyncio.sleep(3600)
                chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
                writer.write(f"data: {json.dumps(chunk)}\n\n".encode())
                await writer.drain()
                await asyncio.sleep(b.chunk_delay)
            writer.write(b"data: [DONE]\n\n")
            await writer.drain()
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
