"""A node dies with a tool call in flight (in-process: node.stop(abandon=True) is a crash; a
gate holds the call at the moment of the kill). The node that continues the run keeps each
effect class's promise (docs/protocol.md, "Tools and approvals"):

- `idempotent`: called again with the same effect key and a higher fence;
- `once`: never called again: `unknown`, then a person decides (`outcome_unknown`);
- a call that times out: `error`, or for `once`, `unknown` and a person decides;
- an agent that does not repeat what its journal recorded fails; nothing is called.

End to end with real daphne nodes and SIGKILL: tests/e2e/ (the tool takeover tests)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from realtime.agents.base import ToolCall
from realtime.agents.demo import DemoAgent
from sessions_app.models import AgentRun
from sessions_app.models import ToolCall as CallRow
from tests.support import held_tools
from tests.support.gates import Gate
from tests.support.held_tools import CALLS
from tests.support.ws import WSClient, sequenced

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("fast_agent", "held_tools", "tool_invariants")]


def two_nodes(cluster):
    node1, app1 = cluster("node-1", lease_seconds=1, sweep_interval=0.2, register=False)
    node2, app2 = cluster("node-2", lease_seconds=1, sweep_interval=0.2, register=False)
    return node1, app1, node2, app2


def by_call(frames: list[dict], kind: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for f in frames:
        if f["type"] == kind:
            found.setdefault(f["call_id"], []).append(f)
    return found


async def continue_on(app, ready: dict, token: str, client_id: str = "tab-b") -> WSClient:
    client = WSClient(app)
    await client.connect(token, conversation_id=ready["conversation_id"], last_seq=0, client_id=client_id)
    return client


async def test_an_idempotent_call_is_made_again_with_the_same_key_and_a_higher_fence(cluster, token):
    node1, app1, node2, app2 = two_nodes(cluster)
    gate = CALLS.gates["demo.effect"] = Gate()
    a = WSClient(app1)
    ready = await a.connect(token, client_id="tab-a")
    await a.message("effect 2")
    await gate.arrived()  # the first call is under way on node-1
    await node1.stop(abandon=True)
    gate.open()
    node2.ensure_started()
    b = await continue_on(app2, ready, token)
    frames = sequenced(await b.recv_until(lambda f: f["type"] in ("agent.completed", "agent.failed"), timeout=30))
    assert frames[-1]["message"]["text"] == "effect 1 ok effect 2 ok done 2"

    first, second = (made.call_id for made in CALLS.made[::2])
    assert [(m.call_id, m.effect_key, m.fence) for m in CALLS.made] == [
        (first, first, 1), (first, first, 2), (second, second, 2)]
    assert {k: len(v) for k, v in by_call(frames, "agent.tool_call").items()} == {first: 1, second: 1}
    results = by_call(frames, "agent.tool_result")
    assert {k: [r["status"] for r in v] for k, v in results.items()} == {first: ["ok"], second: ["ok"]}
    row = await database_sync_to_async(CallRow.objects.get)(pk=first)
    assert (row.attempts, row.started_token) == (2, 2)
    await a.drop()
    await b.drop()


async def test_a_once_call_is_never_made_again_and_the_user_decides(cluster, token):
    node1, app1, node2, app2 = two_nodes(cluster)
    gate = CALLS.gates["demo.transfer"] = Gate()
    a = WSClient(app1)
    ready = await a.connect(token, client_id="tab-a")
    await a.message("transfer 5")
    [requested] = [f for f in await a.recv_until(lambda f: f["type"] == "approval.requested")
                   if f["type"] == "approval.requested"]
    await a.send({"type": "approval.respond", "call_id": requested["call_id"], "decision": "approve"})
    await gate.arrived()  # the approved transfer is under way on node-1
    await node1.stop(abandon=True)
    gate.open()
    node2.ensure_started()
    b = await continue_on(app2, ready, token)
    frames = await b.recv_until(lambda f: f["type"] == "approval.requested" and f["reason"] == "outcome_unknown",
                                timeout=30)
    kinds = [(f["type"], f.get("status") or f.get("reason") or f.get("decision")) for f in sequenced(frames)
             if f["type"].startswith(("agent.tool", "approval"))]
    assert kinds == [("approval.requested", "policy"), ("approval.resolved", "approved"),
                     ("agent.tool_call", None), ("agent.tool_result", "unknown"),
                     ("approval.requested", "outcome_unknown")]
    unknown = next(f for f in frames if f["type"] == "agent.tool_result")
    retry = frames[-1]
    assert unknown["call_id"] == requested["call_id"] != retry["call_id"]
    assert (retry["tool"], retry["arguments"]) == ("demo.transfer", {"n": 5})
    run = await database_sync_to_async(AgentRun.objects.get)(pk=retry["run_id"])
    assert (run.status, run.node, run.lease_expires_at) == ("waiting", "", None)

    await b.send({"type": "approval.respond", "call_id": retry["call_id"], "decision": "deny"})
    frames = sequenced(await b.recv_until(lambda f: f["type"] in ("agent.completed", "agent.failed"), timeout=30))
    assert frames[-1]["message"]["text"] == "transfer denied"
    assert len(CALLS.of("demo.transfer")) == 1  # never a second call
    await a.drop()
    await b.drop()


async def test_a_call_that_times_out_is_an_error_and_the_run_goes_on(cluster, token, settings):
    settings.REALTIME_TOOL_TIMEOUT = 0.3
    _, app = cluster("node-1")
    gate = CALLS.gates["demo.effect"] = Gate()  # shut until the end: the first call times out
    client = WSClient(app)
    await client.connect(token)
    await client.message("effect 1")
    frames = sequenced(await client.recv_until(lambda f: f["type"] == "agent.completed"))
    [result] = [f for f in frames if f["type"] == "agent.tool_result"]
    assert (result["status"], result["error"]) == ("error", "timed out after 0.3 s")
    assert frames[-1]["message"]["text"] == "effect 1 error done 1"
    gate.open()  # the abandoned call's thread ends now, not at the gate's own limit
    await client.drop()


async def test_a_once_call_that_times_out_is_unknown_and_the_user_decides(cluster, token, settings):
    settings.REALTIME_TOOL_TIMEOUT = 0.3
    _, app = cluster("node-1")
    gate = CALLS.gates["demo.transfer"] = Gate()  # shut until the end: the transfer times out
    client = WSClient(app)
    await client.connect(token)
    await client.message("transfer 9")
    requested = (await client.recv_until(lambda f: f["type"] == "approval.requested"))[-1]
    await client.send({"type": "approval.respond", "call_id": requested["call_id"], "decision": "approve"})
    frames = await client.recv_until(lambda f: f["type"] == "approval.requested")
    result = next(f for f in frames if f["type"] == "agent.tool_result")
    assert (result["status"], result["error"]) == ("unknown", "outcome unknown: timed out after 0.3 s")
    assert frames[-1]["reason"] == "outcome_unknown"
    assert len(CALLS.of("demo.transfer")) == 1
    gate.open()
    await client.drop()


class ForgetfulAgent(DemoAgent):
    """Asks for effect n=1 at its first claim and n=99 at any later one: not deterministic."""

    claims = 0

    async def run(self, context):
        type(self).claims += 1
        n = 1 if type(self).claims == 1 else 99
        yield ToolCall("demo.effect", {"n": n})
        yield "done"


async def test_an_agent_that_does_not_repeat_its_journal_fails_and_calls_nothing(cluster, token, settings):
    settings.REALTIME_AGENT = f"{__name__}.ForgetfulAgent"
    ForgetfulAgent.claims = 0
    node1, app1, node2, app2 = two_nodes(cluster)
    gate = CALLS.gates["demo.effect"] = Gate()
    a = WSClient(app1)
    ready = await a.connect(token, client_id="tab-a")
    await a.message("anything")
    await gate.arrived()
    await node1.stop(abandon=True)
    gate.open()
    node2.ensure_started()
    b = await continue_on(app2, ready, token)
    frames = await b.recv_until(lambda f: f["type"] in ("agent.completed", "agent.failed"), timeout=30)
    assert frames[-1]["type"] == "agent.failed"
    assert frames[-1]["error"] == "the agent could not continue this run after an interruption; the server logged why"
    run = await database_sync_to_async(AgentRun.objects.get)(pk=frames[-1]["run_id"])
    assert "the agent diverged from its journal: tool call 0 was demo.effect" in run.error
    assert [m.n for m in CALLS.made] == [1]  # n=99 was never called
    # The call that was under way gets its one result when the run ends.
    assert [f["status"] for f in frames if f["type"] == "agent.tool_result"] == ["error"]
    await a.drop()
    await b.drop()


def test_the_held_tools_stand_for_the_demo_tools():
    assert (held_tools.effect.name, held_tools.transfer.name) == ("demo.effect", "demo.transfer")
