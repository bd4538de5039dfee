"""A demo agent whose long answers wait on a gate the test opens: "the run is still streaming
when X happens" then holds on any machine, however fast or slow, instead of depending on a
per-word delay outlasting the test's own steps.

It answers exactly as the demo agent does (same text, same word deltas, same continuation
after an interruption), but the word at index `TETHER_TEST_GATE_AFTER` (default 10) and every
later one wait until the gate is open. Short answers ("count 5") never reach the gate.

The gate is a file: open when the path named by `TETHER_TEST_GATE` exists. A file works the
same in the test process and in daphne nodes started as subprocesses (they inherit the
environment), and survives a node's restart. Select it with
`REALTIME_AGENT=tests.support.gated_agent.GatedAgent`.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from realtime.agents.base import AgentContext
from realtime.agents.demo import DemoAgent

AGENT = "tests.support.gated_agent.GatedAgent"
GATE_ENV = "TETHER_TEST_GATE"
AFTER_ENV = "TETHER_TEST_GATE_AFTER"
DEFAULT_AFTER = 10
POLL = 0.02
# A gate never holds forever: a test that forgot to open it fails (the run fails) instead of
# hanging until the suite's timeout.
HOLD_LIMIT = 120.0


class GatedAgent(DemoAgent):
    def __init__(self, delay_ms: int | None = None) -> None:
        super().__init__(delay_ms)
        gate = os.environ.get(GATE_ENV)
        self.gate = Path(gate) if gate else None
        self.after = int(os.environ.get(AFTER_ENV, DEFAULT_AFTER))

    async def _wait_open(self) -> None:
        deadline = time.monotonic() + HOLD_LIMIT
        while not self.gate.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent gate {self.gate} never opened")
            await asyncio.sleep(POLL)

    async def pause(self, context: AgentContext, index: int) -> None:
        """The demo's pause, and the gate for the words from `after` on (not while a continued
        run replays what it did before: those words are committed already)."""
        if self.gate is not None and index >= self.after and not context.replaying:
            await self._wait_open()
        await super().pause(context, index)


class AgentGate:
    """The test's side of the gate: the environment that selects the agent, and `open()`."""

    def __init__(self, directory: Path, after: int = DEFAULT_AFTER) -> None:
        self.path = directory / "agent-gate-open"
        self.after = after

    @property
    def env(self) -> dict[str, str]:
        """Node environment (daphne_cluster keywords) for the gated agent."""
        return {"REALTIME_AGENT": AGENT, GATE_ENV: str(self.path), AFTER_ENV: str(self.after)}

    def open(self) -> None:
        self.path.touch()

    @property
    def is_open(self) -> bool:
        return self.path.exists()

    def install(self, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
        """Selects the gated agent in this process (in-process tests; `settings` is
        pytest-django's fixture, which restores REALTIME_AGENT afterwards)."""
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        settings.REALTIME_AGENT = AGENT
