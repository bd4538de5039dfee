"""Path 2 end to end: the daphne node running a stream is SIGKILLed mid-answer; the other
node takes the run over and the client, resumed there, gets exactly the whole answer. The
answer waits on a gate (tests/support/gated_agent.py) until the client is on the other node:
it is certainly unfinished when the node dies, on any machine."""

import time

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import AgentRun, Connection, Event
from tests.conftest import access_for
from tests.support.gated_agent import AgentGate
from tests.support.sdk_chat import FAST_NODE_ENV
from tests.support.waiting import eventually
from tests.support.ws_e2e import E2EClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

async def test_sigkill_mid_answer_run_completes_on_the_other_node(daphne_cluster, user, tmp_path):
    gate = AgentGate(tmp_path, after=20)
    a = daphne_cluster("e2e-a", **FAST_NODE_ENV, **gate.env)
    token = await database_sync_to_async(access_for)(user)
    client = E2EClient(token)
    await client.connect(a.ws_url)
    bystander = E2EClient(token)  # never comes back: only the reaper can close its row
    await bystander.connect(a.ws_url)
    await client.message("count 200")
    started = await client.until(lambda f: f["type"] == "agent.started")
    await client.until(lambda f: f["type"] == "agent.delta")
    run_id = started["run_id"]
    # B starts once A holds the run: B's sweep could otherwise claim it first (seen once in a
    # loaded full run), and there would be nothing to take over.
    b = daphne_cluster("e2e-b", **FAST_NODE_ENV, **gate.env)

    a.kill()
    killed_at = time.monotonic()
    await client.close()
    ready = await client.connect(b.ws_url)
    assert ready["node"] == "e2e-b" and ready["resumed"] is True
    gate.open()
    done = await client.until(lambda f: f["type"] == "agent.completed", timeout=40)
    took = time.monotonic() - killed_at
    print(f"kill to completion: {took:.2f}s")

    expected = " ".join(f"w{i}" for i in range(1, 201))
    assert client.run_text(run_id) == done["message"]["text"] == expected
    assert sum(f["type"] == "agent.completed" for f in client.applied.values()) == 1
    await client.close()

    run = await database_sync_to_async(AgentRun.objects.get)(pk=run_id)
    assert (run.status, run.node) == ("completed", "e2e-b") and run.claims >= 2
    seqs = await database_sync_to_async(lambda: list(Event.objects.order_by("seq").values_list("seq", flat=True)))()
    assert seqs == list(range(1, len(seqs) + 1))

    def a_rows_closed():
        return not Connection.objects.filter(node="e2e-a", closed_at__isnull=True).exists()

    # The resumed client replaced its own zombie row at once (4409); the bystander's row is
    # closed by the surviving node's reaper.
    await eventually(database_sync_to_async(a_rows_closed), timeout=10, what="the dead node's rows reaped")
    reasons = await database_sync_to_async(
        lambda: dict(Connection.objects.filter(node="e2e-a").values_list("client_id", "close_reason"))
    )()
    assert reasons == {client.client_id: "replaced", bystander.client_id: "node_lost"}
    await bystander.close()
