"""An approval survives every socket and every node (issue 21): `transfer 5` waits for a person
while device A is connected; A drops; both nodes restart (one killed, one stopped with
SIGTERM), so no process that ever saw the request is left; device B, another client of the
same user, opens the conversation on a restarted node, sees the request in the log and
approves it. Whichever node claims the run then makes the one POST and completes it."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from tests.conftest import access_for
from tests.support.effect_sink import EffectSink
from tests.support.tool_e2e import ToolClient, node_env, run_row, start_nodes
from tests.support.tool_invariants import check_conversation_tools

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def test_an_approval_outlives_its_socket_and_every_node(daphne_cluster, user):
    with EffectSink() as sink:
        nodes = await start_nodes(daphne_cluster, ["approve-a", "approve-b"], node_env(sink))
        token = await database_sync_to_async(access_for)(user)
        device_a = ToolClient(token)
        await device_a.open_on(nodes[0])
        await device_a.message("transfer 5")
        asked = await device_a.event("approval.requested")
        run = await run_row(asked["run_id"])
        # The wait holds nothing: no node, no lease.
        assert (run.status, run.node, run.lease_expires_at) == ("waiting", "", None)
        await device_a.close()

        nodes[0].kill()
        nodes[1].terminate()
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in nodes))
        assert (await run_row(asked["run_id"])).status == "waiting"
        assert sink.requests == []

        device_b = ToolClient(token)
        device_b.conversation_id = device_a.conversation_id
        await device_b.open_on(nodes[1])  # the whole log, from seq 1
        replayed = await device_b.event("approval.requested")
        assert replayed == asked
        await device_b.respond(asked["call_id"], "approve")
        resolved = await device_b.event("approval.resolved")
        assert (resolved["call_id"], resolved["decision"], resolved["by"]) == (
            asked["call_id"], "approved", device_b.client_id)
        done = await device_b.event("agent.completed", timeout=30)
        assert done["message"]["text"] == "transferred 5"

        [post] = sink.requests
        assert (post.key, post.body["n"], post.outcome) == (asked["call_id"], 5, "applied")
        log = await database_sync_to_async(check_conversation_tools)(device_b.conversation_id, device_b.frames())
        [call] = log.of_tool("demo.transfer")
        assert (call.reason, call.decision, call.by, call.effect, call.status) == (
            "policy", "approved", device_b.client_id, "once", "ok")
        run = await run_row(asked["run_id"])
        assert run.status == "completed" and run.node in {n.node_id for n in nodes}
        assert post.fence == run.fencing_token
        await device_b.close()
