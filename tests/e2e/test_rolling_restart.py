"""Path 4 end to end: a rolling restart of a two-node cluster while 20 SDK clients talk.

Node A gets SIGTERM, drains (every socket: `reconnect` + 4012, runs finish within the grace
or are handed over), exits, starts again with the same id and port and turns ready; then the
same for node B. Meanwhile every client keeps a conversation going ("count N" answers streamed
word by word), so streams are running on the node being restarted. At the end every client
has seen every seq of its conversation exactly once and in order, every message it sent is
stored once with exactly one completed run, every answer equals its deltas as received, and
the resumes took less than 2 s (the median; a single one may take up to 4 s on a loaded
machine, where 20 clients resuming at once on one node queue behind each other)."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import AgentRun, Connection
from tests.support.sdk_chat import (
    FAST_NODE_ENV,
    check_conversation,
    expected_answers,
    latency_summary,
    user_tokens,
    wait_exit,
    wait_ready,
)
from tests.support.talkers import Talkers, sessions_across
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CLIENTS = 20
MIN_MESSAGES = 3
RESUME_BOUND = 2.0
# Measured on the 2-core dev box: every resume 0.7-1.1 s (mostly the SDK's backoff). With one core
# taken by another process, single resumes of the 20-client burst went past 2 s; the median
# keeps the 2 s claim, the ceiling still catches a resume that waited for a lease or a timeout.
RESUME_CEILING = 4.0
# 0.8 s answers finish within the 1 s drain grace; 2.4 s answers outlive it and are handed over.
TEXTS = ("count 40", "count 120", "count 40")


def _running_by_node() -> dict[str, int]:
    rows = AgentRun.objects.filter(status=AgentRun.Status.RUNNING).values_list("node", flat=True)
    return {node: list(rows).count(node) for node in set(rows)}


def _open_rows(node_id: str) -> int:
    return Connection.objects.filter(node=node_id, closed_at__isnull=True).count()


async def test_rolling_restart_loses_nothing(daphne_cluster):
    a = daphne_cluster("roll-a", **FAST_NODE_ENV)
    b = daphne_cluster("roll-b", **FAST_NODE_ENV)
    await wait_ready(a)
    await wait_ready(b)
    tokens = await database_sync_to_async(user_tokens)(CLIENTS, "roll")
    # Half the clients prefer A, half B: both nodes carry streams when they are restarted.
    sessions = sessions_across(a, b, tokens, "c")
    async with Talkers(sessions, TEXTS, min_messages=MIN_MESSAGES) as talkers:
        await talkers.all_answered_once()

        restarts = []
        for node in (a, b):
            running = await database_sync_to_async(_running_by_node)()
            streaming = running.get(node.node_id, 0)
            sockets = await database_sync_to_async(_open_rows)(node.node_id)
            signalled = time.monotonic()
            node.proc.terminate()  # SIGTERM: drain
            code = await wait_exit(node, timeout=15)
            exited = time.monotonic()
            assert code == 0, node.tail()
            port = node.port
            await asyncio.to_thread(node.start)  # same node id and port; off the loop, the clients keep running
            assert node.port == port
            ready = await wait_ready(node)
            restarts.append((node.node_id, running, sockets, exited - signalled, ready - exited))
            assert streaming > 0, f"no stream was running on {node.node_id} when it was signalled: {running}"
            talkers.check()

        await talkers.finish(90)

    for node_id, running, rows, drain, boot in restarts:
        print(
            f"\n{node_id}: {rows} sockets at SIGTERM, runs streaming per node {running}; "
            f"drained and exited in {drain:.2f}s, ready again {boot:.2f}s later"
        )

    # Exactly once, in order, nothing lost, one completed run per message.
    handed_over = 0
    total_messages = 0
    for s in sessions:
        result = await database_sync_to_async(check_conversation)(s, expected_answers(s))
        assert result.messages >= MIN_MESSAGES
        total_messages += result.messages
        handed_over += sum(1 for r in result.runs if r["claims"] >= 2)
        assert s.client.error is None, f"{s.name}: {s.client.error!r}"

    # Every client lost its socket at least once per restart of a node it was on, and each
    # time was resumed (next `ready`) within the bound.
    latencies = [lat for s in sessions for lat in s.client.resume_latencies]
    print(
        f"{CLIENTS} clients, {total_messages} messages, {handed_over} runs handed over between nodes; "
        f"resume latency {latency_summary(latencies)}"
    )
    for i, s in enumerate(sessions):
        # A's clients move to B at A's restart and back to A at B's; B's clients move once.
        path = ["roll-a", "roll-b", "roll-a"] if i % 2 == 0 else ["roll-b", "roll-a"]
        connected = [(e.node, e.resumed) for _, e in s.connected_times()]
        assert connected == [(path[0], False)] + [(node, True) for node in path[1:]], f"{s.name}: {connected}"
        losses = s.losses()
        assert [e.code for _, e in losses] == [4012] * (len(path) - 1), f"{s.name}: {losses}"
        assert len(s.client.resume_latencies) == len(losses), f"{s.name}: {s.client.resume_latencies} {losses}"
        assert max(s.client.resume_latencies) < RESUME_CEILING, f"{s.name}: {s.client.resume_latencies}"
    assert statistics.median(latencies) < RESUME_BOUND, latency_summary(latencies)

    # One row per socket: 20 first sockets, 10 moved to B, 20 moved to A. The drains closed
    # theirs politely (4012 going_away, or 4409 replaced when the client's resume on the other
    # node got to the row first); the clients closed the last 20, all on the restarted A.
    def rows_closed():
        return not Connection.objects.filter(closed_at__isnull=True).exists()

    await eventually(database_sync_to_async(rows_closed), timeout=10, what="every connection row closed")
    rows = await database_sync_to_async(
        lambda: list(Connection.objects.values_list("node", "close_code", "close_reason"))
    )()
    counts = {o: rows.count(o) for o in set(rows)}
    print(f"connection rows: {counts}")
    assert len(rows) == 50, counts
    assert counts.get(("roll-a", 1000, "client_closed")) == CLIENTS, counts
    drained = [r for r in rows if r[1] != 1000]
    assert len(drained) == 30 and {r[1:] for r in drained} <= {(4012, "going_away"), (4409, "replaced")}, counts
