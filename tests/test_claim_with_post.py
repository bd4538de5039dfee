"""A message's run is claimed in the database call that stored the message, on a node that runs
agents (issue 22): not after the post came back to the loop, its acknowledgement sent and a
driver started. When 500 answers started together, the claims waited for the loop to get
through 500 posts first. A claim never costs a post: it fails alone, it is skipped at
capacity, and a claim that comes back to a stopping node is released."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError
from django.utils import timezone

from sessions_app import services
from sessions_app.models import AgentRun
from tests.support.waiting import eventually
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


class Quick:
    async def stream(self, context):
        yield "ok"


class Recorder:
    """Which thread stored the messages and which claimed the runs."""

    def __init__(self, monkeypatch, fail_claims: int = 0) -> None:
        self.posts: list[int] = []
        self.claims: list[int] = []
        self.fail_claims = fail_claims
        real_post, real_claim = services.post_user_messages, services.claim_runs

        def post(messages):
            self.posts.append(threading.get_ident())
            return real_post(messages)

        def claim(conversation_ids, *args, **kwargs):
            self.claims.append(threading.get_ident())
            if self.fail_claims:
                self.fail_claims -= 1
                raise OperationalError("the database went away")
            return real_claim(conversation_ids, *args, **kwargs)

        monkeypatch.setattr(services, "post_user_messages", post)
        monkeypatch.setattr(services, "claim_runs", claim)


async def _completed(conversation_id: str) -> bool:
    return await database_sync_to_async(
        AgentRun.objects.filter(conversation_id=conversation_id, status="completed").exists)()


async def test_a_messages_run_is_claimed_in_the_call_that_stored_it(cluster, token, monkeypatch):
    node, app = cluster("node-a", register=False, agent_factory=Quick, sweep_interval=60)
    recorder = Recorder(monkeypatch)
    client = WSClient(app)
    ready = await client.connect(token)
    msg = await client.message("hello")
    frames = await client.recv_until(lambda f: f["type"] == "agent.completed")
    assert [f for f in frames if f["type"] == "message.ack"] == [
        {"type": "message.ack", "client_msg_id": msg, "seq": 1, "duplicate": False}]
    assert await _completed(ready["conversation_id"])
    assert recorder.claims[0] == recorder.posts[0]  # claimed in the thread, and the call, of its post
    # Its driver claimed once: after the run, to look for the conversation's next one.
    assert node.supervisor.claims.calls == 1
    await client.drop()


async def test_a_claim_that_fails_costs_no_post_and_the_kick_claims_the_run(cluster, token, monkeypatch):
    node, app = cluster("node-a", register=False, agent_factory=Quick, sweep_interval=60)
    Recorder(monkeypatch, fail_claims=1)
    client = WSClient(app)
    ready = await client.connect(token)
    msg = await client.message("hello")
    frames = await client.recv_until(lambda f: f["type"] == "agent.completed")
    assert [f["type"] for f in frames if f.get("client_msg_id") == msg] == ["message.ack"]
    assert await _completed(ready["conversation_id"])
    assert node.supervisor.claims.calls == 2  # the kick's claim, then the look for a next run
    await client.drop()


async def test_a_node_at_capacity_does_not_claim_with_the_post(cluster, token, monkeypatch):
    node, app = cluster("node-a", register=False, agent_factory=Quick, sweep_interval=60, max_concurrent=1)
    recorder = Recorder(monkeypatch)
    monkeypatch.setattr(node.supervisor, "executing", {"a-run": asyncio.Queue()})  # full
    client = WSClient(app)
    ready = await client.connect(token)
    await client.message("hello")
    await client.recv_until(lambda f: f["type"] == "message.ack")
    assert recorder.claims == []
    run = await database_sync_to_async(AgentRun.objects.get)(conversation_id=ready["conversation_id"])
    assert run.status == "queued"
    await client.drop()


async def test_a_claim_that_comes_back_to_a_stopping_node_is_released(cluster, user):
    node, _ = cluster("node-a", register=False, agent_factory=Quick, sweep_interval=60)

    def claimed():
        cid = str(services.create_conversation(user.pk).pk)
        services.post_user_message(cid, uuid.uuid4(), "hi")
        return services.claim_runs([cid], "node-a", 30)[0]

    claim = await database_sync_to_async(claimed)()
    await node.supervisor.stop(grace=0)
    node.adopt(claim)

    async def released():
        run = await database_sync_to_async(AgentRun.objects.get)(pk=claim.run_id)
        return run.lease_expires_at is not None and run.lease_expires_at <= timezone.now()

    await eventually(released, timeout=5, what="the run released")
