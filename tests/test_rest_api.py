"""REST endpoints: authentication, owner scoping, pagination, the reload path, health."""

import uuid

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from realtime.infra import registry
from sessions_app import services
from sessions_app.models import Conversation
from tests.conftest import access_for

pytestmark = pytest.mark.django_db


def api(user=None) -> Client:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {access_for(user)}"} if user else {}
    return Client(**headers)


def test_every_endpoint_requires_a_token(user):
    conversation = services.create_conversation(user.pk)
    for url in ["/api/conversations/", f"/api/conversations/{conversation.pk}/",
                f"/api/conversations/{conversation.pk}/messages/", f"/api/conversations/{conversation.pk}/events/",
                "/api/realtime/nodes/"]:
        assert Client().get(url).status_code == 401, url
    forged = Client(HTTP_AUTHORIZATION="Bearer not.a.token")
    assert forged.get("/api/conversations/").status_code == 401


def test_token_obtain_and_rotating_refresh(user):
    tokens = Client().post("/api/auth/token/", {"username": user.username, "password": "pw-123456"},
                           content_type="application/json").json()
    assert set(tokens) == {"access", "refresh"}
    rotated = Client().post("/api/auth/token/refresh/", {"refresh": tokens["refresh"]},
                            content_type="application/json")
    assert rotated.status_code == 200 and set(rotated.json()) == {"access", "refresh"}
    reused = Client().post("/api/auth/token/refresh/", {"refresh": tokens["refresh"]},
                           content_type="application/json")
    assert reused.status_code == 401
    wrong = Client().post("/api/auth/token/", {"username": user.username, "password": "nope"},
                          content_type="application/json")
    assert wrong.status_code == 401


def test_conversations_are_scoped_to_their_owner(user, other_user):
    mine = api(user).post("/api/conversations/", {"title": "mine"}, content_type="application/json")
    assert mine.status_code == 201 and mine.json()["title"] == "mine" and mine.json()["last_seq"] == 0
    services.create_conversation(other_user.pk, "theirs")
    listed = api(user).get("/api/conversations/").json()
    assert [c["title"] for c in listed["results"]] == ["mine"]
    theirs = Conversation.objects.get(owner=other_user)
    for suffix in ["", "messages/", "events/"]:
        assert api(user).get(f"/api/conversations/{theirs.pk}/{suffix}").status_code == 404
    assert api(user).get(f"/api/conversations/{uuid.uuid4()}/").status_code == 404


def test_messages_oldest_first_and_paginated(user):
    conversation = services.create_conversation(user.pk)
    for i in range(3):
        services.post_user_message(conversation.pk, uuid.uuid4(), f"m{i}")
    page = api(user).get(f"/api/conversations/{conversation.pk}/messages/?limit=2").json()
    assert page["count"] == 3 and [m["text"] for m in page["results"]] == ["m0", "m1"]
    assert [m["seq"] for m in page["results"]] == [1, 2]
    rest = api(user).get(page["next"]).json()
    assert [m["text"] for m in rest["results"]] == ["m2"]


def test_events_after_seq_are_the_wire_frames(user):
    conversation = services.create_conversation(user.pk)
    posted = [services.post_user_message(conversation.pk, uuid.uuid4(), f"m{i}") for i in range(3)]
    body = api(user).get(f"/api/conversations/{conversation.pk}/events/?after_seq=1").json()
    assert body["results"] == [p.events[0] for p in posted[1:]]
    assert body["results"][0]["type"] == "message.created" and body["results"][0]["seq"] == 2
    for bad in ["-1", "x", "1.5"]:
        response = api(user).get(f"/api/conversations/{conversation.pk}/events/?after_seq={bad}")
        assert response.status_code == 400, bad


@pytest.mark.django_db(transaction=True)
def test_nodes_lists_announced_nodes(user, settings):
    async_to_sync(registry.announce)("rest-node", "ws://rest.example/ws/v1/")
    nodes = api(user).get("/api/realtime/nodes/").json()["nodes"]
    assert {"node": "rest-node", "ws_url": "ws://rest.example/ws/v1/"} in nodes
    async_to_sync(registry.withdraw)("rest-node")
    nodes = api(user).get("/api/realtime/nodes/").json()["nodes"]
    assert "rest-node" not in [n["node"] for n in nodes]


def test_health_endpoints(settings):
    assert Client().get("/healthz").json() == {"status": "ok"}
    assert Client().get("/readyz").json() == {"status": "ready"}
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/readyz")
    assert response.status_code == 503 and response.json() == {"status": "unavailable", "failed": ["redis"]}
