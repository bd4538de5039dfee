"""Two devices approve the same call at the same instant, through two nodes (issue 21): both
decisions are forced into the service together (a barrier), and the conversation lock lets one
win: one `approval.resolved`, the other device gets `already_decided` with the decision that
stands, and the transfer is POSTed once to a real HTTP service (tests/support/effect_sink.py).
The shared tool invariants hold on the log (tests/support/tool_invariants.py).

The other decisions (foreign sockets get `not_found`, expiry, cancel while waiting):
tests/test_approvals.py; every node restarted during the wait: tests/e2e/test_approval_survives_restarts.py."""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async

from sessions_app import services
from tests.conftest import access_for
from tests.support.effect_sink import EffectSink
from tests.support.tool_invariants import check_conversation_tools
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sink(settings):
    with EffectSink() as sink:
        settings.REALTIME_DEMO_EFFECT_URL = sink.url
        settings.REALTIME_DEMO_AGENT_DELAY_MS = 0
        yield sink


def of_type(kind: str):
    return lambda f: f["type"] == kind


async def test_two_devices_approving_at_once_one_wins_the_other_is_told(cluster, user, sink, monkeypatch):
    _, app1 = cluster("node-1")
    _, app2 = cluster("node-2")
    token = access_for(user)
    a = WSClient(app1)
    ready = await a.connect(token, client_id="device-a")
    b = WSClient(app2)
    await b.connect(token, conversation_id=ready["conversation_id"], last_seq=0, client_id="device-b")
    await a.message("transfer 3")
    asked = (await a.recv_until(of_type("approval.requested")))[-1]
    await b.recv_until(of_type("approval.requested"))

    # Both decisions reach the service together: each waits for the other at a barrier first.
    barrier = threading.Barrier(2, timeout=10)
    resolve = services.resolve_approval

    def together(*args, **kwargs):
        barrier.wait()
        return resolve(*args, **kwargs)

    monkeypatch.setattr(services, "resolve_approval", together)
    approve = {"type": "approval.respond", "call_id": asked["call_id"], "decision": "approve"}
    await asyncio.gather(a.send(approve), b.send(approve))

    seen_a = await a.recv_until(of_type("agent.completed"))
    seen_b = await b.recv_until(of_type("agent.completed"))
    resolved = [f for f in seen_a if f["type"] == "approval.resolved"]
    assert len(resolved) == 1 and resolved[0]["decision"] == "approved"
    winner, loser = (seen_a, seen_b) if resolved[0]["by"] == "device-a" else (seen_b, seen_a)
    assert not [f for f in winner if f["type"] == "error"]
    [refused] = [f for f in loser if f["type"] == "error"]
    assert (refused["code"], refused["ref"], refused["decision"]) == ("already_decided", asked["call_id"], "approved")
    assert [f for f in seen_b if "seq" in f and f["type"] == "approval.resolved"] == resolved

    assert [r.key for r in sink.requests] == [asked["call_id"]]
    log = await database_sync_to_async(check_conversation_tools)(ready["conversation_id"], a.frames)
    [call] = log.of_tool("demo.transfer")
    assert (call.decision, call.status) == ("approved", "ok")
    assert seen_a[-1]["message"]["text"] == "transferred 3"
