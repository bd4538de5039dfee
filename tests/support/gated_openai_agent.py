"""An OpenAI-compatible agent whose model requests that follow a tool result wait on a gate
until the test opens it: "the node dies after the first tool result, before the next request
leaves it" then holds on any machine. The gate is a file (open when it exists), so it works the
same in daphne nodes started as subprocesses; the node that takes the run over finds it open.
Select it with `REALTIME_AGENT=tests.support.gated_openai_agent.GatedOpenAIAgent`."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from realtime.agents.openai_compat import OpenAICompatibleAgent
from tests.support.fake_openai import turn_of
from tests.support.gated_agent import HOLD_LIMIT, POLL

AGENT = "tests.support.gated_openai_agent.GatedOpenAIAgent"
GATE_ENV = "TETHER_TEST_OPENAI_GATE"


class GatedOpenAIAgent(OpenAICompatibleAgent):
    async def send(self, request, partial):
        gate = os.environ.get(GATE_ENV)
        if gate and turn_of(request) >= 1:
            deadline = time.monotonic() + HOLD_LIMIT
            while not Path(gate).exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"model request gate {gate} never opened")
                await asyncio.sleep(POLL)
        async for item in super().send(request, partial):
            yield item


class OpenAIGate:
    """The test's side: the node environment that selects the agent, and `open()`."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "openai-gate-open"

    @property
    def env(self) -> dict[str, str]:
        return {"REALTIME_AGENT": AGENT, GATE_ENV: str(self.path)}

    def open(self) -> None:
        self.path.touch()
