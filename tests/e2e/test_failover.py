"""Path 4 end to end: failover when a node or the network fails without any warning.

(a) The node the SDK clients are on is SIGKILLed mid-stream: the clients see their sockets
    die, fail over to the other node and resume; the runs the dead node held are taken over
    there once their leases lapse and complete with nothing lost or repeated.
(b) The network between a client and its node fails (through tests.support.netproxy): a
    blackhole (half-open, nothing arrives, no FIN) is found by the SDK's heartbeat timeout, a
    reset by the socket error; either way the client moves to the other node and resumes
    while the run goes on where it was.

In (a) the long answers wait on a gate (tests/support/gated_agent.py) until every client is on
the surviving node: unfinished when A dies, on any machine. (b) needs frames flowing when the
network fails (the heartbeat's detection time is measured from the last one), so its stream
is not gated."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import AgentRun, Connection
from tests.support.gated_agent import AgentGate
from tests.support.netproxy import FaultProxy
from tests.support.sdk_chat import (
    FAST_NODE_ENV,
    ChatSession,
    check_conversation,
    expected_answers,
    latency_summary,
    runs_streaming,
    user_tokens,
    wait_ready,
)
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HEARTBEAT_INTERVAL = 0.5
HEARTBEAT_TIMEOUT = 1.5
RESUME_BOUND = 2.0


def _open(endpoints: list[str], token: str, name: str) -> ChatSession:
    return ChatSession.open(
        endpoints, token, name=name, heartbeat_interval=HEARTBEAT_INTERVAL, heartbeat_timeout=HEARTBEAT_TIMEOUT
    )


def _streaming(session: ChatSession, deltas: int = 10):
    """The session's latest run is under way: started, not completed, `deltas` received."""
    runs = [r for r in session.started if not session.completed.get(r)]
    return len(runs) == 1 and len(session.deltas.get(runs[0], [])) >= deltas


def _run_nodes() -> dict[str, tuple[str, str]]:
    return {str(r[0]): (r[1], r[2]) for r in AgentRun.objects.values_list("id", "node", "status")}


async def _closed_rows(client_id: str) -> list[tuple]:
    """The client's connection rows, oldest first, once the servers closed every one."""

    def rows():
        found = Connection.objects.filter(client_id=client_id).order_by("opened_at")
        if found.filter(closed_at__isnull=True).exists():
            return None
        return list(found.values_list("node", "close_code", "close_reason"))

    return await eventually(database_sync_to_async(rows), timeout=10, what=f"the rows of {client_id} closed")


async def test_sigkill_mid_stream_fails_over_and_the_run_is_taken_over(daphne_cluster, tmp_path):
    gate = AgentGate(tmp_path)
    a = daphne_cluster("kill-a", **FAST_NODE_ENV, **gate.env)
    b = daphne_cluster("kill-b", **FAST_NODE_ENV, **gate.env)
    await wait_ready(a)
    await wait_ready(b)
    tokens = await database_sync_to_async(user_tokens)(3, "kill")
    sessions = [_open([a.ws_url, b.ws_url], t, f"k{i}") for i, t in enumerate(tokens)]
    try:
        await asyncio.gather(*(s.converse("count 3") for s in sessions))
        long_ids = [await s.send("count 200") for s in sessions]  # held at the gate
        held = await runs_streaming(3, min_deltas=1)
        await asyncio.gather(*(s.wait_for(lambda s=s: _streaming(s, 1), 10, "stream under way") for s in sessions))
        assert all(s.client.node == "kill-a" for s in sessions)
        # Each client's message was taken by A's own kick unless B's sweep happened to be quicker.
        on_a = {run for run, node in held.items() if node == "kill-a"}
        assert on_a, held

        a.kill()  # SIGKILL: no drain, no cleanup, the kernel just drops the sockets
        killed = time.monotonic()
        await asyncio.gather(
            *(s.wait_for(lambda s=s: s.current_node() == "kill-b", 10, "on B") for s in sessions)
        )
        gate.open()
        answers = [await s.wait_answer(i, timeout=30) for s, i in zip(sessions, long_ids, strict=True)]
        took = time.monotonic() - killed
        # The conversation goes on on the surviving node.
        await asyncio.gather(*(s.converse("count 4") for s in sessions))
    finally:
        await asyncio.gather(*(s.close() for s in sessions))

    latencies = [lat for s in sessions for lat in s.client.resume_latencies]
    print(
        f"\nSIGKILL -> all long answers complete {took:.2f}s ({len(on_a)} of 3 runs taken over from the dead node); "
        f"resume latency {latency_summary(latencies)}"
    )
    runs = await database_sync_to_async(_run_nodes)()
    for s, done in zip(sessions, answers, strict=True):
        result = await database_sync_to_async(check_conversation)(s, expected_answers(s))
        assert result.messages == 3
        # The SDK found the dead socket on its own (no close frame: 1006 or none at all).
        assert [e.code for _, e in s.losses()] in ([1006], [None]), s.losses()
        assert [(e.node, e.resumed) for _, e in s.connected_times()] == [("kill-a", False), ("kill-b", True)]
        assert len(s.client.resume_latencies) == 1 and s.client.resume_latencies[0] < RESUME_BOUND
        # The long run completed on the surviving node; one held by A was taken over there.
        run = next(r for r in result.runs if str(r["id"]) == done.run_id)
        assert (run["status"], run["node"]) == ("completed", "kill-b")
        assert run["claims"] == (2 if done.run_id in on_a else 1), run
        assert runs[done.run_id] == ("kill-b", "completed")
        # The resumed client replaced its own socket's row on the dead node at once.
        rows = await _closed_rows(s.client.client_id)
        assert rows == [("kill-a", 4409, "replaced"), ("kill-b", 1000, "client_closed")], rows


@pytest.mark.parametrize("fault", ["blackhole", "reset"])
async def test_network_fault_fails_over_to_the_other_node(daphne_cluster, fault):
    a = daphne_cluster(f"net-{fault}-a", **FAST_NODE_ENV)
    b = daphne_cluster(f"net-{fault}-b", **FAST_NODE_ENV)
    await wait_ready(a)
    await wait_ready(b)
    [token] = await database_sync_to_async(user_tokens)(1, "net")
    proxy = await FaultProxy(upstream=("127.0.0.1", a.port)).start()
    session = _open([proxy.url(), b.ws_url], token, fault)
    try:
        await session.converse("count 3")
        assert session.client.node == a.node_id and session.client.endpoint == proxy.url()
        long_id = await session.send("count 200")
        await runs_streaming(1)
        await session.wait_for(lambda: _streaming(session, 3), 10, "stream under way")

        if fault == "blackhole":
            proxy.blackhole()  # half-open: nothing either way, no FIN, no RST
        else:
            assert proxy.reset() == 1  # RST both ways
        faulted = time.monotonic()
        await session.wait_for(lambda: session.current_node() == b.node_id, 10, "on B")
        done = await session.wait_answer(long_id, timeout=30)
        await session.converse("count 4")
    finally:
        await session.close()
        await proxy.stop()

    [(lost_at, lost)] = session.losses()
    detected = lost_at - faulted
    [latency] = session.client.resume_latencies
    print(f"\n{fault}: detected after {detected:.3f}s ({lost.reason}); resumed on B {latency:.3f}s after the loss")
    if fault == "blackhole":
        # Only the SDK's heartbeat can tell: the last frame came just before the blackhole.
        assert "no frame from the server" in lost.reason and lost.code is None
        assert HEARTBEAT_TIMEOUT - 0.3 <= detected <= HEARTBEAT_TIMEOUT + 1.0
    else:
        assert lost.code in (1006, None) and detected < 1.0
    assert latency < RESUME_BOUND
    assert [(e.node, e.resumed) for _, e in session.connected_times()] == [(a.node_id, False), (b.node_id, True)]

    result = await database_sync_to_async(check_conversation)(session, expected_answers(session))
    assert result.messages == 3
    # Both nodes stayed healthy: the run was never taken over, wherever it ran.
    run = next(r for r in result.runs if str(r["id"]) == done.run_id)
    assert run["claims"] == 1 and run["status"] == "completed"
    rows = await _closed_rows(session.client.client_id)
    assert rows[1:] == [(b.node_id, 1000, "client_closed")], rows
    if fault == "blackhole":
        # A never heard of the loss: the client's resume on B closed its row there.
        assert rows[0] == (a.node_id, 4409, "replaced"), rows
    else:
        # A saw the reset, unless the resume on B got there first.
        assert rows[0] in ((a.node_id, 1006, "connection_lost"), (a.node_id, 4409, "replaced")), rows
