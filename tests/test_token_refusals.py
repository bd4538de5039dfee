"""Refused renewals and revocations on an open socket: a reused (rotated) refresh token,
another user's tokens, garbage; the socket survives a refusal until its own expiry, every
refusal is counted on the connection row for operators, and a deactivated user loses the socket
at the next resync (REALTIME_RESYNC_INTERVAL). Revocations: tests/test_token_revocation.py."""

import asyncio
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from sessions_app.models import Connection
from tests.conftest import access_for, refresh_for
from tests.support.waiting import eventually
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


async def refresh(client: WSClient, **frame) -> dict:
    await client.send({"type": "auth.refresh", **frame})
    got = await client.recv_until(lambda f: f["type"] in ("auth.refreshed", "error"))
    return got[-1]


async def still_open(client: WSClient) -> None:
    await client.send({"type": "ping", "id": 7})
    assert (await client.recv_until(lambda f: f["type"] == "pong"))[-1]["id"] == 7


async def row_of(ready: dict) -> Connection:
    return await database_sync_to_async(Connection.objects.get)(conversation_id=ready["conversation_id"])


async def closed_row_of(ready: dict) -> Connection:
    async def closed():
        row = await row_of(ready)
        return row if row.closed_at is not None else None

    return await eventually(closed, timeout=5, what="connection row closed")


async def test_reused_refresh_token_is_refused_and_visible(node_app, user):
    first = await database_sync_to_async(refresh_for)(user)
    client = WSClient(node_app)
    ready = await client.connect(access_for(user))

    rotated = await refresh(client, refresh=first)
    assert rotated["type"] == "auth.refreshed"
    reused = await refresh(client, refresh=first)
    assert (reused["type"], reused["code"]) == ("error", "refresh_failed")
    assert "blacklisted" in reused["detail"]
    await still_open(client)
    # The rotated successor still works.
    again = await refresh(client, refresh=rotated["refresh"])
    assert again["type"] == "auth.refreshed"

    row = await row_of(ready)
    assert (row.auth_refreshes, row.auth_refusals, row.closed_at) == (2, 1, None)
    assert "blacklisted" in row.last_auth_refusal and row.last_auth_refusal_at is not None
    await client.drop()


async def test_concurrent_reuse_of_one_refresh_token_succeeds_once(cluster, user):
    _, app = cluster("node-1")
    shared = await database_sync_to_async(refresh_for)(user)
    a, b = WSClient(app), WSClient(app)
    await a.connect(access_for(user))
    await b.connect(access_for(user))
    replies = await asyncio.gather(refresh(a, refresh=shared), refresh(b, refresh=shared))
    assert sorted(r["type"] for r in replies) == ["auth.refreshed", "error"]
    await a.drop()
    await b.drop()


@pytest.mark.parametrize("kind", ["access", "refresh"])
async def test_another_users_token_is_refused(node_app, user, other_user, kind):
    foreign = access_for(other_user) if kind == "access" else await database_sync_to_async(refresh_for)(other_user)
    client = WSClient(node_app)
    ready = await client.connect(access_for(user))
    reply = await refresh(client, **{kind: foreign})
    assert (reply["type"], reply["code"]) == ("error", "refresh_failed")
    assert "another user" in reply["detail"]
    await still_open(client)
    row = await row_of(ready)
    assert (row.auth_refreshes, row.auth_refusals) == (0, 1)
    if kind == "refresh":
        # The foreign refresh token was not consumed by the refused attempt.
        jti = RefreshToken(foreign, verify=False)["jti"]
        assert not await database_sync_to_async(BlacklistedToken.objects.filter(token__jti=jti).exists)()
    await client.drop()


@pytest.mark.parametrize(
    "frame",
    [
        {"access": "not-a-token"},
        {"refresh": "not-a-token"},
        {"access": "REFRESH"},  # a refresh token where an access token belongs
        {"refresh": "ACCESS"},  # and the other way round
    ],
    ids=["garbage-access", "garbage-refresh", "refresh-as-access", "access-as-refresh"],
)
async def test_wrong_kind_or_garbage_is_refused(node_app, user, frame):
    client = WSClient(node_app)
    ready = await client.connect(access_for(user))
    value = next(iter(frame.values()))
    if value == "REFRESH":
        value = await database_sync_to_async(refresh_for)(user)
    elif value == "ACCESS":
        value = access_for(user)
    reply = await refresh(client, **{next(iter(frame)): value})
    assert (reply["type"], reply["code"]) == ("error", "refresh_failed")
    await still_open(client)
    assert (await row_of(ready)).auth_refusals == 1
    await client.drop()


async def test_socket_survives_a_failed_refresh_until_its_expiry(settings, cluster, user):
    settings.REALTIME_TOKEN_WARNING = 0.5
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 5
    _, app = cluster("node-1")
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=3))
    client = WSClient(app)
    ready = await client.connect(str(token))
    reply = await refresh(client, access="garbage")
    assert reply["code"] == "refresh_failed"
    done = await client.converse("hello")  # still served
    assert done[-1]["type"] == "agent.completed"
    frames, code = await client.expect_close(timeout=5)
    assert code == 4401 and frames[-1]["code"] == "token_expired"
    assert time.time() >= ready["access_expires_at"] - 0.5
    row = await closed_row_of(ready)
    assert (row.close_code, row.close_reason, row.auth_refusals) == (4401, "token_expired", 1)
    await client.drop()


async def test_deactivated_user_loses_open_socket_at_next_resync(settings, node_app, user):
    settings.REALTIME_RESYNC_INTERVAL = 0.5
    client = WSClient(node_app)
    ready = await client.connect(access_for(user))
    user.is_active = False
    await database_sync_to_async(user.save)()
    started = time.monotonic()
    frames, code = await client.expect_close(timeout=3)
    assert code == 4401 and frames[-1]["code"] == "unauthenticated"
    assert time.monotonic() - started < 0.5 + 1.0
    assert (await closed_row_of(ready)).close_code == 4401
    await client.drop()
