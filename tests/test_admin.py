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


def test_log_rows_cannot_be_deleted(admin_client_with_data):
    """A deleted event is a hole resuming clients cannot get past (issue 9, item 4); a deleted
    message or run breaks "one message, one run". Neither the delete page nor the bulk action."""
    client, _, _ = admin_client_with_data
    for model in (Event, Message, AgentRun):
        name, pk = model._meta.model_name, model.objects.first().pk
        assert client.get(f"/admin/sessions_app/{name}/{pk}/delete/").status_code == 403, name
        assert client.post(f"/admin/sessions_app/{name}/{pk}/delete/", {"post": "yes"}).status_code == 403, name
        client.post(f"/admin/sessions_app/{name}/", {"action": "delete_selected", "_selected_action": [pk],
                                                     "post": "yes"})
        assert model.objects.filter(pk=pk).exists(), name
        changelist = client.get(f"/admin/sessions_app/{name}/").content.decode()
        assert 'value="delete_selected"' not in changelist, name


def test_only_closed_connection_rows_can_be_deleted(admin_client_with_data):
    client, _, _ = admin_client_with_data
    row = Connection.objects.get()
    url = f"/admin/sessions_app/connection/{row.pk}/delete/"
    assert client.post(url, {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"}
    assert client.post("/admin/sessions_app/connection/", bulk).status_code == 403
    assert Connection.objects.filter(pk=row.pk).exists()
    services.close_connection(row.pk, 1000, "client_close", 0)
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not Connection.objects.filter(pk=row.pk).exists()


def test_a_whole_conversation_can_still_be_deleted_with_its_log(admin_client_with_data):
    """Deleting the conversation removes its whole log at once: no hole, so the cascade over
    the read-only rows is allowed."""
    client, conversation, _ = admin_client_with_data
    response = client.post(f"/admin/sessions_app/conversation/{conversation.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Conversation.objects.exists() and not Event.objects.exists() and not Connection.objects.exists()


def test_connection_list_summarises_close_codes_open_nodes_and_refusals(admin_user):
    conversation = services.create_conversation(admin_user.pk, "ops")
    opened = [
        services.open_session(user_id=admin_user.pk, conversation_id=str(conversation.pk), client_id=f"c{i}",
                              channel_name=f"specific.x!{i}", node=node)
        for i, node in enumerate(["node-a", "node-a", "node-b", "node-b", "node-b"])
    ]
    services.close_connection(opened[0].connection_id, 4408, "heartbeat_timeout", 0)
    services.close_connection(opened[2].connection_id, 4408, "heartbeat_timeout", 0)
    services.close_connection(opened[3].connection_id, 4409, "replaced", 0)
    services.record_auth_refresh(opened[4].connection_id, refused="refresh token refused: blacklisted")
    client = Client()
    client.force_login(admin_user)
    html = client.get("/admin/sessions_app/connection/").content.decode()
    assert '<tr class="open-node"><td>node-a</td><td>1</td></tr>' in html
    assert '<tr class="open-node"><td>node-b</td><td>1</td></tr>' in html
    assert '<tr class="close-code"><td>4408</td><td>heartbeat_timeout</td><td>2</td></tr>' in html
    assert '<tr class="close-code"><td>4409</td><td>replaced</td><td>1</td></tr>' in html
    refused = client.get("/admin/sessions_app/connection/?refusals=yes").content.decode()
    assert "1 connection" in refused or "c4" in refused
    assert Connection.objects.get(pk=opened[4].connection_id).last_auth_refusal.startswith("refresh token refused")


def test_editing_a_conversation_does_not_write_back_its_log_counters(admin_client_with_data, monkeypatch):
    """An append commits between the admin reading the conversation and saving the title
    change: the save must not put last_seq back (the next append would reuse a seq)."""
    from sessions_app.admin import ConversationAdmin

    client, conversation, _ = admin_client_with_data
    read = ConversationAdmin.get_object

    def read_then_append(self, request, object_id, from_field=None):
        obj = read(self, request, object_id, from_field)
        if request.method == "POST":
            services.append_event(conversation.pk, "note", {})
        return obj

    monkeypatch.setattr(ConversationAdmin, "get_object", read_then_append)
    form = {"title": "renamed", "agent_memory": "{}"}
    for prefix in ("messages", "runs"):
        form.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    response = client.post(f"/admin/sessions_app/conversation/{conversation.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    conversation.refresh_from_db()
    assert conversation.title == "renamed"
    assert conversation.last_seq == Event.objects.filter(conversation=conversation).count() == 2
    assert services.append_event(conversation.pk, "note", {}).seq == 3
