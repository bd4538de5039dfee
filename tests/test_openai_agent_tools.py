"""The OpenAI-compatible agent calling tools through the whole stack, against a real local SSE
server that streams `tool_calls` (tests/support/fake_openai.py) and the demo tools
(REALTIME_TOOLS' default; `demo.effect` is `local` without REALTIME_DEMO_EFFECT_URL)."""

import json

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import AgentRun, DemoEffect, ModelCall
from tests.support.fake_openai import Behaviour, FakeOpenAI, by_turn, tool_call_deltas, turn_of
from tests.support.ws import WSClient, assert_gapless, run_text

pytestmark = pytest.mark.django_db(transaction=True)

ASK_EFFECT = Behaviour(chunks=["Let me ", "apply it. ", *tool_call_deltas(0, "call_1", "demo_effect", '{"n": 1}')],
                       finish_reason="tool_calls", usage={"total_tokens": 21})
ANSWER = Behaviour(chunks=["Effect 1 ", "is applied."])


@pytest.fixture
def use_openai(settings):
    settings.REALTIME_AGENT = "realtime.agents.openai_compat.OpenAICompatibleAgent"
    settings.REALTIME_DEMO_EFFECT_URL = ""
    settings.OPENAI_API_KEY = "test-key"
    settings.OPENAI_MODEL = "tiny"
    settings.OPENAI_TIMEOUT = 5.0
    return settings


def _ended(frame: dict) -> bool:
    return frame["type"] in ("agent.completed", "agent.failed")


def _of(frames: list[dict], kind: str) -> list[dict]:
    return [f for f in frames if f["type"] == kind]


async def _converse(app, token, text="apply effect 1", timeout=20):
    c = WSClient(app)
    await c.connect(token)
    await c.message(text)
    frames = await c.recv_until(_ended, timeout=timeout)
    await c.drop()
    return frames, _of(frames, "agent.started")[0]["run_id"]


def _rows(run_id):
    def read():
        return (AgentRun.objects.get(pk=run_id), list(DemoEffect.objects.filter(run_id=run_id)),
                list(ModelCall.objects.filter(run_id=run_id).order_by("index")))
    return database_sync_to_async(read)()


async def test_a_tool_round_trip_streams_the_call_its_result_and_the_final_answer(use_openai, node_app, token):
    async with FakeOpenAI(by_turn(ASK_EFFECT, ANSWER)) as server:
        use_openai.OPENAI_BASE_URL = server.base_url
        frames, run_id = await _converse(node_app, token)

    assert_gapless(frames)
    completed = frames[-1]
    assert completed["type"] == "agent.completed", completed
    assert completed["message"]["text"] == run_text(frames, run_id) == "Let me apply it. Effect 1 is applied."
    [call] = _of(frames, "agent.tool_call")
    [result] = _of(frames, "agent.tool_result")
    assert {k: call[k] for k in ("run_id", "tool", "arguments", "effect")} == {
        "run_id": run_id, "tool": "demo.effect", "arguments": {"n": 1}, "effect": "local"}
    assert (result["call_id"], result["status"]) == (call["call_id"], "ok")
    assert result["result"] == {"n": 1, "recorded": True}
    # The events are in the order the agent acted: the first turn's text, the call, the answer.
    kinds = [f["type"] for f in frames if f["type"] != "message.ack"]
    before = "".join(f["text"] for f in frames[:frames.index(call)] if f["type"] == "agent.delta")
    assert before == "Let me apply it. " and kinds.index("agent.tool_result") < len(kinds) - 2

    # The model got the tools, then its own call back with the result.
    assert [turn_of(r) for r in server.requests] == [0, 1]
    first, second = server.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["demo_effect", "demo_transfer"]
    assert second["messages"][:-2] == first["messages"]
    assert second["messages"][-2] == {"role": "assistant", "content": "Let me apply it. ", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "demo_effect", "arguments": '{"n": 1}'}}]}
    assert second["messages"][-1]["tool_call_id"] == "call_1"
    assert json.loads(second["messages"][-1]["content"]) == {"status": "ok", "result": {"n": 1, "recorded": True}}

    run, effects, model_calls = await _rows(run_id)
    assert run.status == "completed"
    assert [(e.n, str(e.call_id)) for e in effects] == [(1, call["call_id"])]
    # Each request is recorded with its whole response, so a takeover never sends it again.
    assert [m.index for m in model_calls] == [0, 1]
    assert model_calls[0].response == {
        "content": "Let me apply it. ", "finish_reason": "tool_calls", "usage": {"total_tokens": 21},
        "tool_calls": [{"id": "call_1", "name": "demo_effect", "arguments": '{"n": 1}'}]}
    assert (model_calls[1].response["content"], model_calls[1].text_offset) == ("Effect 1 is applied.", 17)


async def test_bad_calls_go_back_to_the_model_as_errors_and_are_never_made(use_openai, node_app, token):
    ask = Behaviour(chunks=[*tool_call_deltas(0, "call_a", "wire_money", '{"to": "me"}'),
                            *tool_call_deltas(1, "call_b", "demo_effect", '{"n": 1')], finish_reason="tool_calls")
    async with FakeOpenAI(by_turn(ask, Behaviour(chunks=["Sorry."]))) as server:
        use_openai.OPENAI_BASE_URL = server.base_url
        frames, run_id = await _converse(node_app, token)

    assert frames[-1]["type"] == "agent.completed" and frames[-1]["message"]["text"] == "Sorry."
    assert _of(frames, "agent.tool_call") == _of(frames, "agent.tool_result") == []
    replies = server.requests[1]["messages"][-2:]
    assert [m["tool_call_id"] for m in replies] == ["call_a", "call_b"]
    errors = [json.loads(m["content"]) for m in replies]
    assert errors[0]["status"] == errors[1]["status"] == "error"
    assert "no tool named 'wire_money'" in errors[0]["error"] and "not valid JSON" in errors[1]["error"]
    _, effects, _ = await _rows(run_id)
    assert effects == []


async def test_a_denied_call_is_told_to_the_model_and_the_recorded_request_is_not_sent_again(
        use_openai, node_app, token):
    ask = Behaviour(chunks=["Transferring. ", *tool_call_deltas(0, "call_t", "demo_transfer", '{"n": 5}')],
                    finish_reason="tool_calls")
    async with FakeOpenAI(by_turn(ask, Behaviour(chunks=["Not transferred."]))) as server:
        use_openai.OPENAI_BASE_URL = server.base_url
        c = WSClient(node_app)
        await c.connect(token)
        await c.message("transfer 5")
        asked = await c.recv_until(lambda f: f["type"] == "approval.requested")
        await c.send({"type": "approval.respond", "call_id": asked[-1]["call_id"], "decision": "deny"})
        frames = asked + await c.recv_until(_ended)
        await c.drop()

    run_id = _of(frames, "agent.started")[0]["run_id"]
    assert frames[-1]["type"] == "agent.completed"
    assert frames[-1]["message"]["text"] == run_text(frames, run_id) == "Transferring. Not transferred."
    [result] = _of(frames, "agent.tool_result")
    assert result["status"] == "denied"
    # The run waited without a task and was continued by replay: its first request came from
    # the journal, only the second was sent.
    assert [turn_of(r) for r in server.requests] == [0, 1]
    reply = server.requests[1]["messages"][-1]
    assert reply["tool_call_id"] == "call_t"
    assert json.loads(reply["content"]) == {"status": "denied",
                                            "error": "the call was not made: its approval was denied"}


@pytest.mark.parametrize("broken, error", [
    (Behaviour(chunks=["Let me ", *tool_call_deltas(0, "call_1", "demo_effect", '{"n": 1}')], drop_after=3),
     "upstream"),
    (Behaviour(chunks=["Let me ", *tool_call_deltas(0, "call_1", "demo_effect", '{"n": 1}')],
               finish_reason="tool_calls", done=False), "upstream stream ended before [DONE]"),
    (Behaviour(raw=['{"choices": [{"delta": {"content": "Let me "}}]}', "{not json"]), "unreadable chunk"),
], ids=["connection-dropped", "no-done", "unreadable-chunk"])
async def test_an_incomplete_response_is_never_recorded_and_its_calls_never_made(
        use_openai, node_app, token, broken, error):
    async with FakeOpenAI(broken) as server:
        use_openai.OPENAI_BASE_URL = server.base_url
        frames, run_id = await _converse(node_app, token)
    assert frames[-1]["type"] == "agent.failed"
    assert _of(frames, "agent.tool_call") == []
    run, effects, model_calls = await _rows(run_id)
    # What the client is told is the supervisor's business (issue 24); the cause is on the row.
    assert run.status == "failed" and error in run.error, run.error
    assert effects == model_calls == [] and len(server.requests) == 1
    assert run_text(frames, run_id) == run.text
