"""The tools of this deployment (`REALTIME_TOOLS`: dotted paths of `Tool` objects) and what each
declares: its effect class, its JSON Schema, whether a call needs a person's approval.

Effect classes (docs/protocol.md, "Tools and approvals"), each with what the runtime promises
when a node dies with a call in flight:
- `read`: no side effects; called again.
- `idempotent`: gets an effect key stable across takeovers (`ctx.effect_key`, sent as the
  `Idempotency-Key` header by `ctx.http`); called again with the same key.
- `local`: writes only Tether's database, inside the transaction the runtime hands it; that
  write and the call's recorded result commit together: exactly once.
- `once`: an external effect without idempotency; never called again. Its result is recorded
  `unknown` and the run asks the user whether to call it again or go on without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from realtime.agents.base import AgentContext, ToolSpec

EFFECTS = ("read", "idempotent", "local", "once")


@dataclass(frozen=True)
class Tool:
    """A tool. `fn` is `async def fn(ctx: ToolContext, **arguments)` for `read`, `idempotent`
    and `once` tools, and `def fn(ctx: LocalContext, **arguments)` (sync, in the runtime's
    transaction) for `local` ones; it returns a JSON value. `effect` may be a callable that
    decides it when a call is recorded (from settings, for instance). `approval` is True, or a
    policy `(arguments, context) -> bool` asked once per call, when it is recorded."""

    name: str
    fn: Callable[..., Any]
    effect: str | Callable[[], str]
    description: str = ""
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}})
    approval: bool | Callable[[dict, AgentContext], bool] = False
    # A `local` tool's function for when the effect is decided `local` while `fn` is the
    # external one (a tool that is one or the other by configuration, as `demo.effect`).
    local_fn: Callable[..., Any] | None = None

    def effect_now(self) -> str:
        effect = self.effect() if callable(self.effect) else self.effect
        if effect not in EFFECTS:
            raise ValueError(f"tool {self.name!r} declares effect {effect!r}; one of {EFFECTS}")
        return effect

    def needs_approval(self, arguments: dict, context: AgentContext) -> bool:
        return bool(self.approval(arguments, context) if callable(self.approval) else self.approval)

    def function_for(self, effect: str) -> Callable[..., Any]:
        return self.local_fn if effect == "local" and self.local_fn is not None else self.fn

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)


class UnknownTool(LookupError):
    pass


@cache
def _load(paths: tuple[str, ...]) -> dict[str, Tool]:
    tools: dict[str, Tool] = {}
    for path in paths:
        found = import_string(path)
        if not isinstance(found, Tool):
            raise TypeError(f"REALTIME_TOOLS: {path} is a {type(found).__name__}, not a realtime.tools.registry.Tool")
        if found.name in tools:
            raise ValueError(f"REALTIME_TOOLS: two tools are named {found.name!r}")
        tools[found.name] = found
    return tools


def tools() -> dict[str, Tool]:
    """The registered tools by name (REALTIME_TOOLS, read when asked: tests change it)."""
    return _load(tuple(settings.REALTIME_TOOLS))


def get(name: str) -> Tool:
    try:
        return tools()[name]
    except KeyError:
        raise UnknownTool(f"no tool named {name!r} (REALTIME_TOOLS: {', '.join(sorted(tools())) or 'none'})") from None


def specs() -> list[ToolSpec]:
    return [tool.spec for tool in tools().values()]
