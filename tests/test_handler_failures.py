"""A failing service call never ends a socket with 1011 (issue 9, item 5).

A database blip (OperationalError) injected into each frame handler becomes a documented error
frame (`unavailable`, with `ref` and `retry_after_ms`); a bug (any other exception) becomes
`server_error`. The socket stays open and the same frame succeeds once the database is back. A
failing connect closes with `going_away` + 4012 and `retry_after_ms` (resume shortly), a failing
log read ends the socket the same way, and a message to a conversation deleted meanwhile gets
`not_found` + 4404. An ack that cannot be stored is kept and stored later."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError

from sessions_app import services, tokens
from sessions_app.models import AgentRun, Connection, Conversation, Message
from tests.conftest import refresh_for
from tests.support.waiting import eventually
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


class Blip:
    """Makes a service function fail `times` times, then behave."""

    def __init__(self, monkeypatch, module, name: str, error: Exception, times: int = 1):
        self.original = getattr(module, name)
        self.left = times
        self.error = error

        def failing(*args, **kwargs):
            if self.left > 0:
                self.left -= 1
                raise self.error
            return self.original(*args, **kwargs)

        monkeypatch.setattr(module, name, failing)


async def still_open(client: WSClient) -> None:
    await client.send({"type": "ping", "id": "alive"})
    assert (await client.recv_until(lambda f: f["type"] == "pong"))[-1] == {"type": "pong", "id": "alive"}


@pytest.mark.parametrize("error, code", [(OperationalError("the database is restarting"), "unavailable"),
                                         (RuntimeError("a bug"), "server_error")])
async def test_message_failure_is_an_error_frame_and_the_resend_works(settings, node_app, token, monkeypatch,
                                                                      error, code):
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 0
    client = WSClient(node_app)
    ready = await client.connect(token)
    Blip(monkeypatch, services, "post_user_messages", error)
    msg = await client.message("hello")
    failed = (await client.recv_until(lambda f: f["type"] == "error"))[-1]
    assert failed == {"type": "error", "code": code, "detail": failed["detail"], "ref": msg, "retry_after_ms": 1000}
    await still_open(client)
    assert await database_sync_to_async(Message.objects.filter(client_msg_id=msg).count)() == 0
    # The client resends the same message: stored once, answered once.
    await client.message("hello", client_msg_id=msg)
    frames = await client.recv_until(lambda f: f["type"] == "agent.completed")
    assert [f for f in frames if f["type"] == "message.ack"] == [
        {"type": "message.ack", "client_msg_id": msg, "seq": 1, "duplicate": False}]
    assert await database_sync_to_async(AgentRun.objects.filter(conversation_id=ready["conversation_id"]).count)() == 1
    await client.drop()


async def test_cancel_failure_is_an_error_frame(node_app, token, monkeypatch):
    client = WSClient(node_app)
    await client.connect(token)
    Blip(monkeypatch, services, "request_cancel", OperationalError("connection lost"))
    run_id = str(uuid.uuid4())
    await client.send({"type": "cancel", "run_id": run_id})
    failed = await client.recv()
    assert failed == {"type": "error", "code": "unavailable", "detail": "temporarily unavailable; retry",
                      "ref": run_id, "retry_after_ms": 1000}
    await still_open(client)
    # Once the database is back the same frame is answered as usual.
    await client.send({"type": "cancel", "run_id": run_id})
    assert (await client.recv())["code"] == "not_found"
    await client.drop()


async def test_refresh_failure_is_an_error_frame(node_app, user, token, monkeypatch):
    client = WSClient(node_app)
    await client.connect(token)
    Blip(monkeypatch, tokens, "rotate_refresh_token", OperationalError("connection lost"))
    refresh = await database_sync_to_async(refresh_for)(user)
    await client.send({"type": "auth.refresh", "refresh": refresh})
    failed = await client.recv()
    assert (failed["code"], failed["retry_after_ms"]) == ("unavailable", 1000)
    await still_open(client)
    await client.send({"type": "auth.refresh", "refresh": refresh})
    assert (await client.recv())["type"] == "auth.refreshed"
    await client.drop()


async def test_ack_failure_is_kept_and_stored_later(settings, node_app, token, monkeypatch):
    settings.REALTIME_ACK_FLUSH_INTERVAL = 0
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 0
    client = WSClient(node_app)
    ready = await client.connect(token)
    done = await client.converse("hi")
    Blip(monkeypatch, services, "record_ack", OperationalError("connection lost"))
    await client.send({"type": "ack", "seq": done[-1]["seq"]})
    await still_open(client)
    await client.drop()

    async def stored():
        row = await database_sync_to_async(Connection.objects.get)(conversation_id=ready["conversation_id"])
        return row.closed_at is not None and row.acked_seq == done[-1]["seq"]

    await eventually(stored, timeout=5, what="the ack stored at close")


async def test_connect_failure_tells_the_client_to_resume_shortly(node_app, token, monkeypatch):
    Blip(monkeypatch, services, "open_session", OperationalError("the database is restarting"))
    client = WSClient(node_app)
    await client.open()
    await client.send({"type": "connect", "token": token, "conversation_id": None, "last_seq": None,
                       "client_id": "c"})
    frames, code = await client.expect_close()
    assert code == 4012
    assert frames[-1] == {"type": "error", "code": "going_away", "detail": "service unavailable; resume shortly",
                          "retry_after_ms": 1000}
    again = WSClient(node_app)
    assert (await again.connect(token))["type"] == "ready"
    await again.drop()


async def test_a_failing_log_read_ends_the_socket_with_going_away(settings, node_app, user, token, monkeypatch):
    settings.REALTIME_REPLAY_BATCH = 1  # the first event comes with the session, the second is read
    conversation = await database_sync_to_async(services.create_conversation)(user.pk)
    for _ in range(2):
        await database_sync_to_async(services.append_event)(conversation.pk, "note", {})
    Blip(monkeypatch, services, "frames_after", OperationalError("connection lost"))
    client = WSClient(node_app)
    await client.connect(token, conversation_id=str(conversation.pk), last_seq=0)
    frames, code = await client.expect_close()
    assert code == 4012
    assert [f.get("seq") for f in frames] == [1, None]
    assert frames[-1] == {"type": "error", "code": "going_away",
                          "detail": "the server could not read the event log; resume", "retry_after_ms": 1000}
    back = WSClient(node_app)
    await back.connect(token, conversation_id=str(conversation.pk), last_seq=1)
    assert (await back.recv())["seq"] == 2
    await back.drop()


async def test_message_to_a_deleted_conversation_is_not_found(node_app, token):
    client = WSClient(node_app)
    ready = await client.connect(token)
    await database_sync_to_async(Conversation.objects.filter(pk=ready["conversation_id"]).delete)()
    await client.message("anyone there?")
    frames, code = await client.expect_close()
    assert code == 4404
    assert frames[-1] == {"type": "error", "code": "not_found", "detail": "this conversation no longer exists"}
