"""The OpenAI-compatible agent's turns, driven as the runtime drives it (asend), without a
network: what each model request holds, which calls are yielded, and what goes back to the
model after them (one `tool` message per call, whatever happened to it)."""

import hashlib
import json

import pytest

from realtime.agents.base import AgentContext, ModelCall, ModelResponse, ToolCall, ToolResult, ToolSpec
from realtime.agents.openai_compat import AgentStreamError, OpenAICompatibleAgent

pytestmark = pytest.mark.pure

TOOLS = [ToolSpec("demo.effect", "apply an effect", {"type": "object", "properties": {"n": {"type": "integer"}}}),
         ToolSpec("demo.transfer", "transfer", {"type": "object"})]


def _agent(max_turns: int = 8) -> OpenAICompatibleAgent:
    return OpenAICompatibleAgent(base_url="http://model.invalid/v1", model="tiny", api_key="", timeout=1,
                                 max_turns=max_turns)


def _context(tools=TOOLS) -> AgentContext:
    return AgentContext("c", [{"role": "user", "text": "apply effect 1"}], tools=list(tools))


def _digest(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def _calls(*calls: tuple[str, str, str]) -> ModelResponse:
    return ModelResponse("", [{"id": i, "name": n, "arguments": a} for i, n, a in calls], "tool_calls")


async def test_a_plain_answer_is_one_request_with_the_tools_offered():
    steps = _agent().run(_context())
    call = await steps.asend(None)
    assert isinstance(call, ModelCall)
    assert call.request == {
        "model": "tiny", "stream": True, "messages": [{"role": "user", "content": "apply effect 1"}],
        "tools": [
            {"type": "function", "function": {"name": "demo_effect", "description": "apply an effect",
                                              "parameters": TOOLS[0].parameters}},
            {"type": "function", "function": {"name": "demo_transfer", "description": "transfer",
                                              "parameters": {"type": "object"}}},
        ],
    }
    with pytest.raises(StopAsyncIteration):
        await steps.asend(ModelResponse("Done.", [], "stop"))


async def test_without_tools_the_request_is_the_plain_chat_request():
    steps = _agent().run(_context(tools=[]))
    call = await steps.asend(None)
    assert call.request == {"model": "tiny", "stream": True,
                            "messages": [{"role": "user", "content": "apply effect 1"}]}


async def test_each_valid_call_is_yielded_in_order_and_every_call_gets_one_tool_message():
    steps = _agent().run(_context())
    first = await steps.asend(None)
    asked = _calls(("a", "demo_effect", '{"n": 1}'), ("b", "no_such_tool", "{}"), ("c", "demo_effect", '{"n": '),
                   ("d", "demo_transfer", ""))
    asked = ModelResponse("Working on it. ", asked.tool_calls, "tool_calls")
    step = await steps.asend(asked)
    assert step == ToolCall("demo.effect", {"n": 1})
    # The unknown tool and the broken arguments are never calls: the next call is `d`'s.
    step = await steps.asend(ToolResult("ok", {"n": 1, "recorded": True}, call_id="x"))
    assert step == ToolCall("demo.transfer", {})
    second = await steps.asend(ToolResult("denied", error="approval denied", decision="denied"))
    assert isinstance(second, ModelCall)
    messages = second.request["messages"]
    assert messages[:-5] == first.request["messages"]
    assert messages[-5] == {"role": "assistant", "content": "Working on it. ", "tool_calls": [
        {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
        for i, n, a in (("a", "demo_effect", '{"n": 1}'), ("b", "no_such_tool", "{}"),
                        ("c", "demo_effect", '{"n": '), ("d", "demo_transfer", ""))]}
    replies = messages[-4:]
    assert [(m["role"], m["tool_call_id"]) for m in replies] == [("tool", i) for i in "abcd"]
    contents = [json.loads(m["content"]) for m in replies]
    assert contents[0] == {"status": "ok", "result": {"n": 1, "recorded": True}}
    assert contents[1]["status"] == "error" and "no tool named 'no_such_tool'" in contents[1]["error"]
    assert "demo_effect, demo_transfer" in contents[1]["error"]
    assert contents[2]["status"] == "error" and "not valid JSON" in contents[2]["error"]
    assert contents[3] == {"status": "denied", "error": "the call was not made: its approval was denied"}
    with pytest.raises(StopAsyncIteration):
        await steps.asend(ModelResponse("All done.", [], "stop"))


async def test_a_request_is_not_changed_after_it_was_yielded():
    """The runtime hashes a request and may send it later (or again after a takeover)."""
    steps = _agent().run(_context())
    first = await steps.asend(None)
    before = _digest(first.request)
    await steps.asend(_calls(("a", "demo_effect", '{"n": 1}')))
    await steps.asend(ToolResult("ok", {"n": 1}))
    assert _digest(first.request) == before


async def test_the_same_responses_give_the_same_requests_and_calls():
    """Replay after a takeover: the agent must do again exactly what it did."""
    async def drive() -> list:
        steps, seen, answer = _agent().run(_context()), [], None
        answers = iter([_calls(("a", "demo_effect", '{"n": 1}')), ToolResult("ok", {"n": 1}),
                        ModelResponse("ok", [], "stop")])
        try:
            while True:
                step = await steps.asend(answer)
                seen.append(step.request if isinstance(step, ModelCall) else step)
                answer = next(answers)
        except StopAsyncIteration:
            return seen
    assert await drive() == await drive()


async def test_the_last_allowed_request_forbids_tools_and_a_model_that_still_asks_fails_the_run():
    steps = _agent(max_turns=2).run(_context())
    first = await steps.asend(None)
    assert "tool_choice" not in first.request
    await steps.asend(_calls(("a", "demo_effect", '{"n": 1}')))
    last = await steps.asend(ToolResult("ok", {"n": 1}))
    assert last.request["tool_choice"] == "none"
    with pytest.raises(AgentStreamError, match="last allowed request .*REALTIME_AGENT_MAX_TURNS"):
        await steps.asend(_calls(("b", "demo_effect", '{"n": 2}')))


async def test_the_turn_bound_comes_from_the_setting(settings):
    settings.REALTIME_AGENT_MAX_TURNS = 1
    agent = OpenAICompatibleAgent(base_url="http://model.invalid/v1")
    first = await agent.run(_context()).asend(None)
    assert agent.max_turns == 1 and first.request["tool_choice"] == "none"
