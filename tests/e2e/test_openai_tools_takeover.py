"""Issue 21 end to end: the OpenAI-compatible agent against a local mock server that streams
`tool_calls`; the daphne node holding the run is SIGKILLed after the first tool result. The
other node continues the run: the mock server receives the first model request once and the
second once, and the tool's write exists once. The second request waits on a gate
(tests/support/gated_openai_agent.py) until the node is dead, so the kill lands after the
first tool result and before that request leaves the node, on any machine."""

import json

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import AgentRun, DemoEffect, ModelCall
from tests.conftest import access_for
from tests.support.fake_openai import Behaviour, FakeOpenAI, by_turn, tool_call_deltas, turn_of
from tests.support.gated_openai_agent import OpenAIGate
from tests.support.sdk_chat import FAST_NODE_ENV
from tests.support.ws_e2e import E2EClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ASK_EFFECT = Behaviour(chunks=["Applying. ", *tool_call_deltas(0, "call_1", "demo_effect", '{"n": 1}')],
                       finish_reason="tool_calls")
ANSWER = Behaviour(chunks=["The effect ", "is applied ", "once."])


async def test_sigkill_after_the_first_tool_result_each_model_request_is_received_once(
        daphne_cluster, user, tmp_path):
    gate = OpenAIGate(tmp_path)
    async with FakeOpenAI(by_turn(ASK_EFFECT, ANSWER)) as server:
        env = {**FAST_NODE_ENV, **gate.env, "OPENAI_BASE_URL": server.base_url, "OPENAI_TIMEOUT": 10,
               "REALTIME_DEMO_EFFECT_URL": ""}
        a = daphne_cluster("e2e-oai-a", **env)
        token = await database_sync_to_async(access_for)(user)
        client = E2EClient(token)
        await client.connect(a.ws_url)
        await client.message("apply effect 1")
        started = await client.until(lambda f: f["type"] == "agent.started")
        result = await client.until(lambda f: f["type"] == "agent.tool_result")
        run_id = started["run_id"]
        # B starts once A holds the run (A renews its lease while its request waits at the gate).
        b = daphne_cluster("e2e-oai-b", **env)
        a.kill()
        gate.open()
        await client.close()
        ready = await client.connect(b.ws_url)
        assert ready["node"] == "e2e-oai-b" and ready["resumed"] is True
        done = await client.until(lambda f: f["type"] in ("agent.completed", "agent.failed"), timeout=40)

    assert done["type"] == "agent.completed", done
    assert client.run_text(run_id) == done["message"]["text"] == "Applying. The effect is applied once."
    frames = list(client.applied.values())
    calls = [f for f in frames if f["type"] == "agent.tool_call"]
    results = [f for f in frames if f["type"] == "agent.tool_result"]
    assert [c["call_id"] for c in calls] == [r["call_id"] for r in results] == [result["call_id"]]
    assert (calls[0]["tool"], calls[0]["arguments"], calls[0]["effect"]) == ("demo.effect", {"n": 1}, "local")
    assert [turn_of(r) for r in server.requests] == [0, 1]
    assert json.loads(server.requests[1]["messages"][-1]["content"])["status"] == "ok"

    def journal():
        return (AgentRun.objects.get(pk=run_id), DemoEffect.objects.filter(run_id=run_id).count(),
                list(ModelCall.objects.filter(run_id=run_id).values_list("index", "fencing_token")))

    run, effects, model_calls = await database_sync_to_async(journal)()
    assert (run.status, run.node, effects) == ("completed", "e2e-oai-b", 1)
    # The first request was recorded by A, the second by B (a higher fence).
    assert [i for i, _ in model_calls] == [0, 1] and model_calls[0][1] < model_calls[1][1]
