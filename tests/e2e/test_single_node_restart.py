"""Path 4 end to end: the only node restarts (SIGTERM, drain, exit, start again) while SDK
clients stream. There is nowhere to fail over to, so the clients retry with backoff until the
node is back; each is resumed within 2 s of the node turning ready and loses nothing. A
message sent while the node was down waits in the SDK's outbox and is delivered exactly once
after the restart.

The long answers wait on a gate (tests/support/gated_agent.py) that the test opens only after
the restart: they are certainly running when SIGTERM arrives and certainly unfinished when
the grace ends, on any machine."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone
from tether_client import Backoff

from sessions_app import services
from sessions_app.models import AgentRun, Message
from tests.support.gated_agent import AgentGate
from tests.support.sdk_chat import (
    FAST_NODE_ENV,
    ChatSession,
    check_conversation,
    count_answer,
    expected_answers,
    latency_summary,
    readyz,
    runs_streaming,
    user_tokens,
    wait_exit,
    wait_ready,
)
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CLIENTS = 4
LONG = 200
RESUME_BOUND = 2.0
# The SDK's default cap (10 s) lets a client that failed a few times sleep up to 10 s, far
# past the moment the node is back. A deployment that restarts its only node in place wants
# a short cap; the window then is at most 1 s after the node turned ready.
BACKOFF = dict(base=0.1, cap=1.0)


async def test_single_node_restart_resumes_every_client_and_flushes_the_outbox(daphne_cluster, tmp_path):
    gate = AgentGate(tmp_path)
    node = daphne_cluster("solo", **FAST_NODE_ENV, **gate.env)
    await wait_ready(node)
    tokens = await database_sync_to_async(user_tokens)(CLIENTS, "solo")
    sessions = [
        ChatSession.open([node.ws_url], t, name=f"s{i}", backoff=Backoff(**BACKOFF)) for i, t in enumerate(tokens)
    ]
    try:
        for s in sessions:
            await s.client.wait_connected(10)
        # A short exchange first (under the gate's word), then long streams that hold at the
        # gate: running when the node is told to stop, whatever the machine's speed.
        await asyncio.gather(*(s.converse("count 5") for s in sessions))
        long_ids = [await s.send(f"count {LONG}") for s in sessions]
        await runs_streaming(CLIENTS, min_deltas=1)

        signalled = time.monotonic()
        node.proc.terminate()  # SIGTERM
        assert await wait_exit(node, timeout=15) == 0, node.tail()
        exited = time.monotonic()
        assert await readyz(node.port) is None
        # Handed back when the grace ran out (the gate holds the streams): still running in
        # the database, part of the text committed, the lease expired.
        runs = await database_sync_to_async(
            lambda: sorted(
                ((r.status, r.claims, r.next_index, r.lease_expires_at, services.committed_text(r))
                 for r in AgentRun.objects.all()),
                key=lambda r: r[0],
            )
        )()
        assert [r[:2] for r in runs] == [("completed", 1)] * CLIENTS + [("running", 1)] * CLIENTS, runs
        assert all(r[2] > 0 for r in runs), runs
        assert all(r[3] < timezone.now() for r in runs if r[0] == "running"), runs
        # What was committed is the start of the answer, up to the gate at most.
        held = [r[4] for r in runs if r[0] == "running"]
        assert all(t and count_answer(LONG).startswith(t) and len(t.split()) <= gate.after for t in held), held

        # While the node is down: a message goes into the first client's outbox.
        assert not sessions[0].client.connected
        offline_id = await sessions[0].send("count 7")
        assert [m.client_msg_id for m in sessions[0].client.pending_messages] == [offline_id]

        await asyncio.to_thread(node.start)  # same node id, same port (off the loop: the clients keep running)
        ready_at = await wait_ready(node)

        def resumed_after_ready(s: ChatSession):
            return next((t for t, e in s.connected_times() if t > exited), None)

        await asyncio.gather(
            *(s.wait_for(lambda s=s: resumed_after_ready(s), 15, "resumed after the restart") for s in sessions)
        )
        after_ready = [max(0.0, resumed_after_ready(s) - ready_at) for s in sessions]

        # The restarted node took the handed-back runs over (a second claim); they still hold
        # at the gate, so none could finish before the restart.
        async def taken_over():
            rows = await database_sync_to_async(
                lambda: list(AgentRun.objects.filter(claims=2).values_list("status", flat=True))
            )()
            return len(rows) == CLIENTS and rows

        assert await eventually(taken_over, 15, what="the handed-back runs claimed again") == ["running"] * CLIENTS
        gate.open()

        # Everything finishes: the handed-over streams on the restarted node, and the outbox.
        for s, long_id in zip(sessions, long_ids, strict=True):
            await s.wait_answer(long_id, timeout=30)
        offline_done = await sessions[0].wait_answer(offline_id, timeout=30)
        assert offline_done.message.text == count_answer(7)
        assert sessions[0].client.pending_messages == []
        # One more exchange each on the restarted node.
        await asyncio.gather(*(s.converse("count 3") for s in sessions))
    finally:
        await asyncio.gather(*(s.close() for s in sessions))

    print(
        f"\nSIGTERM -> exit {exited - signalled:.2f}s, exit -> ready {ready_at - exited:.2f}s; "
        f"clients resumed {latency_summary(after_ready)} after ready; "
        f"socket loss -> resumed {latency_summary([lat for s in sessions for lat in s.client.resume_latencies])}"
    )
    assert max(after_ready) < RESUME_BOUND, after_ready

    for s in sessions:
        result = await database_sync_to_async(check_conversation)(s, expected_answers(s))
        assert result.messages == (4 if s is sessions[0] else 3)
        assert s.client.error is None
        # The socket was lost once (the drain's 4012) and resumed once, on the same node.
        assert [e.code for _, e in s.losses()] == [4012]
        assert len(s.client.resume_latencies) == 1
        connected = s.connected_times()
        assert [e.resumed for _, e in connected] == [False, True]
        assert all(e.node == "solo" for _, e in connected)
        # The stream cut by the drain was continued after the restart: claimed twice.
        long_run = next(r for r in result.runs if r["claims"] == 2)
        assert long_run["node"] == "solo"
        assert sorted(r["claims"] for r in result.runs) == [1] * (result.messages - 1) + [2]

    # The offline message: stored once, answered once.
    stored = await database_sync_to_async(lambda: Message.objects.filter(client_msg_id=offline_id).count())()
    assert stored == 1
    acks = [a for a in sessions[0].acks if a.client_msg_id == offline_id]
    assert [a.duplicate for a in acks] == [False]
