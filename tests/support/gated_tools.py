"""`demo.effect` with a gate inside its `local` write, for the exact moment of a kill: the row is
written, inside the run's transaction, and the tool waits there, before the call's result
commits, until the test opens the gate. A node killed at that moment must leave nothing behind
(the write and the result commit together or not at all), and the call made again by the node
that takes over must write its row once.

Everything else is `realtime.tools.demo.effect`: same name, same effect class (`local` without
REALTIME_DEMO_EFFECT_URL), same arguments and result. A call waits only in a conversation the
test named (`ToolGate.hold`), so other runs of the same node are not held. The gates are files,
like tests/support/gated_agent.py's: the same in the test process and in daphne nodes started
as subprocesses. Select with REALTIME_TOOLS=tests.support.gated_tools.effect,realtime.tools.demo.transfer
(`ToolGate.env`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from realtime.tools import demo
from realtime.tools.registry import Tool
from sessions_app import services
from tests.support.waiting import eventually

GATES_ENV = "TETHER_TEST_TOOL_GATES"
TOOLS = "tests.support.gated_tools.effect,realtime.tools.demo.transfer"
HOLD_LIMIT = 120.0
POLL = 0.02


def _gate(directory: Path, conversation_id: str, call_id: str) -> None:
    if not (directory / f"hold-{conversation_id}").exists():
        return
    (directory / f"arrived-{conversation_id}").write_text(call_id)
    deadline = time.monotonic() + HOLD_LIMIT
    while not (directory / f"open-{conversation_id}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"tool gate of {conversation_id} never opened")
        time.sleep(POLL)


def _write_then_wait(ctx: services.LocalContext, n: int) -> Any:
    result = demo._write_effect(ctx, n)  # noqa: SLF001 - exactly the demo's write
    gates = os.environ.get(GATES_ENV)
    if gates:
        _gate(Path(gates), ctx.conversation_id, ctx.call_id)
    return result


effect = Tool(
    name=demo.effect.name,
    fn=demo.effect.fn,
    local_fn=_write_then_wait,
    effect=demo.effect.effect,
    description=demo.effect.description,
    parameters=demo.effect.parameters,
)


class ToolGate:
    """The test's side: `hold(conversation)` before its call, `arrived`, then `open`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "tool-gates"
        self.directory.mkdir(exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        return {"REALTIME_TOOLS": TOOLS, GATES_ENV: str(self.directory)}

    def hold(self, conversation_id: str) -> None:
        (self.directory / f"hold-{conversation_id}").touch()

    async def arrived(self, conversation_id: str, timeout: float = 20.0) -> str:
        """The call_id held in this conversation (waits for it)."""
        path = self.directory / f"arrived-{conversation_id}"
        return await eventually(lambda: path.exists() and path.read_text(), timeout=timeout, interval=0.01,
                                what=f"a call held in {conversation_id}")

    def open(self, conversation_id: str) -> None:
        (self.directory / f"open-{conversation_id}").touch()
