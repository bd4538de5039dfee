"""An `idempotent` tool across a node's death (issue 21): `effect 3` runs `demo.effect` three
times, POSTing to a test sink. The sink applies the second call's effect and holds its answer;
the node holding the run is SIGKILLed, so the effect happened and its node never learnt it.
The other node continues the run from its journal: the first call's recorded result is handed
back (no request), the second call is made again with the same `Idempotency-Key` and a higher
`Tether-Fence` (the sink deduplicates it), the third is made once. Each effect is applied once
at the sink, each call_id has one `agent.tool_result`, and the answer has each `effect n ok`
once."""

import pytest
from channels.db import database_sync_to_async

from tests.conftest import access_for
from tests.support.effect_sink import EffectSink
from tests.support.tool_e2e import ToolClient, calls_of, node_env, node_named, run_row, start_nodes
from tests.support.tool_invariants import check_conversation_tools

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def test_sigkill_during_an_idempotent_call_applies_each_effect_once(daphne_cluster, user):
    with EffectSink() as sink:
        held = sink.hold(lambda r: r.n == 2, process_first=True)
        nodes = await start_nodes(daphne_cluster, ["effect-a", "effect-b"], node_env(sink))
        client = ToolClient(await database_sync_to_async(access_for)(user))
        await client.open_on(nodes[0])
        await client.message("effect 3")
        run_id = (await client.event("agent.started"))["run_id"]

        first_try = await held.arrived()  # call 2's effect is applied; its answer is held
        holder = node_named(nodes, (await run_row(run_id)).node)
        survivor = next(n for n in nodes if n is not holder)
        holder.kill()
        held.release()  # the answer's write now fails: nobody is there to read it
        await client.follow(survivor)
        done = await client.event("agent.completed", timeout=40)

        text = done["message"]["text"]
        assert text == "effect 1 ok effect 2 ok effect 3 ok done 3"
        assert [text.count(f"effect {n} ok") for n in (1, 2, 3)] == [1, 1, 1]

        log = await database_sync_to_async(check_conversation_tools)(client.conversation_id, client.frames())
        calls = log.of_tool("demo.effect")
        assert [(c.arguments, c.effect, c.status) for c in calls] == [
            ({"n": n}, "idempotent", "ok") for n in (1, 2, 3)]
        keys = [c.call_id for c in calls]

        # At the sink: one application per effect, under the call_ids the log announced.
        applied = sink.applied
        assert set(applied) == set(keys)
        assert sorted(r.n for r in applied.values()) == [1, 2, 3]
        # Only the interrupted call was made again; the recorded one was not.
        assert [len(sink.requests_for(key)) for key in keys] == [1, 2, 1]
        first, again = sink.requests_for(keys[1])
        assert first is first_try and first.outcome == "applied"
        assert again.outcome == "duplicate" and again.fence > first.fence
        assert all(r.status == 200 for r in sink.requests if r is not first)

        run = await run_row(run_id)
        assert (run.status, run.node) == ("completed", survivor.node_id) and run.claims >= 2
        journal = await calls_of(run_id)
        assert [(c.attempts, c.started_token) for c in journal] == [
            (1, first.fence), (2, again.fence), (1, run.fencing_token)]
        assert again.fence == run.fencing_token
        await client.close()
