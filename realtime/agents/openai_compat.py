"""An acting agent for any OpenAI-compatible chat-completions endpoint, streamed over SSE, with
function calling (design: docs/architecture.md, "Tools").

A run is a loop of turns. Each turn is one model request, yielded as a `ModelCall`: the runtime
sends it (through `send`), streams its text to the client as `agent.delta`, and records the
response when it completes. If the response asks for tools, each call is yielded as a
`ToolCall` in index order, and the next request carries the assistant message (its text and
`tool_calls`) and one `tool` message per call, whatever its outcome. A response without tool
calls ends the run. At most REALTIME_AGENT_MAX_TURNS requests are sent; the last is sent with
`tool_choice: "none"`, so the model answers in text.

Continued by another node, the agent runs again from the start: recorded requests are answered
from the journal (never sent, never billed again), recorded tool results are handed back, and
the request that was in flight is sent again with the text it had already streamed (`partial`)
and an instruction to continue it. Everything the agent decides (which call, which error goes
back to the model) follows from recorded responses, so the replay decides the same.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator

import httpx
from django.conf import settings

from realtime.agents.base import AgentContext, ModelCall, ModelResponse, Step, ToolCall, ToolResult
from realtime.agents.openai_stream import (
    FunctionNames,
    ResponseReader,
    UnreadableStream,
    assistant_message,
    parse_arguments,
    tool_message,
)

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without repeating "
    "anything already written and without any preamble."
)


class AgentStreamError(Exception):
    """The upstream failed (an HTTP error, a timeout, a broken or unreadable stream): the run
    fails. Every message this agent fails with is made here, in `_failure`."""


def _failure(kind: str, detail: str = "") -> AgentStreamError:
    messages = {
        "http": "upstream answered HTTP {detail}",
        "timeout": "upstream timed out: {detail}",
        "connection": "upstream connection failed: {detail}",
        "no_done": "upstream stream ended before [DONE]",
        "unreadable": "{detail}",
        "turns": "the model still asked for tools in its last allowed request ({detail}; REALTIME_AGENT_MAX_TURNS)",
    }
    return AgentStreamError(messages[kind].format(detail=detail))


def build_messages(context: AgentContext) -> list[dict]:
    """The conversation as the model sees it: what the agent remembers, then the history."""
    messages: list[dict] = []
    if context.memory:
        memory = json.dumps(context.memory, ensure_ascii=False)
        messages.append({"role": "system", "content": f"What you remember about this conversation: {memory}"})
    messages.extend({"role": m["role"], "content": m["text"]} for m in context.history)
    return messages


def continued(request: dict, partial: str) -> dict:
    """The request again after a node died while its answer streamed: the model sees what the
    user already received, so the text continues rather than restarts."""
    if not partial:
        return request
    return {**request, "messages": [*request["messages"], {"role": "assistant", "content": partial},
                                    {"role": "user", "content": CONTINUE_INSTRUCTION}]}


class OpenAICompatibleAgent:
    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_turns: int | None = None,
    ):
        self.base_url = (base_url or settings.OPENAI_BASE_URL).rstrip("/")
        self.model = model or settings.OPENAI_MODEL
        self.api_key = settings.OPENAI_API_KEY if api_key is None else api_key
        self.timeout = settings.OPENAI_TIMEOUT if timeout is None else timeout
        self.max_turns = max(1, settings.REALTIME_AGENT_MAX_TURNS if max_turns is None else max_turns)

    def request(self, messages: list[dict], functions: FunctionNames, context: AgentContext, *, last: bool) -> dict:
        """One turn's request body (a copy: the runtime hashes it, the agent's list grows)."""
        body: dict = {"model": self.model, "messages": list(messages), "stream": True}
        if context.tools:
            body["tools"] = functions.declarations(context.tools)
            if last:
                body["tool_choice"] = "none"
        return body

    async def run(self, context: AgentContext) -> AsyncGenerator[Step, ToolResult | ModelResponse | None]:
        functions = FunctionNames(context.tools)
        messages = build_messages(context)
        for turn in range(1, self.max_turns + 1):
            response = yield ModelCall(self.request(messages, functions, context, last=turn == self.max_turns),
                                       self.send)
            if not response.tool_calls:
                return
            if turn == self.max_turns:
                raise _failure("turns", f"{turn} of {self.max_turns}")
            messages.append(assistant_message(response))
            # Every call gets its tool message, in the order the model gave them.
            for call in response.tool_calls:
                tool = functions.tool(call["name"])
                arguments, problem = parse_arguments(call["arguments"])
                if tool is None:
                    # Decided from the recorded response: the same on every replay; never a call.
                    offered = ", ".join(functions.by_function) or "none"
                    result = ToolResult("error", error=f"there is no tool named {call['name']!r} (tools: {offered})")
                elif arguments is None:
                    result = ToolResult("error", error=problem)
                else:
                    result = yield ToolCall(tool, arguments)
                messages.append(tool_message(call["id"], result))

    async def send(self, request: dict, partial: str) -> AsyncIterator[str | ModelResponse]:
        """Sends one request and streams its text; ends with the whole response (base.ModelSend).
        `partial`: what an interrupted sending of this request already streamed."""
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        # The read timeout bounds the gap between two chunks: a stalled upstream fails the run.
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        reader = ResponseReader()
        try:
            async with httpx.AsyncClient(timeout=timeout) as client, client.stream(
                "POST", f"{self.base_url}/chat/completions", json=continued(request, partial), headers=headers
            ) as r:
                if r.status_code >= 400:
                    detail = (await r.aread()).decode("utf-8", "replace")[:300]
                    raise _failure("http", f"{r.status_code}: {detail}")
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    try:
                        piece = reader.feed(line[5:].strip())
                    except UnreadableStream as exc:
                        raise _failure("unreadable", str(exc)) from None
                    if reader.done:
                        break
                    if piece:
                        yield piece
                if not reader.done:
                    raise _failure("no_done")
        except httpx.TimeoutException as exc:
            raise _failure("timeout", type(exc).__name__) from None
        except httpx.HTTPError as exc:
            raise _failure("connection", f"{type(exc).__name__}: {exc}") from None
        # After the connection is closed: the runtime stops reading at the response.
        yield reader.response()
