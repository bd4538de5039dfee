"""A frozen node past its lease (issue 21): SIGSTOPped with two runs of `effect 2` in hand, it is
taken over by another node, then SIGCONTed.

- X: A's POST of call 1 left before the freeze and reaches the sink late (the sink holds its
  delivery until the other node's request for the same call was processed): it carries a
  `Tether-Fence` lower than the run's current one, and the sink refuses it.
- Y: A froze before its call 2 (a gated agent holds it there). Thawed with its gate open, it
  goes on to start call 2: the journal refuses it (the lease is gone, the token moved on).

A starts no new call (no call 2 anywhere until the new owner starts it; no request from A but
the late one) and writes nothing after the thaw; the new owner completes both runs."""

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import Event
from tests.conftest import access_for
from tests.support.effect_sink import EffectSink
from tests.support.gated_agent import AgentGate
from tests.support.metrics import scrape_url
from tests.support.tool_e2e import ToolClient, calls_of, node_env, run_row
from tests.support.tool_invariants import check_conversation_tools
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@database_sync_to_async
def log_length(conversation_id: str) -> int:
    return Event.objects.filter(conversation_id=conversation_id).count()


async def test_a_thawed_zombie_starts_no_call_and_its_late_request_carries_an_old_fence(
        daphne_cluster, user, tmp_path):
    gate_a = AgentGate(tmp_path / "a", after=1)  # both nodes' agents stop before call 2
    gate_b = AgentGate(tmp_path / "b", after=1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with EffectSink() as sink:
        a = daphne_cluster("zombie-a", **node_env(sink, **gate_a.env))
        token = await database_sync_to_async(access_for)(user)
        x, y = ToolClient(token), ToolClient(token)
        await x.open_on(a)
        await y.open_on(a)
        late = sink.hold(lambda r: r.body["conversation_id"] == x.conversation_id, process_first=False)
        await x.message("effect 2")
        await y.message("effect 2")
        run_x = (await x.event("agent.started"))["run_id"]
        run_y = (await y.event("agent.started"))["run_id"]
        await late.arrived()  # X: A's request of call 1 is on its way
        await y.event("agent.delta", text="effect 1 ok ")  # Y: A is at its pause before call 2
        fence_x, fence_y = (await run_row(run_x)).fencing_token, (await run_row(run_y)).fencing_token

        b = daphne_cluster("zombie-b", **node_env(sink, **gate_b.env))
        a.pause()

        async def taken_over() -> bool:
            runs = [await run_row(run_x), await run_row(run_y)]
            return all(r.node == "zombie-b" for r in runs)

        await eventually(taken_over, timeout=20, what="both runs claimed by B")
        await x.follow(b)
        await y.follow(b)
        # X: B made call 1 again (same key, B's fence); both B's runs now wait at B's gate.
        await x.event("agent.delta", text="effect 1 ok ")
        [b_first] = [r for r in sink.requests if r.run_id == run_x and not r.held]
        assert b_first.run_id == run_x and b_first.outcome == "applied" and b_first.fence > fence_x

        gate_a.open()
        late.release()  # A's request arrives now, after B's
        stale = await sink.wait_for(lambda r: r.held and r.outcome is not None, what="A's late request")
        assert stale.key == b_first.key and stale.run_id == run_x
        assert stale.fence == fence_x < (await run_row(run_x)).fencing_token
        assert (stale.outcome, stale.status) == ("stale", 409)

        events_before = (await log_length(x.conversation_id), await log_length(y.conversation_id))
        a.resume()

        async def a_gave_both_up() -> bool:
            samples = await scrape_url(f"http://127.0.0.1:{a.port}/metrics")
            return samples.value("tether_run_duration_seconds_count", status="lease_lost") == 2

        await eventually(a_gave_both_up, timeout=20, what="A's two runs ended lease_lost")
        # A started no call: no call 2 in either journal (B waits at its gate), no request
        # from A but the late one, nothing written to either log after the thaw.
        assert [c.step for c in await calls_of(run_x)] == [0]
        assert [c.step for c in await calls_of(run_y)] == [0]
        a_fences = {run_x: fence_x, run_y: fence_y}
        from_a = {r.index for r in sink.requests if r.fence == a_fences[r.run_id]}
        assert from_a == {stale.index} | {r.index for r in sink.requests if r.run_id == run_y and r.n == 1}
        assert (await log_length(x.conversation_id), await log_length(y.conversation_id)) == events_before

        gate_b.open()
        for client, run_id in ((x, run_x), (y, run_y)):
            done = await client.event("agent.completed", timeout=30)
            assert done["message"]["text"] == "effect 1 ok effect 2 ok done 2"
            log = await database_sync_to_async(check_conversation_tools)(client.conversation_id, client.frames())
            calls = log.of_tool("demo.effect")
            assert [c.status for c in calls] == ["ok", "ok"]
            applied = [sink.applied[c.call_id] for c in calls]
            assert [r.n for r in applied] == [1, 2]
            run = await run_row(run_id)
            assert run.node == "zombie-b"
            # Call 2 was started by B alone, under its fence.
            assert applied[1].fence == run.fencing_token
            assert [r.fence for r in sink.requests_for(calls[1].call_id)] == [run.fencing_token]
        await x.close()
        await y.close()
