"""A `once` tool across a node's death (issue 21): `transfer 7` runs `demo.transfer`, which needs
an approval and must never be made twice. After the approval its POST reaches the test sink,
which applies it and holds the answer; the node holding the run is SIGKILLed. The node that
continues the run does not POST again: the call's result is `unknown`, and the user is asked
at once (`approval.requested` with `reason: "outcome_unknown"`, a new call_id) whether to make
it again. Denied, the run ends with `transfer denied`, and the sink still has one POST."""

import pytest
from channels.db import database_sync_to_async

from tests.conftest import access_for
from tests.support.effect_sink import EffectSink
from tests.support.tool_e2e import ToolClient, calls_of, node_env, node_named, run_row, start_nodes
from tests.support.tool_invariants import check_conversation_tools

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def test_sigkill_during_a_once_call_never_posts_again_and_asks_the_user(daphne_cluster, user):
    with EffectSink() as sink:
        held = sink.hold(lambda r: True, process_first=True)
        nodes = await start_nodes(daphne_cluster, ["once-a", "once-b"], node_env(sink))
        client = ToolClient(await database_sync_to_async(access_for)(user))
        await client.open_on(nodes[0])
        await client.message("transfer 7")
        asked = await client.event("approval.requested")
        assert (asked["tool"], asked["arguments"], asked["reason"]) == ("demo.transfer", {"n": 7}, "policy")
        await client.respond(asked["call_id"], "approve")

        post = await held.arrived()  # the transfer is applied; its answer is held
        assert post.key == asked["call_id"]
        holder = node_named(nodes, (await run_row(asked["run_id"])).node)
        survivor = next(n for n in nodes if n is not holder)
        holder.kill()
        held.release()
        await client.follow(survivor)

        again = await client.until(lambda f: f["type"] in ("approval.requested", "agent.completed", "agent.failed"),
                                   timeout=30)
        assert sink.requests == [post], "a once call was POSTed again"
        assert (again["type"], again.get("reason")) == ("approval.requested", "outcome_unknown"), again
        unknown = client.applied[again["seq"] - 1]  # in the same transaction, just before
        assert (unknown["type"], unknown["call_id"], unknown["status"]) == (
            "agent.tool_result", asked["call_id"], "unknown")
        assert again["call_id"] != asked["call_id"]
        assert (again["tool"], again["arguments"]) == ("demo.transfer", {"n": 7})
        assert sink.requests == [post]
        run = await run_row(asked["run_id"])
        assert (run.status, run.node, run.lease_expires_at) == ("waiting", "", None)

        await client.respond(again["call_id"], "deny")
        done = await client.event("agent.completed", timeout=30)
        assert done["message"]["text"] == "transfer denied"
        assert sink.requests == [post], "a once call was POSTed again"

        log = await database_sync_to_async(check_conversation_tools)(client.conversation_id, client.frames())
        first, retry = log.of_tool("demo.transfer")
        assert (first.call_id, first.effect, first.decision, first.status) == (
            asked["call_id"], "once", "approved", "unknown")
        assert (retry.call_id, retry.reason, retry.decision, retry.by, retry.status, retry.call_seq) == (
            again["call_id"], "outcome_unknown", "denied", client.client_id, "denied", None)
        journal = await calls_of(asked["run_id"])
        assert [(c.retry, c.status, c.attempts) for c in journal] == [(0, "unknown", 1), (1, "denied", 0)]
        await client.close()
