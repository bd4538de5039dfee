"""A `local` tool across a node's death (issue 21): `demo.effect` without an effect URL writes a
DemoEffect row in Tether's own database, in the transaction that records its result. The node
holding two runs is SIGKILLed with each at one side of that commit:

- P (`effect 2`): after call 1's write and result committed, before the run's next step (a gated
  agent holds it before call 2). The node that continues the run hands call 1's recorded
  result back and writes nothing for it again.
- Q (`effect 1`): inside call 1's transaction, the row written but not committed (a gated tool
  holds it there). The kill takes the row back with the transaction; the node that continues
  the run makes the call, under the same call_id, and writes it once.

Each write exists exactly once, with the call_id the log announced."""

import pytest
from channels.db import database_sync_to_async

from sessions_app import services
from sessions_app.models import AgentRun, DemoEffect
from tests.conftest import access_for
from tests.support.gated_agent import AgentGate
from tests.support.gated_tools import ToolGate
from tests.support.tool_e2e import ToolClient, calls_of, node_env, run_row
from tests.support.tool_invariants import check_conversation_tools
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@database_sync_to_async
def effects(conversation_id: str) -> list[tuple[int, str]]:
    return [(e.n, str(e.call_id)) for e in DemoEffect.objects.filter(conversation_id=conversation_id).order_by("n")]


@database_sync_to_async
def run_text(conversation_id: str) -> str | None:
    run = AgentRun.objects.filter(conversation_id=conversation_id).first()
    return services.committed_text(run) if run else None


async def test_sigkill_around_a_local_write_leaves_it_exactly_once(daphne_cluster, user, tmp_path):
    agent_gate = AgentGate(tmp_path, after=1)  # the pause before call 2
    tool_gate = ToolGate(tmp_path)
    env = node_env(**agent_gate.env, **tool_gate.env)
    a = daphne_cluster("local-a", **env)
    token = await database_sync_to_async(access_for)(user)
    p, q = ToolClient(token), ToolClient(token)
    await p.open_on(a)
    await q.open_on(a)
    tool_gate.hold(q.conversation_id)
    await p.message("effect 2")
    await q.message("effect 1")

    async def p_at_its_pause() -> bool:
        return await run_text(p.conversation_id) == "effect 1 ok "

    await eventually(p_at_its_pause, timeout=20, what="P's first result committed")
    held_call = await tool_gate.arrived(q.conversation_id)
    # B starts once A holds both runs, so that A is the one to die with them.
    b = daphne_cluster("local-b", **env)
    assert [e[0] for e in await effects(p.conversation_id)] == [1]
    a.kill()
    agent_gate.open()
    tool_gate.open(q.conversation_id)
    await p.follow(b)
    await q.follow(b)
    done_p = await p.event("agent.completed", timeout=40)
    done_q = await q.event("agent.completed", timeout=40)
    assert done_p["message"]["text"] == "effect 1 ok effect 2 ok done 2"
    assert done_q["message"]["text"] == "effect 1 ok done 1"

    for client, count in ((p, 2), (q, 1)):
        log = await database_sync_to_async(check_conversation_tools)(client.conversation_id, client.frames())
        calls = log.of_tool("demo.effect")
        assert [(c.arguments["n"], c.effect, c.status) for c in calls] == [
            (n, "local", "ok") for n in range(1, count + 1)]
        # Exactly once: one row per call, written under the call_id the log announced.
        assert await effects(client.conversation_id) == [(c.arguments["n"], c.call_id) for c in calls]
    run_q = await run_row(done_q["run_id"])
    [call_q] = await calls_of(done_q["run_id"])
    assert str(call_q.id) == held_call
    assert (call_q.attempts, call_q.started_token, run_q.node) == (1, run_q.fencing_token, "local-b")
    await p.close()
    await q.close()
