"""The agent interface the run supervisor drives (design: docs/architecture.md, "Tools").

An agent is one of two kinds:

- **Acting** (`run`): an async generator, driven with `asend`. It yields text (`str`), tool
  calls (`ToolCall`, answered with a `ToolResult`) and model requests (`ModelCall`, answered
  with a `ModelResponse`; the runtime sends the request, streams its text to the client and
  records it). A run continued by another node (after its node died, a drain, or an approval)
  is run again **from the start** and fed its journal: text already committed is dropped,
  recorded tool results and model responses are handed back without calling anything again.
  So an acting agent must be deterministic given its journal: the same context and the same
  results make it yield the same text and the same calls. A divergence fails the run; nothing
  is called. `context.replaying` is true while it is behind its journal (skip delays then).
- **Streaming** (`stream`): yields the answer's text only, and continues after
  `context.partial_text` (what the run already committed) when it is continued.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class ToolSpec:
    """A tool as an agent may offer it to a model: its name, what it does, its JSON Schema."""

    name: str
    description: str
    parameters: dict


@dataclass
class AgentContext:
    conversation_id: str
    # Oldest first, ending with the user message this run answers: [{"role", "text"}].
    history: list[dict]
    # The conversation's agent memory. Agents may mutate it; it is saved when the run completes.
    memory: dict = field(default_factory=dict)
    # Text this run already committed (non-empty when the run is continued after an
    # interruption). A streaming agent continues from here; an acting agent is replayed.
    partial_text: str = ""
    # The tools the agent may call (REALTIME_TOOLS).
    tools: list[ToolSpec] = field(default_factory=list)
    # True while an acting agent is being replayed behind its journal (set by the runtime
    # before each step): what it yields now was done before, so it need not wait or think.
    replaying: bool = False
    run_id: str = ""

    @property
    def user_text(self) -> str:
        return self.history[-1]["text"] if self.history else ""


@dataclass(frozen=True)
class ToolCall:
    """Yielded by an acting agent: call `tool` with `arguments` (a JSON object)."""

    tool: str
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ToolResult:
    """What a tool call gave: `ok` (with `result`), `error`, `unknown` (a `once` call whose
    outcome was lost, and the user did not approve calling it again: `decision` says whether
    that was denied or expired) or `denied` (never made: its approval was denied or expired;
    `decision` says which)."""

    status: str
    result: Any = None
    error: str = ""
    decision: str | None = None
    call_id: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class ModelResponse:
    """A completed model request: its text, the tool calls it asks for
    ([{"id", "name", "arguments"}], arguments as the model's JSON text), why it stopped."""

    content: str
    tool_calls: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict | None = None

    def as_record(self) -> dict:
        return {"content": self.content, "tool_calls": self.tool_calls, "finish_reason": self.finish_reason,
                "usage": self.usage}

    @classmethod
    def from_record(cls, record: dict) -> ModelResponse:
        return cls(record.get("content", ""), list(record.get("tool_calls") or []), record.get("finish_reason"),
                   record.get("usage"))


# send(request, partial): streams the response's text pieces, then ends with one ModelResponse.
# `partial` is the text an interrupted earlier sending of the same request already streamed
# (committed, so the client has it): the new response must continue it, not repeat it.
ModelSend = Callable[[dict, str], AsyncIterator["str | ModelResponse"]]


@dataclass(frozen=True)
class ModelCall:
    """Yielded by an acting agent: send `request` with `send`. The runtime sends it only if its
    response was not recorded before, streams its text to the client, and records it."""

    request: dict
    send: ModelSend


Step = str | ToolCall | ModelCall


class ActingAgent(Protocol):
    def run(self, context: AgentContext) -> AsyncGenerator[Step, ToolResult | ModelResponse | None]:
        """Yields text, tool calls and model requests; receives each call's result."""
        ...


class StreamingAgent(Protocol):
    def stream(self, context: AgentContext) -> AsyncIterator[str]:
        """Yields the rest of the answer as text deltas (after `context.partial_text`)."""
        ...


Agent = ActingAgent | StreamingAgent


def is_acting(agent: Any) -> bool:
    return callable(getattr(agent, "run", None))


def load_agent() -> Agent:
    """A fresh agent for one run, from the REALTIME_AGENT dotted path."""
    return import_string(settings.REALTIME_AGENT)()
