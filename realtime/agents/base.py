"""The agent interface the run supervisor drives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string


@dataclass
class AgentContext:
    conversation_id: str
    # Oldest first, ending with the user message this run answers: [{"role", "text"}].
    history: list[dict]
    # The conversation's agent memory. Agents may mutate it; it is saved when the run completes.
    memory: dict = field(default_factory=dict)
    # Text this run already committed (non-empty when the run is continued after an
    # interruption): the agent continues from here instead of starting over.
    partial_text: str = ""

    @property
    def user_text(self) -> str:
        return self.history[-1]["text"] if self.history else ""


class Agent(Protocol):
    def stream(self, context: AgentContext) -> AsyncIterator[str]:
        """Yields the rest of the answer as text deltas (after `context.partial_text`)."""
        ...


def load_agent() -> Agent:
    """A fresh agent for one run, from the REALTIME_AGENT dotted path."""
    return import_string(settings.REALTIME_AGENT)()
