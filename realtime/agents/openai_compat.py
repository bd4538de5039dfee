"""An agent for any OpenAI-compatible chat-completions endpoint, streamed over SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
from django.conf import settings

from realtime.agents.base import AgentContext

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without repeating "
    "anything already written and without any preamble."
)


class AgentStreamError(Exception):
    pass


def build_messages(context: AgentContext) -> list[dict]:
    messages: list[dict] = []
    if context.memory:
        memory = json.dumps(context.memory, ensure_ascii=False)
        messages.append({"role": "system", "content": f"What you remember about this conversation: {memory}"})
    messages.extend({"role": m["role"], "content": m["text"]} for m in context.history)
    if context.partial_text:
        # A continuation after a node died mid-answer: the model sees what the user already
        # received, so the text continues rather than restarts.
        messages.append({"role": "assistant", "content": context.partial_text})
        messages.append({"role": "user", "content": CONTINUE_INSTRUCTION})
    return messages


class OpenAICompatibleAgent:
    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
    ):
        self.base_url = (base_url or settings.OPENAI_BASE_URL).rstrip("/")
        self.model = model or settings.OPENAI_MODEL
        self.api_key = settings.OPENAI_API_KEY if api_key is None else api_key
        self.timeout = settings.OPENAI_TIMEOUT if timeout is None else timeout

    async def stream(self, context: AgentContext) -> AsyncIterator[str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = {"model": self.model, "messages": build_messages(context), "stream": True}
        # The read timeout bounds the gap between two chunks: a stalled upstream fails the run.
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        try:
            async with httpx.AsyncClient(timeout=timeout) as client, client.stream(
                "POST", f"{self.base_url}/chat/completions", json=body, headers=headers
            ) as r:
                    if r.status_code >= 400:
                        detail = (await r.aread()).decode("utf-8", "replace")[:300]
                        raise AgentStreamError(f"upstream answered HTTP {r.status_code}: {detail}")
                    done = False
                    async for line in r.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            done = True
                            break
                        delta = _content(data)
                        if delta:
                            yield delta
                    if not done:
                        raise AgentStreamError("upstream stream ended before [DONE]")
        except httpx.TimeoutException as exc:
            raise AgentStreamError(f"upstream timed out: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise AgentStreamError(f"upstream connection failed: {type(exc).__name__}: {exc}") from None


def _content(data: str) -> str:
    try:
        chunk = json.loads(data)
        return chunk["choices"][0].get("delta", {}).get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise AgentStreamError(f"unreadable chunk from upstream: {data[:100]}") from None
