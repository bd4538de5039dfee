"""Acks that reach a node together are stored together: `services.record_acks` stores many
sockets' acks in one statement batch, each as `record_ack` would store it alone (the ORM
reference agrees), and the node sends the acks that come while others are being stored in one
call (issue 22: a socket's first ack is stored at once, so 500 streams that started together
stored theirs in 500 database calls at the same moment, and the node's loop stalled)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sessions_app import services
from sessions_app.models import Connection
from sessions_app.services import connections
from tests.support.gates import FirstCallGate
from tests.support.waiting import eventually
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


def _socket_row(user, events: int) -> Connection:
    conversation = services.create_conversation(user.pk)
    for i in range(events):
        services.append_event(conversation.pk, "note", {"i": i})
    return Connection.objects.create(user=user, conversation=conversation, client_id=str(uuid.uuid4()),
                                     channel_name=f"ws.{uuid.uuid4().hex[:8]}", node="node-1")


@pytest.fixture(params=["sql", "orm"])
def implementation(request, monkeypatch):
    """The batch's statements, or the ORM reference for each ack (Django's SQLite expressions
    cannot run on PostgreSQL, so the vendor is not switched as `sql_or_orm` does)."""
    if request.param == "orm":
        monkeypatch.setattr(connections, "record_acks_sql", lambda acks: [
            connections.record_ack_orm(a.connection_id, a.conversation_id, a.seq) for a in acks])
    return request.param


def test_each_ack_of_a_batch_is_stored_as_if_alone(user, implementation):
    ahead, behind, beyond = (_socket_row(user, 5) for _ in range(3))
    services.record_ack(behind.pk, behind.conversation_id, 4)
    acks = [services.AckWrite(str(ahead.pk), str(ahead.conversation_id), 3),
            services.AckWrite(str(behind.pk), str(behind.conversation_id), 2),  # late: ignored
            services.AckWrite(str(beyond.pk), str(beyond.conversation_id), 99),  # capped at the log's end
            services.AckWrite(str(uuid.uuid4()), str(ahead.conversation_id), 1)]  # no such row: nothing

    assert services.record_acks(acks) == [None, None, None, None]

    stored = {row.pk: row for row in Connection.objects.all()}
    assert [stored[r.pk].acked_seq for r in (ahead, behind, beyond)] == [3, 4, 5]
    assert all(stored[r.pk].last_seen_at > r.last_seen_at for r in (ahead, behind, beyond))
    assert Connection.objects.count() == 3


@pytest.mark.postgres
def test_any_number_of_acks_is_one_statement_batch(user, django_assert_num_queries):
    rows = [_socket_row(user, 2) for _ in range(8)]
    with django_assert_num_queries(1):
        services.record_acks([services.AckWrite(str(r.pk), str(r.conversation_id), 2) for r in rows])
    assert sorted(Connection.objects.values_list("acked_seq", flat=True)) == [2] * 8


@pytest.mark.postgres
async def test_acks_arriving_while_one_is_stored_share_the_next_call(cluster, token, monkeypatch):
    node, app = cluster("node-a")
    gate = FirstCallGate(monkeypatch, services, "record_acks")
    clients = [WSClient(app) for _ in range(6)]
    for client in clients:
        await client.connect(token)
        msg = await client.message("hi")
        await client.recv_until(lambda f, msg=msg: f["type"] == "message.ack" and f["client_msg_id"] == msg)
    # A socket's first ack is stored at once: the first is held in its call, the five others wait.
    await clients[0].send({"type": "ack", "seq": 1})
    await gate.entered()
    for client in clients[1:]:
        await client.send({"type": "ack", "seq": 1})
    await eventually(lambda: node.acks.waiting == 5, timeout=5, what="five acks waiting for the next call")
    gate.open()

    async def all_stored():
        acked = await asyncio.to_thread(
            lambda: sorted(Connection.objects.filter(closed_at=None).values_list("acked_seq", flat=True)))
        return acked == [1] * 6

    await eventually(all_stored, timeout=5, what="every ack stored")
    assert gate.batches == [1, 5], gate.batches
    for client in clients:
        await client.drop()
