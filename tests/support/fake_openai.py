"""A real OpenAI-compatible streaming HTTP server on loopback (plain asyncio), for tests.

It records every request it receives (`requests`, in arrival order) and answers each with a
`Behaviour`: one for all requests, or a script that picks one per request (`by_turn`: by the
number of tool round trips the request already holds, so a request sent again after a
takeover gets the same answer as the first time). A behaviour streams text pieces and raw
deltas (`tool_call_deltas` makes the `tool_calls` deltas of one call, fragmented as OpenAI
does), and can fail in the ways upstreams fail: an HTTP error, a dropped connection, a stall,
or a hold until the test releases it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Behaviour:
    # Text pieces (`delta.content`) or raw deltas (`{"tool_calls": [...]}`), one chunk each.
    chunks: list[str | dict] = field(default_factory=lambda: ["Hello", ", ", "world", "!"])
    drop_after: int | None = None  # close the TCP connection after this many chunks
    status: int = 200
    stall_after: int | None = None  # stop sending (without closing) after this many chunks
    chunk_delay: float = 0.005
    # The last chunk's finish_reason (`tool_calls` when the model asks for tools); None: no such chunk.
    finish_reason: str | None = "stop"
    usage: dict | None = None  # a usage-only chunk (no choices) before [DONE]
    # After `hold_after` chunks, wait until `release` is set (a request sent later passes at once).
    hold_after: int | None = None
    release: asyncio.Event | None = None
    # Raw SSE payloads sent instead of chunks (for unreadable streams).
    raw: list[str] | None = None
    done: bool = True  # False: the stream ends (cleanly) without `data: [DONE]`


Script = Behaviour | list[Behaviour] | Callable[[dict], Behaviour]


def tool_call_deltas(index: int, call_id: str | None, name: str, arguments: str, pieces: int = 3) -> list[dict]:
    """The deltas of one streamed call as OpenAI sends them: the id, type and name in the first
    chunk with empty arguments, then the arguments in `pieces` fragments (without an id)."""
    head: dict = {"index": index, "type": "function", "function": {"name": name, "arguments": ""}}
    if call_id is not None:
        head["id"] = call_id
    size = max(1, -(-len(arguments) // pieces))
    return [{"tool_calls": [head]}] + [
        {"tool_calls": [{"index": index, "function": {"arguments": arguments[start:start + size]}}]}
        for start in range(0, len(arguments), size)]


def turn_of(request: dict) -> int:
    """How many tool round trips the request holds: 0 for the first request of a run."""
    return sum(1 for m in request["messages"] if m["role"] == "assistant" and m.get("tool_calls"))


def by_turn(*behaviours: Behaviour) -> Callable[[dict], Behaviour]:
    """The n-th behaviour for requests after n tool round trips (the last one after that)."""
    return lambda request: behaviours[min(turn_of(request), len(behaviours) - 1)]


class FakeOpenAI:
    def __init__(self, script: Script | None = None):
        self.script = script if script is not None else Behaviour()
        self.requests: list[dict] = []
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def behaviour(self) -> Behaviour:
        """The behaviour of a server scripted with one."""
        assert isinstance(self.script, Behaviour)
        return self.script

    def _behaviour_for(self, request: dict) -> Behaviour:
        if isinstance(self.script, Behaviour):
            return self.script
        if isinstance(self.script, list):
            return self.script[min(len(self.requests) - 1, len(self.script) - 1)]
        return self.script(request)

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
            request = json.loads(await reader.readexactly(length))
            self.requests.append(request)
            b = self._behaviour_for(request)
            if b.status != 200:
                body = b'{"error": {"message": "upstream exploded"}}'
                writer.write(
                    f"HTTP/1.1 {b.status} Error\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            for payload in b.raw if b.raw is not None else self._payloads(b):
                if payload is _DROP:
                    writer.transport.abort()
                    return
                if payload is _STALL:
                    await asyncio.sleep(3600)
                if payload is _HOLD:
                    await b.release.wait()
                    continue
                writer.write(f"data: {payload}\n\n".encode())
                await writer.drain()
                await asyncio.sleep(b.chunk_delay)
            if b.done:
                writer.write(b"data: [DONE]\n\n")
                await writer.drain()
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    def _payloads(b: Behaviour):
        for i, piece in enumerate(b.chunks):
            if b.drop_after is not None and i >= b.drop_after:
                yield _DROP
            if b.stall_after is not None and i >= b.stall_after:
                yield _STALL
            if b.hold_after is not None and i == b.hold_after:
                yield _HOLD
            delta = {"content": piece} if isinstance(piece, str) else piece
            yield json.dumps({"choices": [{"index": 0, "delta": delta}]})
        if b.hold_after is not None and b.hold_after >= len(b.chunks):
            yield _HOLD
        if b.finish_reason is not None:
            yield json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": b.finish_reason}]})
        if b.usage is not None:
            yield json.dumps({"choices": [], "usage": b.usage})


_DROP, _STALL, _HOLD = object(), object(), object()
