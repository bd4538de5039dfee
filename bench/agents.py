"""Agents for benchmarks: each token carries its creation time so the client can measure
the delay from creation to arrival across processes on one machine."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

from realtime.agents.base import AgentContext


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
