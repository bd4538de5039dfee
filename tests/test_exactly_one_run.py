"""One user message, one run: whatever resends, reconnects and concurrent sockets do. Runs of
one conversation never overlap; cancel stops a run and the queue moves on."""

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import AgentRun, Event, Message
from tests.support.gated_agent import AgentGate
from tests.support.ws import WSClient, run_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def settings_for_runs(settings):
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 10
    settings.REALTIME_RATE_MESSAGES = (1000, 60)
    settings.REALTIME_RATE_FRAMES = (1000, 10)


def _acks(frames, msg_id):
    return [f for f in frames if f["type"] == "message.ack" and f["client_msg_id"] == msg_id]


async def _two_sockets_on_two_nodes(cluster, token) -> tuple[WSClient, WSClient]:
    """Two devices of one user on one conversation, each through its own node."""
    _, app1 = cluster("node-1")
    _, app2 = cluster("node-2")
    a = WSClient(app1)
    ready = await a.connect(token)
    b = WSClient(app2)
    await b.connect(token, conversation_id=ready["conversation_id"], last_seq=0)
    return a, b


async def test_resends_from_two_sockets_make_one_run(cluster, token):
    a, b = await _two_sockets_on_two_nodes(cluster, token)
    msg_id = str(uuid.uuid4())

    async def resend(client, times):
        for _ in range(times):
            await client.message("count 40", client_msg_id=msg_id)

    def settled(client, acks):
        def check(_frame):
            seen = client.frames
            return any(f["type"] == "agent.completed" for f in seen) and len(_acks(seen, msg_id)) == acks

        return check

    await asyncio.gather(resend(a, 10), resend(b, 10))
    await a.recv_until(settled(a, 10), timeout=20)
    await b.recv_until(settled(b, 10), timeout=20)
    await resend(a, 5)  # after the run finished, too
    await a.recv_until(settled(a, 15))
    frames_a, frames_b = a.frames, b.frames
    acks = _acks(frames_a, msg_id) + _acks(frames_b, msg_id)
    assert len(acks) == 25
    assert {a["seq"] for a in acks} == {1}
    assert sum(not a["duplicate"] for a in acks) == 1
    for frames in (frames_a, frames_b):
        assert sum(f["type"] == "agent.started" for f in frames) == 1
        assert sum(f["type"] == "agent.completed" for f in frames) == 1
    await a.assert_silent()
    await a.drop()
    await b.drop()
    assert await database_sync_to_async(Message.objects.filter(role="user").count)() == 1
    assert await database_sync_to_async(AgentRun.objects.count)() == 1


async def test_two_messages_at_once_run_one_after_the_other(cluster, token):
    a, b = await _two_sockets_on_two_nodes(cluster, token)
    await asyncio.gather(a.message("count 30"), b.message("count 20"))
    frames = await a.recv_until(
        lambda f: f["type"] == "agent.completed" and sum(x["type"] == "agent.completed" for x in a.frames) == 2,
        timeout=30,
    )
    await a.drop()
    await b.drop()

    runs = await database_sync_to_async(lambda: list(AgentRun.objects.order_by("message__seq")))()
    assert [r.status for r in runs] == ["completed", "completed"]
    assert runs[1].started_at >= runs[0].finished_at
    log = await database_sync_to_async(lambda: list(Event.objects.order_by("seq").values_list("type", "run_id")))()
    first, second = str(runs[0].id), str(runs[1].id)
    run_of = [str(r) if r else None for _, r in log]
    # The second run's events all come after the first run's completion.
    assert max(i for i, r in enumerate(run_of) if r == first) < min(i for i, r in enumerate(run_of) if r == second)
    for run in runs:
        assert run_text(frames, str(run.id)) == run.text


async def test_cancel_stops_the_run_and_the_next_one_proceeds(node_app, token, settings, monkeypatch, tmp_path):
    # The gate is never opened: the run is certainly still streaming when the cancel arrives.
    AgentGate(tmp_path).install(monkeypatch, settings)
    c = WSClient(node_app)
    await c.connect(token)
    await c.message("count 500")
    await c.message("after the cancel")
    frames = await c.recv_until(lambda f: f["type"] == "agent.delta")
    run_id = next(f for f in frames if f["type"] == "agent.started")["run_id"]
    await c.send({"type": "cancel", "run_id": run_id})
    frames += await c.recv_until(lambda f: f["type"] == "agent.failed")
    failed = frames[-1]
    assert failed == {
        "type": "agent.failed",
        "seq": failed["seq"],
        "run_id": run_id,
        "error": "cancelled",
        "cancelled": True,
    }
    frames += await c.recv_until(lambda f: f["type"] == "agent.completed")
    assert frames[-1]["message"]["text"] == "You said: after the cancel"
    await c.send({"type": "cancel", "run_id": str(uuid.uuid4())})
    error = await c.recv()
    assert error["code"] == "not_found"
    await c.drop()
    run = await database_sync_to_async(AgentRun.objects.get)(pk=run_id)
    assert run.status == "cancelled" and len(run.text) < len(" ".join(f"w{i}" for i in range(1, 501)))
