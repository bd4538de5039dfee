"""Stand-ins for the demo's tools in in-process tests: the same names (`demo.effect`,
`demo.transfer`), so the demo agent's `effect K` and `transfer N` call them, and the same effect
classes as with REALTIME_DEMO_EFFECT_URL set (`idempotent`, `once` with approval); but each call
is recorded here with its headers' values, and a call can be held at a gate (the node "dies"
while it is under way). Select them with `settings.REALTIME_TOOLS = HELD_TOOLS` (the
`held_tools` fixture of the tests that use them)."""

from __future__ import annotations

from dataclasses import dataclass

from realtime.tools.context import ToolContext
from realtime.tools.registry import Tool
from tests.support.gates import Gate

HELD_TOOLS = ["tests.support.held_tools.effect", "tests.support.held_tools.transfer"]


@dataclass(frozen=True)
class Made:
    tool: str
    call_id: str
    effect_key: str
    fence: int
    n: int


class Calls:
    """Every call made, and the gate the next calls of a tool hold at (if any)."""

    def __init__(self) -> None:
        self.made: list[Made] = []
        self.gates: dict[str, Gate] = {}
        # Raised by the next call of a tool instead of answering (TimeoutError, OutcomeUnknown...).
        self.failures: dict[str, BaseException] = {}

    async def call(self, name: str, ctx: ToolContext, n: int) -> dict:
        self.made.append(Made(name, ctx.call_id, ctx.effect_key, ctx.fencing_token, n))
        gate = self.gates.get(name)
        if gate is not None:
            await gate.hold_async()
        failure = self.failures.pop(name, None)
        if failure is not None:
            raise failure
        return {"n": n}

    def of(self, name: str) -> list[Made]:
        return [m for m in self.made if m.tool == name]


CALLS = Calls()


async def _effect(ctx: ToolContext, n: int) -> dict:
    return await CALLS.call("demo.effect", ctx, n)


async def _transfer(ctx: ToolContext, n: int) -> dict:
    return await CALLS.call("demo.transfer", ctx, n)


effect = Tool("demo.effect", fn=_effect, effect="idempotent")
transfer = Tool("demo.transfer", fn=_transfer, effect="once", approval=True)
