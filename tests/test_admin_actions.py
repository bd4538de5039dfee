"""Operators' admin actions: disconnect a socket (its client resumes), cancel a run, end every
session of a user (a real revocation), approve or deny a pending approval, each
recorded like the automatic closes (row code and reason, the run's agent.failed event) and
in the admin's history."""

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.admin.models import LogEntry
from django.test import Client

from realtime.node.resync import resync_once
from sessions_app import services
from sessions_app.models import AgentRun, Approval, Connection, Event
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


# --- approvals: an operator's decision is a person's decision, `by: "admin"` ----------------


def _waiting_run(owner, text: str = "transfer 5", n: int = 5):
    """A run waiting for an approval of `demo.transfer` (as the demo agent records it): the
    message, a claim by a node that is not running, and the call recorded needing approval."""
    conversation = services.create_conversation(owner.pk)
    services.post_user_message(conversation.pk, uuid.uuid4(), text)
    claim = services.claim_next_run(conversation.pk, "node-x", 30)
    written = services.begin_call(conversation.pk, claim.run_id, claim.fencing_token, step=0, tool="demo.transfer",
                                  effect="once", arguments={"n": n}, text_offset=0, needs_approval=True)
    return conversation, claim.run_id, written


def _log(conversation_id, after: int = 0) -> list[dict]:
    return [e.as_frame() for e in Event.objects.filter(conversation_id=conversation_id, seq__gt=after)]


async def test_approve_in_the_admin_resolves_it_and_the_run_continues(cluster, admin_user, fast_agent):
    """The socket sees `approval.resolved` by `admin` at once (published), and the run, queued
    again, is claimed by the node's sweep and completes with the call made once."""
    _, app = cluster("node-1")
    token = await database_sync_to_async(access_for)(admin_user)
    client = WSClient(app)
    await client.connect(token, client_id="tab-1")
    await client.message("transfer 5")
    requested = (await client.recv_until(lambda f: f["type"] == "approval.requested"))[-1]
    call_id, run_id = requested["call_id"], requested["run_id"]

    assert await sync_to_async(_act)(admin_user, "approval", "approve_approvals", [call_id]) == 302

    frames = await client.recv_until(lambda f: f["type"] == "agent.completed")
    tools = [f for f in frames if f["type"] in ("approval.resolved", "agent.tool_call", "agent.tool_result")]
    seq = requested["seq"]
    assert tools == [
        {"type": "approval.resolved", "seq": seq + 1, "run_id": run_id, "call_id": call_id, "decision": "approved",
         "by": "admin"},
        {"type": "agent.tool_call", "seq": tools[1]["seq"], "run_id": run_id, "call_id": call_id,
         "tool": "demo.transfer", "arguments": {"n": 5}, "effect": "once"},
        {"type": "agent.tool_result", "seq": tools[2]["seq"], "run_id": run_id, "call_id": call_id, "status": "ok",
         "result": {"n": 5, "simulated": True}},
    ]
    assert frames[-1]["message"]["text"].endswith("transferred 5")

    def state():
        approval = Approval.objects.select_related("call", "run").get(call_id=call_id)
        return (approval.status, approval.decided_by, approval.decided_at is not None, approval.call.status,
                approval.call.attempts, approval.run.status)

    assert await database_sync_to_async(state)() == ("approved", "admin", True, "ok", 1, "completed")
    logged = await database_sync_to_async(
        lambda: list(LogEntry.objects.filter(object_id=call_id).values_list("change_message", flat=True)))()
    assert logged == ["approved by an operator"]
    await client.drop(1000)


async def test_deny_in_the_admin_publishes_the_decision_and_the_result_and_kicks_the_workers(
        settings, cluster, admin_user):
    """Without agents in this node: the decision and the call's `denied` result reach the socket
    live (not at the next resync), the run is queued again, and agent workers are kicked for its
    conversation."""
    from channels.layers import get_channel_layer

    from realtime.fanout.kick import RUN_KICK_GROUP, kick_message
    from realtime.fanout.publish import publish_committed

    settings.REALTIME_RESYNC_INTERVAL = 60
    _, app = cluster("node-1", run_agents=False)
    layer = get_channel_layer()
    worker = await layer.new_channel()
    await layer.group_add(RUN_KICK_GROUP, worker)
    conversation, run_id, written = await database_sync_to_async(_waiting_run)(admin_user)
    await publish_committed(written)
    call_id = written.call.call_id
    token = await database_sync_to_async(access_for)(admin_user)
    client = WSClient(app)
    ready = await client.connect(token, str(conversation.pk), 0, client_id="tab-1")
    assert [f["type"] for f in await client.recv_until(lambda f: f.get("seq") == ready["last_seq"])] == [
        "message.created", "agent.started", "approval.requested"]

    assert await sync_to_async(_act)(admin_user, "approval", "deny_approvals", [call_id]) == 302

    decided = [await client.recv(timeout=5), await client.recv(timeout=5)]
    assert decided == await database_sync_to_async(_log)(conversation.pk, ready["last_seq"])
    assert decided == [
        {"type": "approval.resolved", "seq": 4, "run_id": run_id, "call_id": call_id, "decision": "denied",
         "by": "admin"},
        {"type": "agent.tool_result", "seq": 5, "run_id": run_id, "call_id": call_id, "status": "denied",
         "error": "approval denied"},
    ]
    async with asyncio.timeout(5):
        assert await layer.receive(worker) == kick_message(str(conversation.pk))

    def state():
        approval = Approval.objects.select_related("call", "run").get(call_id=call_id)
        return (approval.status, approval.decided_by, approval.call.status, approval.call.attempts,
                approval.run.status, approval.run.node, approval.run.waiting_since)

    assert await database_sync_to_async(state)() == ("denied", "admin", "denied", 0, "queued", "", None)
    await client.drop(1000)


def test_a_decided_approval_is_left_as_it_is(admin_user):
    """The first decision wins, the operator's as a socket's: a second action (either way)
    writes nothing, and says so."""
    conversation, _, written = _waiting_run(admin_user)
    call_id = written.call.call_id
    assert _act(admin_user, "approval", "deny_approvals", [call_id]) == 302
    log = _log(conversation.pk)

    page = _admin(admin_user).post("/admin/sessions_app/approval/", {
        "action": "approve_approvals", "_selected_action": [call_id]}, follow=True)

    assert "Approvals: 1 already denied" in page.content.decode()
    assert _log(conversation.pk) == log
    approval = Approval.objects.get(call_id=call_id)
    assert (approval.status, approval.decided_by) == ("denied", "admin")
    assert list(LogEntry.objects.values_list("change_message", flat=True)) == ["denied by an operator"]


def test_an_approval_past_its_time_is_found_expired_by_the_admin(settings, admin_user):
    """Approving after `expires_at` (before any sweep expired it) finds it expired: the
    expiry is written then, by `timeout`, and the call is never made."""
    settings.REALTIME_APPROVAL_TIMEOUT = 0
    conversation, run_id, written = _waiting_run(admin_user)
    call_id = written.call.call_id

    page = _admin(admin_user).post("/admin/sessions_app/approval/", {
        "action": "approve_approvals", "_selected_action": [call_id]}, follow=True)

    assert "Approvals: 1 already expired" in page.content.decode()
    assert _log(conversation.pk, 3) == [
        {"type": "approval.resolved", "seq": 4, "run_id": run_id, "call_id": call_id, "decision": "expired",
         "by": "timeout"},
        {"type": "agent.tool_result", "seq": 5, "run_id": run_id, "call_id": call_id, "status": "denied",
         "error": "approval expired"},
    ]
    assert not LogEntry.objects.exists()
    assert AgentRun.objects.get(pk=run_id).status == AgentRun.Status.QUEUED


def test_cancel_of_a_waiting_run_in_the_admin_denies_its_approval_by_admin(admin_user):
    conversation, run_id, written = _waiting_run(admin_user)
    call_id = written.call.call_id

    assert _act(admin_user, "agentrun", "cancel_runs", [run_id]) == 302

    assert _log(conversation.pk, 3) == [
        {"type": "approval.resolved", "seq": 4, "run_id": run_id, "call_id": call_id, "decision": "denied",
         "by": "admin"},
        {"type": "agent.tool_result", "seq": 5, "run_id": run_id, "call_id": call_id, "status": "denied",
         "error": "run cancelled"},
        {"type": "agent.failed", "seq": 6, "run_id": run_id, "error": "cancelled", "cancelled": True},
    ]
    approval = Approval.objects.select_related("run").get(call_id=call_id)
    assert (approval.status, approval.decided_by, approval.run.status) == ("denied", "admin", "cancelled")


def test_approval_actions_need_the_change_permission(django_user_model, admin_user):
    _, _, written = _waiting_run(admin_user)
    page = _admin(admin_user).get("/admin/sessions_app/approval/").content
    assert b"approve_approvals" in page and b"deny_approvals" in page
    staff = django_user_model.objects.create_user("approval-viewer", password="pw-123456", is_staff=True)
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(Permission.objects.get(codename="view_approval"))
    client = Client()
    client.force_login(staff)
    page = client.get("/admin/sessions_app/approval/")
    assert page.status_code == 200 and b"approve_approvals" not in page.content
    client.post("/admin/sessions_app/approval/", {"action": "approve_approvals",
                                                  "_selected_action": [written.call.call_id]})
    assert Approval.objects.get(call_id=written.call.call_id).status == "pending"
