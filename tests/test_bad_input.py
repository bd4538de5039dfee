"""Every bad input gets its documented error frame and close code, and writes nothing."""

import base64
import json
import uuid
from datetime import timedelta

import jwt
import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from sessions_app.models import AgentRun, Connection, Conversation, Event, Message
from tests.conftest import access_for
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


def _counts():
    return (
        Conversation.objects.count(), Message.objects.count(), Event.objects.count(), AgentRun.objects.count(),
        Connection.objects.filter(closed_at__isnull=True).count(),
    )


async def _assert_nothing_written(before=(0, 0, 0, 0, 0)):
    assert await database_sync_to_async(_counts)() == before


async def _still_open(client: WSClient) -> None:
    await client.send({"type": "ping", "id": "alive"})
    assert await client.recv() == {"type": "pong", "id": "alive"}


def connect_frame(token: str, **overrides) -> dict:
    frame = {"type": "connect", "token": token, "conversation_id": None, "last_seq": None,
             "client_id": str(uuid.uuid4())}
    frame.update(overrides)
    return frame


async def _closed_with(client: WSClient, code: int, error_code: str) -> dict:
    frames, close = await client.expect_close()
    assert close == code, frames
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == error_code, frames
    assert frames[-1]["detail"]
    await client.drop()
    return frames[-1]


@pytest.mark.parametrize(
    "raw, detail",
    [
        ("{not json", "frame is not valid JSON"),
        ("[1, 2]", "frame must be a JSON object"),
        ('{"type": "teleport"}', "unknown frame type 'teleport'"),
        ('{"no": "type"}', "missing field 'type'"),
        ('{"type": "ack"}', "missing field 'seq'"),
        ('{"type": "message", "text": "x"}', "missing field 'client_msg_id'"),
        ('{"type": "ack", "seq": -1}', "'seq' must be between 0 and 9007199254740992"),
        ('{"type": "ack", "seq": "7"}', "'seq' must be an integer"),
        ('{"type": "ack", "seq": true}', "'seq' must be an integer"),
        ("[" * 5000 + "]" * 5000, "JSON nested too deeply"),
    ],
)
async def test_bad_frames_get_error_and_stay_open(node_app, token, raw, detail):
    c = WSClient(node_app)
    await c.connect(token)
    await c.send(raw)
    error = await c.recv()
    assert (error["type"], error["code"], error["detail"]) == ("error", "bad_frame", detail)
    await _still_open(c)
    await c.drop()


async def test_error_carries_the_client_frame_ref(node_app, token):
    c = WSClient(node_app)
    await c.connect(token)
    msg_id = str(uuid.uuid4())
    await c.send({"type": "message", "client_msg_id": msg_id, "text": ""})
    error = await c.recv()
    assert error == {"type": "error", "code": "bad_frame", "detail": "'text' must be a non-empty string",
                     "ref": msg_id}
    await c.drop()
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_binary_frame_is_refused(node_app, token):
    c = WSClient(node_app)
    await c.connect(token)
    await c.send(b'{"type":"ping"}')
    error = await c.recv()
    assert error["code"] == "bad_frame" and "binary" in error["detail"]
    await _still_open(c)
    await c.drop()


async def test_too_many_bad_frames_close_4400(settings, node_app, token):
    settings.REALTIME_BAD_FRAME_LIMIT = 10
    c = WSClient(node_app)
    await c.connect(token)
    for _ in range(10):
        await c.send("nope")
        assert (await c.recv())["code"] == "bad_frame"
    await c.send("nope")
    assert (await c.recv())["code"] == "bad_frame"
    await _closed_with(c, 4400, "bad_frame")


async def test_frame_too_large_closes_4413(settings, node_app, token):
    settings.REALTIME_MAX_FRAME_BYTES = 1024
    c = WSClient(node_app)
    await c.connect(token)
    await c.send(json.dumps({"type": "message", "client_msg_id": str(uuid.uuid4()), "text": "x" * 2000}))
    await _closed_with(c, 4413, "frame_too_large")
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_text_too_long_is_refused_and_stays_open(settings, node_app, token):
    settings.REALTIME_MAX_MESSAGE_CHARS = 100
    c = WSClient(node_app)
    await c.connect(token)
    await c.message("y" * 101)
    error = await c.recv()
    assert error["code"] == "too_long"
    await _still_open(c)
    await c.drop()
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_no_connect_within_timeout_closes_4401(settings, node_app):
    settings.REALTIME_CONNECT_TIMEOUT = 0.3
    c = WSClient(node_app)
    await c.open()
    error = await _closed_with(c, 4401, "unauthenticated")
    assert "connect" in error["detail"]
    await _assert_nothing_written()


async def test_first_frame_not_connect_closes_4401(node_app):
    c = WSClient(node_app)
    await c.open()
    await c.send({"type": "ping", "id": 1})
    await _closed_with(c, 4401, "unauthenticated")
    await _assert_nothing_written()


@pytest.mark.parametrize("token", ["garbage", "a.b.c", ""])
async def test_bad_token_closes_4401(node_app, token):
    c = WSClient(node_app)
    await c.open()
    await c.send(connect_frame(token))
    if token == "":
        # An empty token is a malformed frame, not an auth attempt; then the timeout applies.
        assert (await c.recv())["code"] == "bad_frame"
        await c.drop()
    else:
        await _closed_with(c, 4401, "unauthenticated")
    await _assert_nothing_written()


def _forged_tokens(user) -> dict[str, str]:
    """Tokens an attacker could build: claims of a real user without the server's key."""
    genuine = AccessToken.for_user(user)
    claims = dict(genuine.payload)
    header, payload, signature = str(genuine).split(".")
    other_claims = {**claims, "user_id": str(int(claims["user_id"]) + 1)}
    tampered_payload = base64.urlsafe_b64encode(json.dumps(other_claims).encode()).rstrip(b"=").decode()
    return {
        "alg-none": jwt.encode(claims, key=None, algorithm="none"),
        "wrong-key": jwt.encode(claims, "not-the-server-key-0123456789abcdef", algorithm="HS256"),
        "tampered-claims": f"{header}.{tampered_payload}.{signature}",
        "hs512-confusion": jwt.encode(claims, "not-the-server-key-0123456789abcdef", algorithm="HS512"),
        "no-token-type": jwt.encode({k: v for k, v in claims.items() if k != "token_type"},
                                    settings.SIMPLE_JWT.get("SIGNING_KEY") or settings.SECRET_KEY, algorithm="HS256"),
    }


@pytest.mark.parametrize("kind", ["alg-none", "wrong-key", "tampered-claims", "hs512-confusion", "no-token-type"])
async def test_forged_tokens_close_4401(node_app, user, kind):
    forged = _forged_tokens(user)[kind]
    c = WSClient(node_app)
    await c.open()
    await c.send(connect_frame(forged))
    await _closed_with(c, 4401, "unauthenticated")
    await _assert_nothing_written()


async def test_expired_token_closes_4401_token_expired(node_app, user):
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=5))
    c = WSClient(node_app)
    await c.open()
    await c.send(connect_frame(str(token)))
    await _closed_with(c, 4401, "token_expired")
    await _assert_nothing_written()


async def test_refresh_token_is_not_an_access_token(node_app, user):
    c = WSClient(node_app)
    await c.open()
    refresh = await database_sync_to_async(RefreshToken.for_user)(user)
    await c.send(connect_frame(str(refresh)))
    await _closed_with(c, 4401, "unauthenticated")
    await _assert_nothing_written()


async def test_deactivated_user_cannot_connect(node_app, user):
    token = access_for(user)
    user.is_active = False
    await database_sync_to_async(user.save)()
    c = WSClient(node_app)
    await c.open()
    await c.send(connect_frame(token))
    await _closed_with(c, 4401, "unauthenticated")
    await _assert_nothing_written()


async def test_other_users_conversation_closes_4403(node_app, user, other_user):
    conversation = await database_sync_to_async(Conversation.objects.create)(owner=other_user)
    c = WSClient(node_app)
    await c.open()
    await c.send(connect_frame(access_for(user), conversation_id=str(conversation.pk), last_seq=0))
    await _closed_with(c, 4403, "forbidden")
    await _assert_nothing_written(before=(1, 0, 0, 0, 0))


async def test_unknown_conversation_closes_4404(node_app, token):
    c = WSClient(node_app)
    await c.open()
    await c.send(connect_frame(token, conversation_id=str(uuid.uuid4()), last_seq=0))
    await _closed_with(c, 4404, "not_found")
    await _assert_nothing_written()


@pytest.mark.parametrize("last_seq", [-1, 2**60, "12", 1.5, [1]])
async def test_bad_last_seq_is_a_bad_frame(node_app, token, last_seq):
    c = WSClient(node_app)
    await c.open()
    await c.send(connect_frame(token, last_seq=last_seq))
    error = await c.recv()
    assert error["code"] == "bad_frame" and "last_seq" in error["detail"]
    await c.drop()
    await _assert_nothing_written()


async def test_second_connect_is_refused(node_app, token):
    c = WSClient(node_app)
    await c.connect(token)
    await c.send(connect_frame(token))
    assert (await c.recv())["code"] == "bad_frame"
    await _still_open(c)
    await c.drop()
    assert await database_sync_to_async(Conversation.objects.count)() == 1


@pytest.mark.parametrize(
    "origin, accepted",
    [(None, True), ("http://localhost:3000", True), ("http://evil.example", False), ("null", False)],
)
async def test_browser_origin_is_checked(node_app, origin, accepted):
    c = WSClient(node_app, origin=origin)
    connected, _ = await c.comm.connect(timeout=5)
    assert connected is accepted
    await c.comm.disconnect()


@pytest.mark.parametrize("origin, host, accepted", [
    ("http://localhost:8000", "localhost:8000", True),  # the server's own page
    ("http://evil.example", "evil.example", False),  # a rebound DNS name: not an allowed host
    ("http://localhost:3000", "localhost:8000", False),  # another port of the same host
])
async def test_the_servers_own_pages_need_not_be_listed(node_app, settings, origin, host, accepted):
    """With REALTIME_ALLOWED_ORIGINS listing other origins, the server's own demo page was
    refused unless its origin was listed too (issue 23)."""
    settings.REALTIME_ALLOWED_ORIGINS = ["https://app.example"]
    c = WSClient(node_app, origin=origin)
    c.comm.scope["headers"].append((b"host", host.encode()))
    connected, _ = await c.comm.connect(timeout=5)
    assert connected is accepted
    await c.comm.disconnect()


async def test_unknown_path_is_refused(node_app):
    from channels.testing import WebsocketCommunicator

    comm = WebsocketCommunicator(node_app, "/ws/v2/")
    connected, _ = await comm.connect(timeout=5)
    assert connected is False
