"""`open_session` in one round trip (the PostgreSQL function `tether_open_session`) does what the
ORM reference implementation does: same refusals, same rows, same replacement, same log extent,
same first replay batch, scenario by scenario."""

from __future__ import annotations

import uuid

import pytest

from sessions_app import services, tokens
from sessions_app.models import Connection, Conversation, Event
from sessions_app.services.connections import open_session_in_one_trip, open_session_orm

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

IMPLEMENTATIONS = {"orm": open_session_orm, "one_trip": open_session_in_one_trip}


def call(implementation, user, conversation_id, client_id="tab-1", resumed_from=None, sid=None, generation=0,
         replay_limit=2):
    return IMPLEMENTATIONS[implementation](
        user.pk, conversation_id, client_id, f"chan-{uuid.uuid4().hex[:6]}", "node-1", "10.0.0.1", resumed_from,
        sid, generation, replay_limit,
    )


def comparable(opened) -> dict:
    found = vars(opened).copy()
    for key in ("connection_id", "conversation_id", "replaced_channels"):
        found.pop(key)
    return found


@pytest.fixture
def conversation(user):
    conversation = services.create_conversation(user.pk)
    for i in range(4):
        services.append_event(conversation.pk, "note", {"i": i})
    return conversation


@pytest.mark.parametrize("resumed_from", [None, 0, 1, 3, 4, 9])
def test_same_session_and_first_batch(user, conversation, resumed_from):
    results = {}
    for implementation in IMPLEMENTATIONS:
        opened = call(implementation, user, str(conversation.pk), client_id=implementation, resumed_from=resumed_from)
        row = Connection.objects.get(pk=opened.connection_id)
        assert (row.user_id, row.conversation_id, row.client_id, row.node, row.remote_addr, row.resumed_from_seq,
                row.closed_at, row.delivered_seq) == (user.pk, conversation.pk, implementation, "node-1", "10.0.0.1",
                                                      resumed_from, None, 0)
        assert opened.conversation_id == str(conversation.pk)
        results[implementation] = comparable(opened)
    assert results["orm"] == results["one_trip"]


def test_a_hole_and_a_pruned_prefix_read_the_same(user, conversation):
    Event.objects.filter(conversation=conversation, seq__in=[1, 3]).delete()
    for resumed_from in (0, 1, 2):
        orm = comparable(call("orm", user, str(conversation.pk), client_id="a", resumed_from=resumed_from))
        one = comparable(call("one_trip", user, str(conversation.pk), client_id="b", resumed_from=resumed_from))
        assert orm == one, resumed_from


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_replacement_closes_the_older_row_and_names_its_channel(user, conversation, implementation):
    first = call(implementation, user, str(conversation.pk))
    second = call(implementation, user, str(conversation.pk))
    old = Connection.objects.get(pk=first.connection_id)
    assert (old.close_code, old.close_reason) == (4409, "replaced")
    assert second.replaced_channels == [old.channel_name]
    assert Connection.objects.filter(conversation=conversation, closed_at__isnull=True).count() == 1


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_new_conversation(user, implementation):
    opened = call(implementation, user, None, resumed_from=None)
    conversation = Conversation.objects.get(pk=opened.conversation_id)
    assert (conversation.owner_id, conversation.title, conversation.last_seq, conversation.agent_memory) == (
        user.pk, "", 0, {})
    assert (opened.created, opened.last_seq, opened.frames, opened.replaced_channels) == (True, 0, [], [])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_refusals(user, other_user, conversation, implementation):
    cases = [
        (lambda: call(implementation, other_user, str(conversation.pk)), services.ConversationForbidden,
         "not your conversation"),
        (lambda: call(implementation, user, str(uuid.uuid4())), services.ConversationNotFound, "no such conversation"),
    ]
    for make, error, detail in cases:
        with pytest.raises(error) as raised:
            make()
        assert str(raised.value) == detail
    sid = str(uuid.uuid4())
    tokens.revoke_sign_in(user.pk, sid)
    with pytest.raises(services.Unauthenticated, match=r"^token was revoked \(signed out\)$"):
        call(implementation, user, str(conversation.pk), sid=sid)
    tokens.revoke_user_sessions(user.pk)
    with pytest.raises(services.Unauthenticated, match=r"every session of this user was ended"):
        call(implementation, user, str(conversation.pk), generation=0)
    user.is_active = False
    user.save()
    with pytest.raises(services.Unauthenticated, match="^user is deactivated$"):
        call(implementation, user, str(conversation.pk), generation=1)
