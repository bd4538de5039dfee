"""Messages that reach a node together are stored together: `services.post_user_messages` stores
many messages in one statement on PostgreSQL, each as `post_user_message` would store it alone
(the ORM reference agrees), and a message the database refuses fails only itself. The node
sends the messages that arrive while others are being stored in one call (issue 22)."""

from __future__ import annotations

import uuid

import pytest

from sessions_app import services
from sessions_app.models import AgentRun, Conversation, Event, Message
from tests.support.gates import FirstCallGate
from tests.support.waiting import eventually
from tests.support.ws import WSClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def _facts(outcome) -> list:
    if isinstance(outcome, Exception):
        return [type(outcome).__name__]
    return [outcome.seq, outcome.duplicate, [(e["type"], e["seq"], e["message"]["text"]) for e in outcome.events]]


def _stored(cid: str) -> dict:
    return {
        "messages": list(Message.objects.filter(conversation_id=cid).order_by("seq").values_list("seq", "text")),
        "events": list(Event.objects.filter(conversation_id=cid).order_by("seq").values_list("seq", "type")),
        "runs": AgentRun.objects.filter(conversation_id=cid, status="queued").count(),
        "last_seq": Conversation.objects.get(pk=cid).last_seq,
    }


def test_each_message_is_stored_as_if_alone_in_its_conversations_order(user, sql_or_orm):
    a, b = (str(services.create_conversation(user.pk).pk) for _ in range(2))
    gone = str(services.create_conversation(user.pk).pk)
    Conversation.objects.filter(pk=gone).delete()
    earlier = uuid.uuid4()
    services.post_user_message(b, earlier, "before")
    resent = uuid.uuid4()
    batch = [("a1", a, uuid.uuid4()), ("b1", b, uuid.uuid4()), ("a2", a, resent), ("lost", gone, uuid.uuid4()),
             ("a2 again", a, resent), ("b0 again", b, earlier), ("a3", a, uuid.uuid4())]

    outcomes = services.post_user_messages([services.NewMessage(c, str(m), t) for t, c, m in batch])

    assert [_facts(o) for o in outcomes] == [
        [1, False, [("message.created", 1, "a1")]],
        [2, False, [("message.created", 2, "b1")]],
        [2, False, [("message.created", 2, "a2")]],
        ["ConversationNotFound"],
        [2, True, []],  # the same client_msg_id in the same batch: stored once
        [1, True, []],
        [3, False, [("message.created", 3, "a3")]],
    ]
    assert _stored(a) == {"messages": [(1, "a1"), (2, "a2"), (3, "a3")],
                          "events": [(1, "message.created"), (2, "message.created"), (3, "message.created")],
                          "runs": 3, "last_seq": 3}
    assert _stored(b) == {"messages": [(1, "before"), (2, "b1")],
                          "events": [(1, "message.created"), (2, "message.created")], "runs": 2, "last_seq": 2}


def test_a_message_the_database_refuses_fails_alone(user):
    cid = str(services.create_conversation(user.pk).pk)
    outcomes = services.post_user_messages([services.NewMessage(cid, str(uuid.uuid4()), "fine"),
                                            services.NewMessage(cid, str(uuid.uuid4()), "nul \x00 inside"),
                                            services.NewMessage(cid, "not-a-uuid", "bad id"),
                                            services.NewMessage(cid, str(uuid.uuid4()), "fine too")])
    assert [type(o).__name__ for o in outcomes] == ["PostedMessage", "DataError", "ValueError", "PostedMessage"]
    assert _stored(cid)["messages"] == [(1, "fine"), (2, "fine too")]


def test_any_number_of_messages_is_one_statement(user, django_assert_num_queries):
    ids = [str(services.create_conversation(user.pk).pk) for _ in range(10)]
    with django_assert_num_queries(1):
        outcomes = services.post_user_messages([services.NewMessage(c, str(uuid.uuid4()), "hi") for c in ids])
    assert [o.seq for o in outcomes] == [1] * 10
    with django_assert_num_queries(0):
        assert services.post_user_messages([]) == []


async def test_messages_arriving_while_one_is_stored_share_the_next_statement(settings, cluster, user, token,
                                                                            monkeypatch):
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 0
    node, app = cluster("node-a")
    gate = FirstCallGate(monkeypatch, services, "post_user_messages")
    clients = [WSClient(app) for _ in range(6)]
    for client in clients:
        await client.connect(token)
    first = await clients[0].message("first")
    await gate.entered()
    others = [await client.message(f"m{i}") for i, client in enumerate(clients[1:])]
    await eventually(lambda: node.posts.waiting == 5, timeout=5, what="five messages waiting for the next call")
    gate.open()
    for client, msg in zip(clients, [first, *others], strict=True):
        acks = await client.recv_until(lambda f, msg=msg: f["type"] == "message.ack" and f["client_msg_id"] == msg)
        assert acks[-1] == {"type": "message.ack", "client_msg_id": msg, "seq": 1, "duplicate": False}
    assert gate.batches[:2] == [1, 5], gate.batches
    for client in clients:
        await client.drop()
