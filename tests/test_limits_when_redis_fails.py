"""The limits when Redis cannot be asked (issue 24, item 5): down, slow, or its pool exhausted
under load, which made checks fail by the hundred in a connect storm. Before, every limit let
everything through, so a connect storm bought unlimited paid agent runs and password guesses.

- Runs per user fail closed: a message gets `unavailable` with `ref` and `retry_after_ms`, is
  not stored and starts no run; the client sends it again.
- Login throttles fail closed: HTTP 503 with Retry-After.
- Every other limit falls back to this node's share, in memory: the limit divided by the live
  nodes last seen in the registry (connect rate per user and per address, concurrent sockets per
  user, new conversations per user; the refresh and conversation-creation REST throttles)."""

from __future__ import annotations

import uuid

import pytest
import redis
from channels.db import database_sync_to_async
from django.test import Client

from realtime.infra import ratelimit
from sessions_app.models import AgentRun, Message
from tests.support.ws import WSClient
from tests.test_rest_api import api

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_fallback():
    ratelimit.FALLBACK.clear()
    yield
    ratelimit.FALLBACK.clear()


def live_nodes(monkeypatch, count: int) -> None:
    """The registry's count as this node last saw it (the node's own reaper would say 1 here)."""
    monkeypatch.setattr(ratelimit, "live_nodes_estimate", lambda: count)


def redis_fails(monkeypatch, *names: str) -> None:
    async def unreachable(*args, **kwargs):
        raise redis.ConnectionError("Too many connections")

    for name in names:
        monkeypatch.setattr(ratelimit, name, unreachable)


async def test_runs_per_user_fail_closed(monkeypatch, node_app, token):
    client = WSClient(node_app)
    await client.connect(token)
    redis_fails(monkeypatch, "hit_all")
    msg_id = await client.message("hello")
    frames = await client.recv_until(lambda f: f["type"] == "error")
    assert frames[-1] == {"type": "error", "code": "unavailable", "ref": msg_id, "retry_after_ms": 1000,
                          "detail": "the rate limit cannot be checked now; retry"}
    assert await database_sync_to_async(Message.objects.count)() == 0
    assert await database_sync_to_async(AgentRun.objects.count)() == 0
    # The socket stays open, and the same message goes through once Redis answers.
    monkeypatch.undo()
    await client.send({"type": "message", "client_msg_id": msg_id, "text": "hello"})
    acked = await client.recv_until(lambda f: f["type"] == "message.ack")
    assert acked[-1]["client_msg_id"] == msg_id and acked[-1]["duplicate"] is False
    await client.drop()


async def _connect_outcome(app, token: str, conversation_id: str | None = None, client_addr=None) -> dict:
    client = WSClient(app, client_addr=client_addr)
    await client.open()
    await client.send({"type": "connect", "token": token, "conversation_id": conversation_id, "last_seq": None,
                       "client_id": str(uuid.uuid4())})
    frame = await client.recv()
    if frame["type"] != "ready":
        _, code = await client.expect_close()
        frame = {**frame, "close": code}
    return frame


async def test_connect_rate_per_user_falls_back_to_this_nodes_share(settings, monkeypatch, node_app, token):
    settings.REALTIME_RATE_CONNECT_USER = (6, 600)
    live_nodes(monkeypatch, 3)  # this node's share: 2
    redis_fails(monkeypatch, "take_connect")
    outcomes = [await _connect_outcome(node_app, token) for _ in range(3)]
    assert [o["type"] for o in outcomes] == ["ready", "ready", "error"]
    assert (outcomes[-1]["code"], outcomes[-1]["close"]) == ("rate_limited", 4429)
    assert outcomes[-1]["retry_after_ms"] > 0


async def test_concurrent_sockets_per_user_fall_back_to_this_nodes_share(settings, monkeypatch, node_app, token):
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 4
    live_nodes(monkeypatch, 2)  # this node's share: 2 sockets
    redis_fails(monkeypatch, "take_connect")
    first, second = WSClient(node_app), WSClient(node_app)
    await first.connect(token)
    await second.connect(token)
    refused = await _connect_outcome(node_app, token)
    assert (refused["code"], refused["detail"], refused["close"]) == (
        "rate_limited", "too many open connections for this user", 4429)
    await first.drop(1000)
    assert (await _connect_outcome(node_app, token))["type"] == "ready"


async def test_connect_rate_per_address_falls_back_to_this_nodes_share(settings, monkeypatch, node_app, token):
    settings.REALTIME_RATE_CONNECT_IP = (2, 600)
    redis_fails(monkeypatch, "hit", "take_connect")
    addr = ("198.51.100.20", 5555)
    outcomes = [await _connect_outcome(node_app, token, client_addr=addr) for _ in range(3)]
    assert [o["type"] for o in outcomes] == ["ready", "ready", "error"]
    assert (outcomes[-1]["code"], outcomes[-1]["close"]) == ("rate_limited", 4429)
    assert (await _connect_outcome(node_app, token, client_addr=("198.51.100.21", 1)))["type"] == "ready"


def _login(username: str, password: str = "wrong", addr: str = "198.51.100.1"):
    return Client(REMOTE_ADDR=addr).post("/api/auth/token/", {"username": username, "password": password},
                                         content_type="application/json")


@pytest.fixture
def throttle_redis_down(settings):
    # Django resets its cache handlers when CACHES changes (setting_changed).
    settings.CACHES = {**settings.CACHES, "throttle": {**settings.CACHES["throttle"],
                                                       "LOCATION": "redis://127.0.0.1:1/0"}}
    return settings


def test_login_fails_closed_without_redis(throttle_redis_down, user):
    response = _login(user.username, "pw-123456")
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json()["detail"].startswith("sign-in is unavailable for a moment")


def test_other_rest_throttles_fall_back_to_this_nodes_share(throttle_redis_down, user):
    throttle_redis_down.API_THROTTLE_CONVERSATIONS = "2/min"
    throttle_redis_down.API_THROTTLE_REFRESH_IP = "3/min"
    codes = [api(user).post("/api/conversations/", {}, content_type="application/json").status_code
             for _ in range(3)]
    assert codes == [201, 201, 429]
    refresh = Client(REMOTE_ADDR="198.51.100.9")
    codes = [refresh.post("/api/auth/token/refresh/", {"refresh": "x"}, content_type="application/json")
             for _ in range(4)]
    assert [r.status_code for r in codes] == [401, 401, 401, 429]
    assert int(codes[-1]["Retry-After"]) > 0


async def test_the_reaper_records_the_live_node_count_for_the_shares():
    from realtime.infra import registry
    from realtime.node.liveness import reap_dead_nodes

    for node in ("count-a", "count-b", "count-c"):
        await registry.announce(node, f"ws://{node}/ws/v1/")
    await reap_dead_nodes("count-a")
    assert ratelimit.live_nodes_estimate() == 3
    assert ratelimit.fallback_slots(20) == 7
    ratelimit.note_live_nodes(1)
