"""Rotation is not revocation (sessions_app/tokens.py).

Refreshing tokens, over the socket or over REST, in one tab or in two tabs sharing a token
chain, never ends a socket, however many resyncs pass. Only a real revocation does, within the
resync interval: a logout (that sign-in, in every tab), "sign out everywhere" (every session of
the user) and a deactivated user. A revoked token is then refused on every path: connect,
auth.refresh on a socket, REST refresh and REST authentication."""

from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from realtime.node.resync import resync_once
from sessions_app.models import Connection
from tests.conftest import access_for
from tests.support.waiting import eventually
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)

RESYNC = 0.3


def http_post(path: str, body: dict | None = None, bearer: str | None = None) -> tuple[int, dict]:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {bearer}"} if bearer else {}
    response = Client().post(path, body or {}, content_type="application/json", **headers)
    return response.status_code, response.json()


def http_get(path: str, bearer: str) -> int:
    return Client().get(path, HTTP_AUTHORIZATION=f"Bearer {bearer}").status_code


async def sign_in(user) -> dict:
    status, tokens = await database_sync_to_async(http_post)(
        "/api/auth/token/", {"username": user.username, "password": "pw-123456"}
    )
    assert status == 200, tokens
    return tokens


async def rest_refresh(refresh: str) -> tuple[int, dict]:
    return await database_sync_to_async(http_post)("/api/auth/token/refresh/", {"refresh": refresh})


async def socket_refresh(client: WSClient, **frame) -> dict:
    await client.send({"type": "auth.refresh", **frame})
    return (await client.recv_until(lambda f: f["type"] in ("auth.refreshed", "error")))[-1]


async def alive_after_resyncs(node, client: WSClient, rounds: int = 3) -> None:
    """Runs the node's periodic resync `rounds` times, then proves the socket still answers."""
    for _ in range(rounds):
        await resync_once(node)
    await client.send({"type": "ping", "id": rounds})
    frames = await client.recv_until(lambda f: f["type"] == "pong")
    assert [f["type"] for f in frames] == ["pong"], frames
    assert client.close_code is None


async def closes_4401_within_resync(client: WSClient) -> float:
    started = time.monotonic()
    frames, code = await client.expect_close(timeout=5)
    elapsed = time.monotonic() - started
    assert code == 4401, (code, frames)
    assert frames[-1] == {"type": "error", "code": "unauthenticated", "detail": "token was revoked; sign in again"}
    return elapsed


async def rows_become(user, expected: list[tuple[int | None, str]]) -> None:
    """The user's connection rows reach these (close code, reason)s; a close is written just
    after the socket is told."""

    def rows():
        return sorted(Connection.objects.filter(user=user).values_list("close_code", "close_reason"), key=str)

    async def settled():
        return await database_sync_to_async(rows)() == expected

    await eventually(settled, timeout=5, what=f"connection rows {expected}")


@pytest.fixture
async def node(cluster):
    return cluster("node-1")


async def test_flow_a_socket_rotates_then_app_refreshes_over_rest(node, user):
    """The flow docs/security.md recommends: the socket rotates R0 -> R1, the app later
    rotates R1 over REST (R1 blacklisted, R2 issued) and hands the new access token to the
    socket. Before the fix the next resync closed the socket 4401."""
    runtime, app = node
    tokens = await sign_in(user)
    client = WSClient(app)
    await client.connect(tokens["access"])
    rotated = await socket_refresh(client, refresh=tokens["refresh"])
    assert rotated["type"] == "auth.refreshed", rotated
    status, rest = await rest_refresh(rotated["refresh"])
    assert status == 200, rest
    handed = await socket_refresh(client, access=rest["access"])
    assert handed["type"] == "auth.refreshed", handed
    await alive_after_resyncs(runtime, client)
    # The chain goes on: R2 still rotates.
    assert (await rest_refresh(rest["refresh"]))[0] == 200
    await alive_after_resyncs(runtime, client)


async def test_flow_b_two_tabs_share_one_chain(node, user):
    """Two tabs hold tokens of one sign-in; one rotates over its socket, the other is not
    closed (before the fix it was, because the token it last rotated to was now blacklisted)."""
    runtime, app = node
    tokens = await sign_in(user)
    tab1, tab2 = WSClient(app), WSClient(app)
    await tab1.connect(tokens["access"])
    await tab2.connect(tokens["access"])
    first = await socket_refresh(tab2, refresh=tokens["refresh"])
    second = await socket_refresh(tab1, refresh=first["refresh"])
    assert second["type"] == "auth.refreshed", second
    await alive_after_resyncs(runtime, tab1)
    await alive_after_resyncs(runtime, tab2)


async def test_logout_ends_that_sign_in_in_every_tab_and_nothing_else(settings, node, user):
    settings.REALTIME_RESYNC_INTERVAL = RESYNC
    _, app = node
    signed_in = await sign_in(user)
    other_device = await sign_in(user)
    tab1, tab2, elsewhere = WSClient(app), WSClient(app), WSClient(app)
    await tab1.connect(signed_in["access"])
    await tab2.connect(signed_in["access"])
    await elsewhere.connect(other_device["access"])
    # The tab rotated first: the token it signs out with is an already-used one. Still its sign-in.
    rotated = await socket_refresh(tab1, refresh=signed_in["refresh"])

    status, body = await database_sync_to_async(http_post)("/api/auth/logout/", {"refresh": signed_in["refresh"]})
    assert (status, body) == (200, {"signed_out": True, "sign_in_revoked": True})

    for tab in (tab1, tab2):
        assert await closes_4401_within_resync(tab) < RESYNC + 1.0
    await elsewhere.send({"type": "ping", "id": 1})
    assert (await elsewhere.recv_until(lambda f: f["type"] == "pong"))[-1] == {"type": "pong", "id": 1}
    await rows_become(user, [(4401, "unauthenticated"), (4401, "unauthenticated"), (None, "")])

    # Every token of that sign-in is now refused, on every path.
    assert (await rest_refresh(rotated["refresh"]))[0] == 401
    assert await database_sync_to_async(http_get)("/api/conversations/", signed_in["access"]) == 401
    refused = WSClient(app)
    await refused.open()
    await refused.send({"type": "connect", "token": signed_in["access"], "conversation_id": None,
                        "last_seq": None, "client_id": "again"})
    frames, code = await refused.expect_close()
    assert code == 4401 and frames[-1]["code"] == "unauthenticated", frames
    assert "revoked" in frames[-1]["detail"]
    refresh_refused = await socket_refresh(elsewhere, access=signed_in["access"])
    assert refresh_refused["code"] == "refresh_failed" and "revoked" in refresh_refused["detail"]
    # The other sign-in is untouched.
    assert (await rest_refresh(other_device["refresh"]))[0] == 200
    # Signing out twice is not an error.
    assert (await database_sync_to_async(http_post)("/api/auth/logout/", {"refresh": signed_in["refresh"]}))[0] == 200


async def test_sign_out_everywhere_ends_every_session_of_the_user_only(settings, node, user, other_user):
    settings.REALTIME_RESYNC_INTERVAL = RESYNC
    _, app = node
    phone, laptop = await sign_in(user), await sign_in(user)
    a, b, c, stranger = WSClient(app), WSClient(app), WSClient(app), WSClient(app)
    await a.connect(phone["access"])
    await b.connect(laptop["access"])
    await c.connect(access_for(user))  # a token minted without a sign-in: generation 0
    await stranger.connect(access_for(other_user))

    status, body = await database_sync_to_async(http_post)("/api/auth/logout-all/", bearer=laptop["access"])
    assert (status, body) == (200, {"signed_out": True, "refresh_tokens_revoked": 2})

    for client in (a, b, c):
        assert await closes_4401_within_resync(client) < RESYNC + 1.0
    await stranger.send({"type": "ping", "id": 2})
    assert (await stranger.recv_until(lambda f: f["type"] == "pong"))[-1] == {"type": "pong", "id": 2}
    assert (await rest_refresh(phone["refresh"]))[0] == 401
    # Signing in again works at once: the new tokens carry the new generation.
    fresh = await sign_in(user)
    again = WSClient(app)
    ready = await again.connect(fresh["access"])
    assert ready["type"] == "ready"
    assert (await rest_refresh(fresh["refresh"]))[0] == 200


async def test_socket_refresh_after_rest_rotation_keeps_the_new_standing(node, user):
    """auth.refresh with an access token moves the socket to that token's sign-in: a logout of
    the sign-in it came from no longer concerns it."""
    runtime, app = node
    first, second = await sign_in(user), await sign_in(user)
    client = WSClient(app)
    await client.connect(first["access"])
    assert (await socket_refresh(client, access=second["access"]))["type"] == "auth.refreshed"
    assert (await database_sync_to_async(http_post)("/api/auth/logout/", {"refresh": first["refresh"]}))[0] == 200
    await alive_after_resyncs(runtime, client)
