"""A deterministic agent that needs no network. It streams word by word, keeps memory, and acts
through the demo tools, which makes context preservation across reconnects, and side effects
that happen once across node deaths, visible to a person and to tests.

Commands (anywhere in the message):
- `count N` / `stream N`: the words w1 .. wN.
- `my name is X`, `what is my name`, `how many messages`: memory.
- `effect K` (1 <= K <= 20): K calls of `demo.effect`, one after another, each after
  REALTIME_DEMO_AGENT_DELAY_MS; after each result `effect n ok ` (or its status), then `done K`.
- `transfer N`: one call of `demo.transfer`, which needs a person's approval; the answer ends
  with `transferred N`, `transfer denied` or `transfer expired`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from django.conf import settings

from realtime.agents.base import AgentContext, ModelResponse, Step, ToolCall, ToolResult

_NAME_RE = re.compile(r"\bmy name is\s+([A-Za-z][\w'-]{0,40})", re.IGNORECASE)
_ASK_NAME_RE = re.compile(r"\bwhat(?:'s| is) my name\b", re.IGNORECASE)
_COUNT_RE = re.compile(r"\bhow many messages\b", re.IGNORECASE)
_WORDS_RE = re.compile(r"\b(?:count|stream)\s+(\d{1,5})\b", re.IGNORECASE)
_EFFECT_RE = re.compile(r"\beffect\s+(\d{1,5})\b", re.IGNORECASE)
_TRANSFER_RE = re.compile(r"\btransfer\s+(\d{1,12})\b", re.IGNORECASE)

MAX_EFFECTS = 20


def compose_answer(context: AgentContext) -> str:
    """The whole answer to a message that calls no tool, a pure function of the context; also
    updates context.memory."""
    text = context.user_text
    memory = context.memory
    memory["messages_seen"] = sum(1 for m in context.history if m["role"] == "user")
    if match := _NAME_RE.search(text):
        memory["name"] = match.group(1)
        return f"Nice to meet you, {memory['name']}. I will remember your name."
    if _ASK_NAME_RE.search(text):
        if "name" in memory:
            return f"Your name is {memory['name']}."
        return "I do not know your name yet. Tell me with 'my name is ...'."
    if _COUNT_RE.search(text):
        return f"You have sent {memory['messages_seen']} messages in this conversation."
    if match := _WORDS_RE.search(text):
        count = min(int(match.group(1)), 5000)
        return " ".join(f"w{i}" for i in range(1, count + 1))
    if match := _EFFECT_RE.search(text):
        return f"effect takes 1 to {MAX_EFFECTS} calls, not {int(match.group(1))}."
    return f"You said: {text}"


def split_words(answer: str) -> list[str]:
    """Word-sized deltas that concatenate back to the answer exactly (spaces kept)."""
    return re.findall(r"\S+\s*|\s+", answer)


def effect_count(context: AgentContext) -> int | None:
    match = _EFFECT_RE.search(context.user_text)
    if match is None or not 1 <= int(match.group(1)) <= MAX_EFFECTS:
        return None
    return int(match.group(1))


def transfer_ending(amount: int, result: ToolResult) -> str:
    if result.ok:
        return f"transferred {amount}"
    if result.status in ("denied", "unknown") and result.decision in ("denied", "expired"):
        # Never approved (or, its outcome lost, never approved again).
        return f"transfer {result.decision}"
    if result.status == "denied":
        return "transfer denied"
    return f"transfer {result.status}: {result.error}"  # error or unknown


class DemoAgent:
    def __init__(self, delay_ms: int | None = None):
        self.delay = (settings.REALTIME_DEMO_AGENT_DELAY_MS if delay_ms is None else delay_ms) / 1000

    async def pause(self, context: AgentContext, index: int) -> None:
        """Before the `index`-th word or call: the demo's pace. Not while replaying (that was
        done before; a continued run catches up at once)."""
        if self.delay and not context.replaying:
            await asyncio.sleep(self.delay)

    async def run(self, context: AgentContext) -> AsyncGenerator[Step, ToolResult | ModelResponse | None]:
        if (count := effect_count(context)) is not None:
            context.memory["messages_seen"] = sum(1 for m in context.history if m["role"] == "user")
            for n in range(1, count + 1):
                await self.pause(context, n - 1)
                result = yield ToolCall("demo.effect", {"n": n})
                yield f"effect {n} {result.status} "
            yield f"done {count}"
            return
        if match := _TRANSFER_RE.search(context.user_text):
            context.memory["messages_seen"] = sum(1 for m in context.history if m["role"] == "user")
            amount = int(match.group(1))
            result = yield ToolCall("demo.transfer", {"n": amount})
            yield transfer_ending(amount, result)
            return
        # Deterministic, so a continued run replays the same words and goes on from there.
        for index, word in enumerate(split_words(compose_answer(context))):
            await self.pause(context, index)
            yield word
