"""The operators' admin renders every page with data present; invariant-bearing rows are read-only."""

import uuid

import pytest
from django.test import Client

from sessions_app import services
from sessions_app.models import AgentRun, Approval, Connection, Conversation, DemoEffect, Event, Message, ToolCall

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


@pytest.mark.django_db(transaction=True)
def test_a_running_runs_page_shows_the_text_it_has_committed_so_far(admin_client_with_data):
    client, conversation, posted = admin_client_with_data
    claim = services.claim_next_run(conversation.pk, "node-1", lease_seconds=30)
    for piece in ("so ", "far"):
        services.append_run_deltas([services.DeltaWrite(claim.conversation_id, claim.run_id, claim.fencing_token,
                                                        piece)], 30)
    page = client.get(f"/admin/sessions_app/agentrun/{claim.run_id}/change/").content.decode()
    assert "<label>Text committed so far:</label>" in page and '<div class="readonly">so far</div>' in page


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


# --- what agents do: tool calls, approvals, the demo's effects ---------------------------


def _approval_waiting(owner, n: int) -> str:
    """A run of its own conversation waiting for the approval of `demo.transfer n`; its call id."""
    conversation = services.create_conversation(owner.pk)
    services.post_user_message(conversation.pk, uuid.uuid4(), f"transfer {n}")
    claim = services.claim_next_run(conversation.pk, "node-x", 30)
    return services.begin_call(conversation.pk, claim.run_id, claim.fencing_token, step=0, tool="demo.transfer",
                               effect="once", arguments={"n": n}, text_offset=0, needs_approval=True).call.call_id


@pytest.fixture
def journal(admin_user, settings):
    """Two finished calls of one run (an `idempotent` ok, a `local` one with its demo effect), and
    three approvals: two pending, the earlier of which expires first, then one denied (the newest)."""
    conversation = services.create_conversation(admin_user.pk, "tools")
    services.post_user_message(conversation.pk, uuid.uuid4(), "effect 2")
    claim = services.claim_next_run(conversation.pk, "node-x", 30)
    args = (conversation.pk, claim.run_id, claim.fencing_token)
    remote = services.begin_call(*args, step=0, tool="demo.effect", effect="idempotent", arguments={"n": 1},
                                 text_offset=0)
    services.finish_call(*args, remote.call.call_id, "ok", result={"n": 1})
    local = services.run_local_call(*args, step=1, tool="demo.effect", arguments={"n": 2}, text_offset=0,
                                    fn=lambda ctx, n: services.record_demo_effect(ctx.conversation_id, ctx.run_id,
                                                                                  ctx.call_id, n) or {"n": n},
                                    timeout_seconds=5)
    settings.REALTIME_APPROVAL_TIMEOUT = 60
    sooner = _approval_waiting(admin_user, 3)
    settings.REALTIME_APPROVAL_TIMEOUT = 600
    later = _approval_waiting(admin_user, 2)
    decided = _approval_waiting(admin_user, 1)
    services.resolve_approval(Approval.objects.get(call_id=decided).conversation_id, decided, "deny", "tab-1")
    client = Client()
    client.force_login(admin_user)
    return client, {"run": claim.run_id, "remote": remote.call.call_id, "local": local.call.call_id,
                    "decided": decided, "later": later, "sooner": sooner}


def _listed(html: str, ids) -> list[str]:
    """The ids among `ids` in the order the change list shows them."""
    found = [(html.find(f"{i}/change/"), i) for i in ids]
    return [i for at, i in sorted(found) if at >= 0]


def test_tool_call_pages_filter_by_status_tool_and_effect_and_search_by_call_or_run(journal):
    client, ids = journal
    calls = (ids["remote"], ids["local"], ids["decided"], ids["later"], ids["sooner"])
    base = "/admin/sessions_app/toolcall/"
    assert set(_listed(client.get(base).content.decode(), calls)) == set(calls)
    for query, expected in [
        ("status__exact=ok", {ids["remote"], ids["local"]}),
        ("status__exact=intent", {ids["later"], ids["sooner"]}),
        ("status__exact=denied", {ids["decided"]}),
        ("effect__exact=local", {ids["local"]}),
        ("tool=demo.transfer", {ids["decided"], ids["later"], ids["sooner"]}),
        ("tool=demo.effect&effect__exact=idempotent", {ids["remote"]}),
        (f"q={ids['local']}", {ids["local"]}),
        (f"q={ids['run']}", {ids["remote"], ids["local"]}),
    ]:
        page = client.get(f"{base}?{query}")
        assert page.status_code == 200, query
        assert set(_listed(page.content.decode(), calls)) == expected, query
    detail = client.get(f"{base}{ids['remote']}/change/").content.decode()
    assert ids["remote"] in detail and "Idempotency-Key" in detail


def test_approvals_are_listed_pending_first_soonest_to_expire_first(journal):
    client, ids = journal
    approvals = (ids["decided"], ids["later"], ids["sooner"])
    base = "/admin/sessions_app/approval/"
    # The model's own order (newest first) would be decided, later, sooner.
    assert _listed(client.get(base).content.decode(), approvals) == [ids["sooner"], ids["later"], ids["decided"]]
    for query, expected in [
        ("status__exact=pending", [ids["sooner"], ids["later"]]),
        ("status__exact=denied", [ids["decided"]]),
        ("reason__exact=policy", [ids["sooner"], ids["later"], ids["decided"]]),
        ("o=-6", [ids["decided"], ids["later"], ids["sooner"]]),  # expires_at (6: after the checkbox), latest first
        ("reason__exact=outcome_unknown", []),
        (f"q={ids['later']}", [ids["later"]]),
    ]:
        page = client.get(f"{base}?{query}")
        assert page.status_code == 200, query
        assert _listed(page.content.decode(), approvals) == expected, query
    assert client.get(f"{base}{ids['decided']}/change/").status_code == 200


def test_demo_effects_are_listed(journal):
    client, ids = journal
    effect = DemoEffect.objects.get()
    assert (str(effect.call_id), effect.n) == (ids["local"], 2)
    page = client.get(f"/admin/sessions_app/demoeffect/?q={ids['local']}").content.decode()
    assert f"{effect.pk}/change/" in page
    assert client.get(f"/admin/sessions_app/demoeffect/{effect.pk}/change/").status_code == 200


def test_journal_rows_cannot_be_added_edited_or_deleted(journal):
    """A journal row changed by hand would make a continued run call a tool again or skip one;
    approvals are decided only through the actions (services.resolve_approval)."""
    client, ids = journal
    rows = {"toolcall": ids["remote"], "approval": ids["later"], "demoeffect": DemoEffect.objects.get().pk}
    for name, pk in rows.items():
        assert client.get(f"/admin/sessions_app/{name}/add/").status_code == 403, name
        assert client.post(f"/admin/sessions_app/{name}/{pk}/change/", {"status": "ok"}).status_code == 403, name
        assert client.post(f"/admin/sessions_app/{name}/{pk}/delete/", {"post": "yes"}).status_code == 403, name
        client.post(f"/admin/sessions_app/{name}/", {"action": "delete_selected", "_selected_action": [pk],
                                                     "post": "yes"})
    assert ToolCall.objects.get(pk=ids["remote"]).status == "ok"
    assert Approval.objects.get(call_id=ids["later"]).status == "pending"
    assert DemoEffect.objects.count() == 1
