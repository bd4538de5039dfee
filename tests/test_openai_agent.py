"""The OpenAI-compatible agent end to end against a real local streaming server."""

import pytest
from channels.db import database_sync_to_async

from realtime.agents.base import AgentContext, ModelResponse
from realtime.agents.openai_compat import CONTINUE_INSTRUCTION, OpenAICompatibleAgent
from sessions_app.models import AgentRun
from tests.support.fake_openai import Behaviour, FakeOpenAI
from tests.support.ws import WSClient, run_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def use_openai(settings):
    settings.REALTIME_AGENT = "realtime.agents.openai_compat.OpenAICompatibleAgent"
    settings.OPENAI_API_KEY = "test-key"
    settings.OPENAI_MODEL = "tiny"
    return settings


async def _converse(app, token):
    c = WSClient(app)
    await c.connect(token)
    await c.message("hello model")
    frames = await c.recv_until(lambda f: f["type"] in ("agent.completed", "agent.failed"), timeout=20)
    await c.drop()
    run_id = next(f for f in frames if f["type"] == "agent.started")["run_id"]
    return frames, run_id


async def test_streams_through_the_whole_stack(use_openai, node_app, token):
    async with FakeOpenAI(Behaviour(chunks=["The ", "answer ", "is ", "42."])) as server:
        use_openai.OPENAI_BASE_URL = server.base_url
        frames, run_id = await _converse(node_app, token)
    assert frames[-1]["type"] == "agent.completed"
    assert frames[-1]["message"]["text"] == run_text(frames, run_id) == "The answer is 42."
    request = server.requests[0]
    assert request["stream"] is True and request["model"] == "tiny"
    assert request["messages"][-1] == {"role": "user", "content": "hello model"}


@pytest.mark.parametrize(
    "behaviour, error",
    [
        (Behaviour(chunks=["a ", "b ", "c ", "d "], drop_after=2), "upstream"),
        (Behaviour(status=500), "HTTP 500"),
        (Behaviour(chunks=["a ", "b "], stall_after=1), "timed out"),
    ],
    ids=["dropped-mid-answer", "http-500", "stalled"],
)
async def test_upstream_failures_end_in_agent_failed(use_openai, node_app, token, behaviour, error):
    use_openai.OPENAI_TIMEOUT = 1.0
    async with FakeOpenAI(behaviour) as server:
        use_openai.OPENAI_BASE_URL = server.base_url
        frames, run_id = await _converse(node_app, token)
    failed = frames[-1]
    # The client reads a generic sentence; the upstream's own words stay on the server (the log,
    # and the run row for operators): issue 24.
    assert failed["type"] == "agent.failed" and failed["error"] == "the agent failed; the server logged why", failed
    run = await database_sync_to_async(AgentRun.objects.get)(pk=run_id)
    assert run.status == "failed" and error in run.error, run.error
    # What was streamed before the failure is consistent with what was committed.
    assert run_text(frames, run_id) == run.text


async def test_continuation_sends_the_partial_answer(use_openai):
    async with FakeOpenAI(Behaviour(chunks=["world."])) as server:
        agent = OpenAICompatibleAgent(base_url=server.base_url)
        context = AgentContext("c", [{"role": "user", "text": "say hello world"}], {"name": "Ada"})
        call = await agent.run(context).asend(None)
        # Sent again after its node died with "Hello " streamed and committed.
        pieces = [p async for p in call.send(call.request, "Hello ")]
    assert pieces == ["world.", ModelResponse("world.", [], "stop")]
    messages = server.requests[0]["messages"]
    assert messages[0]["role"] == "system" and "Ada" in messages[0]["content"]
    assert messages[-2:] == [
        {"role": "assistant", "content": "Hello "},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    assert messages[:-2] == call.request["messages"]
