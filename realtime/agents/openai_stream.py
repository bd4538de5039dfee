"""The OpenAI chat-completions wire, without I/O (realtime/agents/openai_compat.py does the HTTP):
reading one streamed response (its text and its `tool_calls` deltas, assembled into calls),
naming tools as OpenAI allows, and the messages an agent sends back after tool calls.

Streamed `tool_calls` (openai-python, `types/chat/chat_completion_chunk.py`): each chunk's
`choices[0].delta.tool_calls` holds items `{index, id?, type?, function?: {name?, arguments?}}`.
Servers differ, and each difference below has broken a client somewhere:

- `id`, `type` and `function.name` usually come only in the first chunk of an `index`; code
  that keys on `id` loses the arguments (sigoden/aichat #1495). So calls are keyed on `index`.
- `arguments` arrives in fragments, concatenated per `index`, and it "is not always valid
  JSON": it is parsed before anything is called (`parse_arguments`), and empty means `{}`.
- Ollama sends `index: 0` for every one of several calls, each with its own `id`
  (LibreChat-AI/agents PR #260): a new `id` with a `name` at an index whose call has another
  id opens a new call. Some servers change the `id` between fragments of one call
  (poolsideai/pool #9): a new `id` on a fragment without a name stays in the same call.
- Chunks with no `choices` carry only `usage` (OpenAI's `stream_options.include_usage`).

What must follow an assistant message with `tool_calls`: one `tool` message for **every** id,
a failed, denied or unknown call included; a missing one is an HTTP 400 on the next request
(BerriAI/litellm #10083).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from realtime.agents.base import ModelResponse, ToolResult, ToolSpec


class UnreadableStream(ValueError):
    """A chunk of the stream cannot be read (the message says which, for the agent's error)."""


# --- tool calls -------------------------------------------------------------------------------


@dataclass
class _Slot:
    index: int
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Streamed `tool_calls` delta items in, whole calls out: `[{"id", "name", "arguments"}]`
    (arguments as the model's JSON text), ordered by `index`, then by arrival within an index."""

    def __init__(self) -> None:
        self._slots: list[_Slot] = []
        self._current: dict[int, _Slot] = {}  # the open call of each index

    def add(self, item: dict) -> None:
        if not isinstance(item, dict):
            raise UnreadableStream(f"a tool_calls item is a {type(item).__name__}, not an object")
        index = item.get("index")
        if not isinstance(index, int):
            # Not in the spec, seen in the wild: no index means the call the stream is on.
            index = self._slots[-1].index if self._slots else 0
        call_id = item.get("id") or ""
        function = item.get("function") or {}
        if not isinstance(call_id, str) or not isinstance(function, dict):
            raise UnreadableStream("a tool_calls item's id is not a string or its function not an object")
        name = function.get("name")
        slot = self._current.get(index)
        # Another id with a name is another call (Ollama); another id on a bare fragment is the
        # same call under an id the server changed (poolsideai/pool #9): the first id stays.
        if slot is None or (call_id and slot.id and call_id != slot.id and name):
            slot = _Slot(index)
            self._slots.append(slot)
            self._current[index] = slot
        if call_id and not slot.id:
            slot.id = call_id
        if isinstance(name, str) and name and name != slot.name:
            # Sent once, or repeated whole by some servers (kept once), or in pieces (joined).
            slot.name += name
        arguments = function.get("arguments")
        if isinstance(arguments, (dict, list)):
            arguments = json.dumps(arguments)  # a server that sends the object, not its text
        if isinstance(arguments, str):
            slot.arguments.append(arguments)

    def calls(self) -> list[dict]:
        ordered = sorted(enumerate(self._slots), key=lambda pair: (pair[1].index, pair[0]))
        calls = []
        for position, (_, slot) in enumerate(ordered):
            # A server that sends no id: one is made up, deterministic (recorded with the response).
            calls.append({"id": slot.id or f"call_{position}", "name": slot.name,
                          "arguments": "".join(slot.arguments)})
        return calls


def parse_arguments(text: str) -> tuple[dict | None, str]:
    """A call's arguments as a JSON object, or None and why not (told to the model, which may
    try again). Empty arguments are `{}`."""
    if not text or not text.strip():
        return {}, ""
    try:
        arguments = json.loads(text)
    except ValueError as exc:
        return None, f"the arguments are not valid JSON ({exc}); send a JSON object"
    if not isinstance(arguments, dict):
        return None, f"the arguments are a JSON {type(arguments).__name__}, not an object; send a JSON object"
    return arguments, ""


# --- one streamed response --------------------------------------------------------------------


class ResponseReader:
    """The `data:` payloads of one streamed chat completion, in order. `feed` returns the text
    the payload adds; after `[DONE]`, `done` is true and `response()` is the whole response."""

    def __init__(self) -> None:
        self.done = False
        self._content: list[str] = []
        self._tool_calls = ToolCallAssembler()
        self._finish_reason: str | None = None
        self._usage: dict | None = None

    def feed(self, data: str) -> str:
        if data == "[DONE]":
            self.done = True
            return ""
        try:
            chunk = json.loads(data)
            if isinstance(chunk.get("error"), dict | str):
                # Some servers report a failure mid-stream as a chunk of its own.
                raise UnreadableStream(f"upstream reported an error mid-stream: {str(chunk['error'])[:200]}")
            if isinstance(chunk.get("usage"), dict):
                self._usage = chunk["usage"]
            choices = chunk["choices"]
            if not choices:
                return ""  # a usage-only chunk
            choice = choices[0]
            delta = choice.get("delta") or {}
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
            for item in delta.get("tool_calls") or ():
                self._tool_calls.add(item)
            content = delta.get("content") or ""
        except UnreadableStream:
            raise
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise UnreadableStream(f"unreadable chunk from upstream: {data[:100]}") from None
        if not isinstance(content, str):
            raise UnreadableStream(f"unreadable chunk from upstream: {data[:100]}")
        self._content.append(content)
        return content

    def response(self) -> ModelResponse:
        return ModelResponse("".join(self._content), self._tool_calls.calls(), self._finish_reason, self._usage)


# --- tools as functions, and what is sent back ------------------------------------------------

_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]")
MAX_FUNCTION_NAME = 64


class FunctionNames:
    """OpenAI's function names match `^[A-Za-z0-9_-]{1,64}$`; Tether's tool names may hold dots
    (`demo.effect`). Each tool is offered under its name with every other character replaced by
    `_` (`demo_effect`), made unique by a suffix if two tools collide; a name the model gives
    back is mapped to the tool (its exact tool name is accepted too)."""

    def __init__(self, tools: list[ToolSpec]) -> None:
        self.by_function: dict[str, str] = {}
        self.function_of: dict[str, str] = {}
        for spec in tools:
            base = _NOT_ALLOWED.sub("_", spec.name)[:MAX_FUNCTION_NAME] or "tool"
            name, n = base, 1
            while name in self.by_function:
                n += 1
                suffix = f"_{n}"
                name = base[:MAX_FUNCTION_NAME - len(suffix)] + suffix
            self.by_function[name] = spec.name
            self.function_of[spec.name] = name

    def tool(self, function: str) -> str | None:
        """The tool the model means by `function`, or None."""
        if function in self.by_function:
            return self.by_function[function]
        return function if function in self.function_of else None

    def declarations(self, tools: list[ToolSpec]) -> list[dict]:
        """The request's `tools` field."""
        return [{"type": "function", "function": {"name": self.function_of[spec.name],
                                                  "description": spec.description,
                                                  "parameters": spec.parameters}}
                for spec in tools]


def assistant_message(response: ModelResponse) -> dict:
    """The model's turn as it goes back in the next request: its text and the calls it asked for."""
    message: dict[str, Any] = {"role": "assistant", "content": response.content or None}
    if response.tool_calls:
        message["tool_calls"] = [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
            for call in response.tool_calls
        ]
    return message


def tool_message(call_id: str, result: ToolResult) -> dict:
    """What one call gave, for the model: `{"status": "ok", "result": ...}` or the status with
    its error (`error`, `unknown`: it may or may not have happened, `denied`: never made)."""
    if result.ok:
        content: dict[str, Any] = {"status": "ok", "result": result.result}
    elif result.status == "denied":
        decision = result.decision or "denied"
        content = {"status": "denied", "error": f"the call was not made: its approval was {decision}"}
    else:
        content = {"status": result.status, "error": result.error}
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(content, ensure_ascii=False, default=str)}
