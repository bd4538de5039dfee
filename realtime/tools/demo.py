"""The demo agent's tools (realtime/agents/demo.py), so that anyone, and any black-box test,
can watch side effects happen exactly as their effect class promises.

- `demo.effect` (`idempotent`): POSTs `{"conversation_id", "run_id", "call_id", "n"}` to
  REALTIME_DEMO_EFFECT_URL with the `Idempotency-Key` and `Tether-Fence` headers. With the URL
  unset it is a `local` tool instead: it writes a DemoEffect row in Tether's own database
  (the admin lists them), exactly once.
- `demo.transfer` (`once`, approval required): the same POST, once, after a person approved
  it; never retried. With the URL unset nothing external exists to call: its result says
  `simulated`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from realtime.tools.context import ToolContext
from realtime.tools.registry import Tool
from sessions_app import services

N_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def _body(ctx: ToolContext, n: int) -> dict:
    return {"conversation_id": ctx.conversation_id, "run_id": ctx.run_id, "call_id": ctx.call_id, "n": n}


def _effect_class() -> str:
    return "idempotent" if settings.REALTIME_DEMO_EFFECT_URL else "local"


async def _post_effect(ctx: ToolContext, n: int) -> Any:
    answer = await ctx.post(settings.REALTIME_DEMO_EFFECT_URL, _body(ctx, n))
    return answer if answer is not None else {"n": n}


def _write_effect(ctx: services.LocalContext, n: int) -> dict:
    services.record_demo_effect(ctx.conversation_id, ctx.run_id, ctx.call_id, n)
    return {"n": n, "recorded": True}


async def _transfer(ctx: ToolContext, n: int) -> Any:
    if not settings.REALTIME_DEMO_EFFECT_URL:
        return {"n": n, "simulated": True}
    answer = await ctx.post(settings.REALTIME_DEMO_EFFECT_URL, _body(ctx, n))
    return answer if answer is not None else {"n": n}


effect = Tool(
    name="demo.effect",
    fn=_post_effect,
    local_fn=_write_effect,
    effect=_effect_class,
    description="Apply demo effect number n (POSTed to the demo sink, or recorded in Tether's database).",
    parameters=N_SCHEMA,
)

transfer = Tool(
    name="demo.transfer",
    fn=_transfer,
    effect="once",
    approval=True,
    description="Transfer n units (a demo): needs the user's approval; never retried.",
    parameters=N_SCHEMA,
)
