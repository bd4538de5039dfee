"""The operators' admin renders every page with data present; invariant-bearing rows are read-only."""

import uuid

import pytest
from django.test import Client

from sessions_app import services
from sessions_app.models import AgentRun, Connection, Conversation, Event, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_with_data(admin_user):
    conversation = services.create_conversation(admin_user.pk, "ops")
    posted = services.post_user_message(conversation.pk, uuid.uuid4(), "hello")
    services.open_session(user_id=admin_user.pk, conversation_id=str(conversation.pk), client_id="c1",
                          channel_name="specific.x!y", node="node-1")
    client = Client()
    client.force_login(admin_user)
    return client, conversation, posted


def test_every_admin_page_renders(admin_client_with_data):
    client, conversation, posted = admin_client_with_data
    objects = {
        Conversation: conversation.pk, Message: Message.objects.first().pk, Event: Event.objects.first().pk,
        AgentRun: AgentRun.objects.first().pk, Connection: Connection.objects.first().pk,
    }
    for model, pk in objects.items():
        name = model._meta.model_name
        assert client.get(f"/admin/sessions_app/{name}/").status_code == 200, name
        assert client.get(f"/admin/sessions_app/{name}/{pk}/change/").status_code == 200, name
    assert client.get("/admin/sessions_app/connection/?state=open&close_code__isnull=True").status_code == 200


def test_log_rows_cannot_be_added_or_edited(admin_client_with_data):
    client, _, _ = admin_client_with_data
    for name in ["event", "agentrun", "connection", "message"]:
        assert client.get(f"/admin/sessions_app/{name}/add/").status_code == 403, name
    event = Event.objects.first()
    response = client.post(f"/admin/sessions_app/event/{event.pk}/change/", {"seq": 99})
    assert response.status_code == 403
    assert Event.objects.get(pk=event.pk).seq == 1
