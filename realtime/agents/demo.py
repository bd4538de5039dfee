"""A deterministic agent that needs no network. It streams word by word and keeps memory,
which makes context preservation across reconnects visible to a person and to tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from django.conf import settings

from realtime.agents.base import AgentContext

_NAME_RE = re.compile(r"\bmy name is\s+([A-Za-z][\w'-]{0,40})", re.IGNORECASE)
_ASK_NAME_RE = re.compile(r"\bwhat(?:'s| is) my name\b", re.IGNORECASE)
_COUNT_RE = re.compile(r"\bhow many messages\b", re.IGNORECASE)
_WORDS_RE = re.compile(r"\b(?:count|stream)\s+(\d{1,5})\b", re.IGNORECASE)


def compose_answer(context: AgentContext) -> str:
    """The whole answer, a pure function of the context; also updates context.memory."""
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
    return f"You said: {text}"


def split_words(answer: str) -> list[str]:
    """Word-sized deltas that concatenate back to the answer exactly (spaces kept)."""
    return re.findall(r"\S+\s*|\s+", answer)


class DemoAgent:
    def __init__(self, delay_ms: int | None = None):
        self.delay = (settings.REALTIME_DEMO_AGENT_DELAY_MS if delay_ms is None else delay_ms) / 1000

    async def stream(self, context: AgentContext) -> AsyncIterator[str]:
        answer = compose_answer(context)
        # Deterministic, so a continuation is the rest of the same answer.
        remaining = answer[len(context.partial_text):] if answer.startswith(context.partial_text) else ""
        for word in split_words(remaining):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield word
