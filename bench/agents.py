"""Agents for benchmarks: each token carries its creation time so the client can measure
the delay from creation to arrival across processes on one machine; tool calls are timed where
the agent makes them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator

from realtime.agents.base import AgentContext, Step, ToolCall, ToolResult
from realtime.tools.registry import Tool


class TickAgent:
    """Streams BENCH_RATE tokens per second for BENCH_SECONDS seconds: "t<unix time> "."""

    def __init__(self) -> None:
        self.rate = float(os.environ.get("BENCH_RATE", "20"))
        self.seconds = float(os.environ.get("BENCH_SECONDS", "10"))

    async def stream(self, context: AgentContext) -> AsyncIterator[str]:
        total = int(self.rate * self.seconds)
        already = context.partial_text.count(" ")
        start = time.monotonic()
        for i in range(already, total):
            # Paced against the start, so slow iterations do not lower the rate.
            delay = start + (i - already) / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield f"t{time.time():.6f} "


def _write_effect(ctx, n: int) -> dict:
    from realtime.tools import demo

    return demo._write_effect(ctx, n)  # noqa: SLF001 - exactly the demo's `local` write


# `demo.effect`'s local write under its own name, so that one node (REALTIME_TOOLS with both)
# can make `local` and `idempotent` calls in the same sitting (bench/tool_bench.py).
local_effect = Tool(name="bench.local_effect", fn=_write_effect, effect="local",
                    parameters={"type": "object", "properties": {"n": {"type": "integer"}}})


class ToolCallsAgent:
    """Acting (bench/tool_bench.py): "calls N" makes N calls of `demo.effect` one after another
    ("calls N local": of `bench.local_effect`), with no text between them, each timed in the
    agent from the yield of the call to the result it gets back: the whole cost of one call as
    an agent sees it (the journal's writes and their publishes, the tool itself). Then one
    text: a JSON object with the latencies in µs."""

    async def run(self, context: AgentContext) -> AsyncGenerator[Step, ToolResult | None]:
        match = re.search(r"\bcalls\s+(\d+)(\s+local)?", context.user_text)
        count = int(match.group(1)) if match else 1
        tool = "bench.local_effect" if match and match.group(2) else "demo.effect"
        latencies, failed = [], 0
        for n in range(1, count + 1):
            start = time.perf_counter()
            result = yield ToolCall(tool, {"n": n})
            latencies.append(round((time.perf_counter() - start) * 1e6))
            failed += not result.ok
        yield json.dumps({"latencies_us": latencies, "failed": failed})
