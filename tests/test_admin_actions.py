"""Operators' admin actions: disconnect a socket (its client resumes), cancel a run, end every
session of a user (a real revocation), each
recorded like the automatic closes (row code and reason, the run's agent.failed event) and
in the admin's history."""

import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.admin.models import LogEntry
from django.test import Client

from realtime.node.resync import resync_once
from sessions_app import services
from sessions_app.models import AgentRun, Connection, Event
from tests.conftest import access_for, refresh_for
from tests.support.metrics import scrape_app
from tests.support.waiting import eventually
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


def _admin(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def _act(admin_user, model: str, action: str, pks: list, app: str = "sessions_app/") -> int:
    response = _admin(admin_user).post(
        f"/admin/{app}{model}/", {"action": action, "_selected_action": [str(pk) for pk in pks]}
    )
    return response.status_code


async def test_disconnect_tells_the_client_to_resume_and_records_the_close(cluster, admin_user):
    """The client resumes as after a drain (4012), but the frame, the row and the metrics say
    an operator ended it (issue 23, item 7: it looked like a deploy)."""
    _, app = cluster("node-1")
    token = await database_sync_to_async(access_for)(admin_user)
    target, bystander = WSClient(app), WSClient(app)
    ready = await target.connect(token, client_id="tab-target")
    # In the same conversation: the message that ends the target reaches both, addressed to one.
    await bystander.connect(token, ready["conversation_id"], ready["last_seq"], client_id="tab-bystander")
    row = await database_sync_to_async(Connection.objects.get)(client_id="tab-target")

    before = await scrape_app()
    assert await sync_to_async(_act)(admin_user, "connection", "disconnect_connections", [row.pk]) == 302

    frames, code = await target.expect_close()
    assert frames[-1] == {"type": "error", "code": "operator_disconnect",
                          "detail": "disconnected by an operator; resume"}, frames
    assert code == 4012
    closes = "tether_connection_closes_total"
    after = await scrape_app()
    for reason, more in (("operator_disconnect", 1), ("going_away", 0)):
        counted = [s.value(closes, code="4012", reason=reason) for s in (before, after)]
        assert counted[1] == counted[0] + more, reason
    row = await database_sync_to_async(Connection.objects.get)(pk=row.pk)
    assert (row.close_code, row.close_reason) == (4012, "operator_disconnect")
    logged = await database_sync_to_async(
        lambda: list(LogEntry.objects.filter(object_id=str(row.pk)).values_list("change_message", flat=True))
    )()
    assert logged == ["disconnected by an operator (4012, client resumes)"]
    # The client resumes where it was; the other socket never noticed.
    await target.drop(4012)
    again = WSClient(app)
    resumed = await again.connect(token, ready["conversation_id"], ready["last_seq"], client_id="tab-target")
    assert resumed["resumed"] is True
    await bystander.send({"type": "ping", "id": 1})
    assert (await bystander.recv())["type"] == "pong"
    await again.drop(1000)
    await bystander.drop(1000)


async def test_disconnect_without_the_layer_message_ends_the_socket_at_the_resync(cluster, token):
    """The action closes the row first: a lost fan-out message only delays the end."""
    node, app = cluster("node-1")
    client = WSClient(app)
    await client.connect(token, client_id="tab-1")
    row = await database_sync_to_async(Connection.objects.get)(client_id="tab-1")
    closed = await database_sync_to_async(services.disconnect_connections)([row.pk])
    assert closed == {str(row.conversation_id): [row.channel_name]}
    await client.assert_silent()

    await resync_once(node)

    frames, code = await client.expect_close()
    assert (frames[-1]["code"], code) == ("going_away", 4012), frames
    row = await database_sync_to_async(Connection.objects.get)(pk=row.pk)
    assert (row.close_code, row.close_reason) == (4012, "operator_disconnect")
    await client.drop(4012)


def test_cancel_queued_and_running_runs(admin_user):
    queued_conv = services.create_conversation(admin_user.pk)
    services.post_user_message(queued_conv.pk, uuid.uuid4(), "hello")
    running_conv = services.create_conversation(admin_user.pk)
    services.post_user_message(running_conv.pk, uuid.uuid4(), "hello")
    claim = services.claim_next_run(running_conv.pk, "node-x", 30)
    queued = AgentRun.objects.get(conversation=queued_conv)

    assert _act(admin_user, "agentrun", "cancel_runs", [queued.pk, claim.run_id]) == 302

    queued.refresh_from_db()
    assert queued.status == AgentRun.Status.CANCELLED
    failed = Event.objects.get(conversation=queued_conv, type="agent.failed")
    assert failed.payload == {"run_id": str(queued.pk), "error": "cancelled", "cancelled": True}
    running = AgentRun.objects.get(pk=claim.run_id)
    # The owner stops it at its next append or lease renewal, and writes agent.failed itself.
    assert (running.status, running.cancel_requested) == (AgentRun.Status.RUNNING, True)
    assert set(LogEntry.objects.values_list("object_id", flat=True)) == {str(queued.pk), claim.run_id}


def test_actions_need_the_change_permission(django_user_model, admin_user):
    conversation = services.create_conversation(admin_user.pk)
    services.post_user_message(conversation.pk, uuid.uuid4(), "hello")  # a run
    services.open_session(user_id=admin_user.pk, conversation_id=str(conversation.pk), client_id="c1",
                          channel_name="specific.x!y", node="node-1")
    assert b"disconnect_connections" in _admin(admin_user).get("/admin/sessions_app/connection/").content
    assert b"cancel_runs" in _admin(admin_user).get("/admin/sessions_app/agentrun/").content
    staff = django_user_model.objects.create_user("viewer", password="pw-123456", is_staff=True)
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_connection", "view_agentrun"]))
    client = Client()
    client.force_login(staff)
    page = client.get("/admin/sessions_app/connection/")
    assert page.status_code == 200 and b"disconnect_connections" not in page.content
    assert b"cancel_runs" not in client.get("/admin/sessions_app/agentrun/").content


async def test_end_every_session_of_a_user_revokes_tokens_and_closes_sockets(cluster, admin_user, user):
    node, app = cluster("node-1")
    token = await database_sync_to_async(access_for)(user)
    refresh = await database_sync_to_async(refresh_for)(user)
    client = WSClient(app)
    await client.connect(token, client_id="tab-1")

    assert await sync_to_async(_act)(admin_user, "auth/user", "end_user_sessions", [user.pk], app="") == 302
    await resync_once(node)

    frames, code = await client.expect_close()
    assert (frames[-1]["code"], code) == ("unauthenticated", 4401), frames

    def closed_row():
        return Connection.objects.filter(client_id="tab-1").values_list("close_code", "close_reason").first()

    closed = await eventually(database_sync_to_async(lambda: closed_row()[0] and closed_row()), what="row closed")
    assert closed == (4401, "unauthenticated")
    # The refresh token is dead too, and so is the access token on REST.
    refused = await sync_to_async(Client().post)("/api/auth/token/refresh/", {"refresh": refresh},
                                                 content_type="application/json")
    assert refused.status_code == 401
    rest = await sync_to_async(Client(HTTP_AUTHORIZATION=f"Bearer {token}").get)("/api/conversations/")
    assert rest.status_code == 401
    logged = await database_sync_to_async(
        lambda: list(LogEntry.objects.filter(object_id=str(user.pk)).values_list("change_message", flat=True))
    )()
    assert len(logged) == 1 and logged[0].startswith("all sessions ended by an operator (1 refresh tokens")
    await client.drop(4401)
