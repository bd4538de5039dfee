"""Issue 21: the OpenAI-compatible agent's node dies mid-run and another node continues it.
Completed model requests are recorded and replayed, never sent (nor billed) again; only the
request that was in flight is sent again, continuing the text it had streamed. Two nodes in
one process (the `cluster` fixture); `stop(abandon=True)` is a crash: nothing more is written."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from realtime.agents.openai_compat import CONTINUE_INSTRUCTION, OpenAICompatibleAgent
from sessions_app.models import AgentRun, DemoEffect, ModelCall
from tests.support.fake_openai import Behaviour, FakeOpenAI, by_turn, tool_call_deltas, turn_of
from tests.support.gates import Gate
from tests.support.ws import WSClient, assert_gapless, run_text, sequenced

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"lease_seconds": 1, "sweep_interval": 0.2, "register": False}
ASK_EFFECT = Behaviour(chunks=["Applying. ", *tool_call_deltas(0, "call_1", "demo_effect", '{"n": 1}')],
                       finish_reason="tool_calls")
ANSWER = ["The effect ", "is applied ", "once."]


@pytest.fixture
def use_openai(settings):
    settings.REALTIME_AGENT = "realtime.agents.openai_compat.OpenAICompatibleAgent"
    settings.REALTIME_DEMO_EFFECT_URL = ""  # demo.effect is `local`
    settings.OPENAI_TIMEOUT = 10.0
    return settings


class HeldAfterTools(OpenAICompatibleAgent):
    """Node 1's agent: its first request that follows a tool result waits at the gate before it
    leaves the node, so the node dies after the first tool result and before that request."""

    gate: Gate

    async def send(self, request, partial):
        if turn_of(request) >= 1:
            await self.gate.hold_async()
        async for item in super().send(request, partial):
            yield item


def _journal(run_id):
    def read():
        return (AgentRun.objects.get(pk=run_id), list(DemoEffect.objects.filter(run_id=run_id)),
                list(ModelCall.objects.filter(run_id=run_id).order_by("index")))
    return database_sync_to_async(read)()


def _tool_invariants(frames: list[dict]) -> str:
    """One `agent.tool_call` and one `agent.tool_result`, for the same call; its id."""
    [call] = [f for f in frames if f["type"] == "agent.tool_call"]
    [result] = [f for f in frames if f["type"] == "agent.tool_result"]
    assert result["call_id"] == call["call_id"] and result["status"] == "ok"
    return call["call_id"]


async def _resume_elsewhere(app, token, ready, frames) -> list[dict]:
    applied = max(f["seq"] for f in sequenced(frames))
    back = WSClient(app)
    await back.connect(token, conversation_id=ready["conversation_id"], last_seq=applied)
    after = await back.recv_until(lambda f: f["type"] in ("agent.completed", "agent.failed"), timeout=30)
    await back.drop()
    whole = sequenced(frames) + after
    assert_gapless(whole)
    return whole


async def test_killed_after_the_first_tool_result_each_model_request_is_received_once(use_openai, cluster, token):
    gate = Gate()
    HeldAfterTools.gate = gate
    async with FakeOpenAI(by_turn(ASK_EFFECT, Behaviour(chunks=ANSWER))) as server:
        use_openai.OPENAI_BASE_URL = server.base_url
        node1, app1 = cluster("node-1", agent_factory=lambda: HeldAfterTools(), **FAST)
        node2, app2 = cluster("node-2", **FAST)
        c = WSClient(app1)
        ready = await c.connect(token)
        await c.message("apply effect 1")
        before = await c.recv_until(lambda f: f["type"] == "agent.tool_result")
        await gate.arrived()  # the second request has not left node 1
        await node1.stop(abandon=True)
        gate.open()
        await c.drop()
        node2.ensure_started()
        whole = await _resume_elsewhere(app2, token, ready, before)

    run_id = next(f["run_id"] for f in whole if f["type"] == "agent.started")
    assert whole[-1]["type"] == "agent.completed", whole[-1]
    assert whole[-1]["message"]["text"] == run_text(whole, run_id) == "Applying. The effect is applied once."
    call_id = _tool_invariants(whole)
    # The first request was answered from the journal on node 2: the server saw each once.
    assert [turn_of(r) for r in server.requests] == [0, 1]
    assert CONTINUE_INSTRUCTION not in json.dumps(server.requests[1])
    run, effects, model_calls = await _journal(run_id)
    assert (run.status, run.node, run.claims) == ("completed", "node-2", 2)
    assert [(e.n, str(e.call_id)) for e in effects] == [(1, call_id)]
    assert [m.index for m in model_calls] == [0, 1]


async def test_killed_while_the_second_request_streams_only_that_request_is_sent_again_and_continues(
        use_openai, cluster, token):
    release = asyncio.Event()
    answer = "".join(ANSWER)
    streaming = Behaviour(chunks=ANSWER, hold_after=2, release=release)

    def script(request: dict) -> Behaviour:
        last = request["messages"][-1]
        if last == {"role": "user", "content": CONTINUE_INSTRUCTION}:
            # A model that does as it is told: the rest of its answer after what was streamed.
            partial = request["messages"][-2]["content"]
            assert answer.startswith(partial), partial
            return Behaviour(chunks=[answer[len(partial):]])
        return by_turn(ASK_EFFECT, streaming)(request)

    async with FakeOpenAI(script) as server:
        use_openai.OPENAI_BASE_URL = server.base_url
        node1, app1 = cluster("node-1", **FAST)
        node2, app2 = cluster("node-2", **FAST)
        c = WSClient(app1)
        ready = await c.connect(token)
        await c.message("apply effect 1")
        before = await c.recv_until(lambda f: f["type"] == "agent.tool_result")
        run_id = before[-1]["run_id"]
        # The second request's first two pieces are committed (the client has them), then it holds.
        frames = before + await c.recv_until(
            lambda f: f["type"] == "agent.delta" and run_text(c.frames, run_id).endswith("".join(ANSWER[:2])))
        await node1.stop(abandon=True)
        release.set()
        await c.drop()
        node2.ensure_started()
        whole = await _resume_elsewhere(app2, token, ready, frames)

    assert whole[-1]["type"] == "agent.completed", whole[-1]
    assert whole[-1]["message"]["text"] == run_text(whole, run_id) == "Applying. " + answer
    _tool_invariants(whole)
    # The first request never again; the second again, continuing what it had streamed.
    assert [turn_of(r) for r in server.requests] == [0, 1, 1]
    resent = server.requests[2]["messages"]
    assert resent[:-2] == server.requests[1]["messages"]
    assert resent[-2:] == [{"role": "assistant", "content": "".join(ANSWER[:2])},
                           {"role": "user", "content": CONTINUE_INSTRUCTION}]
    run, effects, model_calls = await _journal(run_id)
    assert (run.status, run.node, run.claims, len(effects)) == ("completed", "node-2", 2, 1)
    # The recorded response is the whole answer of that request: what was streamed, then the rest.
    assert [m.response["content"] for m in model_calls] == ["Applying. ", answer]
