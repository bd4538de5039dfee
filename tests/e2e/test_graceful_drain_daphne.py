"""Path 4 end to end: SIGTERM to a real daphne node drains it. Its clients get `reconnect`
and 4012 (not daphne's 1006), resume on the other node at once and lose nothing; the node
leaves discovery, answers /readyz with 503 while it drains, and exits by itself.

The long answers wait on a gate (tests/support/gated_agent.py): they outlast the grace on any
machine, and the first test opens the gate once the run was handed over."""

import json
import time
import urllib.error
import urllib.request

import pytest
import websockets
from channels.db import database_sync_to_async

from sessions_app.models import AgentRun, Connection
from tests.conftest import access_for
from tests.support.gated_agent import AgentGate
from tests.support.sdk_chat import FAST_NODE_ENV
from tests.support.waiting import eventually
from tests.support.ws_e2e import E2EClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_sigterm_drains_to_the_other_node_without_loss(daphne_cluster, user, tmp_path):
    gate = AgentGate(tmp_path)
    a = daphne_cluster("drain-a", **FAST_NODE_ENV, **gate.env)
    token = await database_sync_to_async(access_for)(user)
    client = E2EClient(token)
    await client.connect(a.ws_url)
    await client.message("count 200")  # held at the gate: longer than the grace, so it is handed over
    started = await client.until(lambda f: f["type"] == "agent.started")
    await client.until(lambda f: f["type"] == "agent.delta")
    # B starts once A holds the run: B's sweep could otherwise claim it first, and the drain
    # would have nothing to hand over.
    b = daphne_cluster("drain-b", **FAST_NODE_ENV, **gate.env)
    assert await database_sync_to_async(_readyz)(a.port) == 200

    a.proc.terminate()  # SIGTERM
    signalled = time.monotonic()
    frame = await client.until(lambda f: f["type"] == "reconnect", timeout=5)
    assert frame["retry_after_ms"] == 0
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.recv(timeout=5)
    assert closed.value.rcvd.code == 4012
    told = time.monotonic() - signalled

    ready = await client.connect(b.ws_url)
    resumed_after = time.monotonic() - signalled
    assert ready["resumed"] is True and ready["node"] == "drain-b"
    # While it drains, node A is not ready and refuses new sockets with `reconnect`/4012.
    if a.proc.poll() is None:
        status = await database_sync_to_async(_readyz)(a.port)
        assert status == 503

    def taken_over():
        return AgentRun.objects.filter(pk=started["run_id"], node="drain-b", claims=2, status="running").exists()

    # Handed over (unfinished: the gate still holds it) and claimed by B; now let it finish.
    await eventually(database_sync_to_async(taken_over), timeout=15, what="the run taken over by B")
    gate.open()
    done = await client.until(lambda f: f["type"] == "agent.completed", timeout=30)
    assert client.run_text(started["run_id"]) == done["message"]["text"] == " ".join(
        f"w{i}" for i in range(1, 201)
    )
    assert sum(f["type"] == "agent.completed" for f in client.applied.values()) == 1
    print(f"SIGTERM -> reconnect frame {told:.3f}s, -> resumed on B {resumed_after:.3f}s")
    assert resumed_after < 2.0

    a.proc.wait(10)  # exits by itself after the grace period
    assert a.proc.returncode == 0, a.tail()
    run = await database_sync_to_async(AgentRun.objects.get)(pk=started["run_id"])
    assert (run.status, run.node) == ("completed", "drain-b")
    rows = await database_sync_to_async(lambda: list(Connection.objects.filter(node="drain-a")))()
    assert [(r.close_code, r.close_reason) for r in rows] == [(4012, "going_away")]
    await client.close()


async def test_new_socket_on_a_draining_node_is_told_to_reconnect(daphne_cluster, user, tmp_path):
    gate = AgentGate(tmp_path)  # never opened: the run keeps the node draining for its whole grace
    a = daphne_cluster("drain-solo", **{**FAST_NODE_ENV, "REALTIME_DRAIN_GRACE": 5.0}, **gate.env)
    token = await database_sync_to_async(access_for)(user)
    holder = E2EClient(token)
    await holder.connect(a.ws_url)
    await holder.message("count 150")
    await holder.until(lambda f: f["type"] == "agent.started")
    a.proc.terminate()
    await holder.until(lambda f: f["type"] == "reconnect", timeout=5)

    async def refused_with_reconnect():
        async with websockets.connect(a.ws_url, open_timeout=2) as ws:
            frame = json.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return frame["type"] == "reconnect" and closed.value.rcvd.code == 4012

    assert await eventually(refused_with_reconnect, timeout=5, what="late socket refused")
    a.proc.wait(15)
    assert a.proc.returncode == 0, a.tail()
