"""The refresh token's lifecycle (issue 24, item 3; sessions_app/tokens.py `rotate`).

- Reuse detection (RFC 9700 section 4.14.2): a used refresh token presented again within
  REFRESH_TOKEN_REUSE_GRACE (two tabs racing) is refused and nothing else happens; after the
  grace, someone holds a copy, and its whole sign-in ends: every token of it is refused, on
  every path, and its sockets close 4401 within the resync interval. Other sign-ins live on.
- Absolute lifetime: no token of a sign-in outlives `auth_time` + SIGN_IN_MAX_AGE, however
  often it is rotated.
- Two concurrent refreshes of one token: exactly one wins (the outstanding row is locked).
- `POST /api/auth/token/refresh/` is throttled per client address."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import timedelta

import jwt
import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import RefreshToken

from sessions_app import auth_api, tokens
from sessions_app.models import RevokedSignIn
from tests.support.ws import WSClient
from tests.test_token_revocation import (
    closes_4401_within_resync,
    http_get,
    http_post,
    rest_refresh,
    sign_in,
    socket_refresh,
)

pytestmark = pytest.mark.django_db(transaction=True)

RESYNC = 0.3


def claims_of(raw: str) -> dict:
    return jwt.decode(raw, options={"verify_signature": False})


def _rotated_long_ago(raw: str, seconds: float = 31) -> None:
    """The token was used (rotated) `seconds` ago: its blacklist entry is backdated."""
    jti = claims_of(raw)["jti"]
    BlacklistedToken.objects.filter(token__jti=jti).update(blacklisted_at=timezone.now() - timedelta(seconds=seconds))


@pytest.fixture
async def node(cluster):
    return cluster("node-1")


async def test_a_used_refresh_token_within_the_grace_is_refused_and_nothing_is_revoked(user):
    signed_in = await sign_in(user)
    status, first = await rest_refresh(signed_in["refresh"])
    assert status == 200
    # The other tab, a moment late, with the same token.
    status, body = await rest_refresh(signed_in["refresh"])
    assert status == 401, body
    assert "reused" not in str(body)
    assert await database_sync_to_async(RevokedSignIn.objects.count)() == 0
    # The chain goes on in the tab that won.
    assert (await rest_refresh(first["refresh"]))[0] == 200
    assert await database_sync_to_async(http_get)("/api/conversations/", first["access"]) == 200


async def test_a_used_refresh_token_after_the_grace_ends_its_sign_in_everywhere(settings, node, user):
    settings.REALTIME_RESYNC_INTERVAL = RESYNC
    _, app = node
    victim = await sign_in(user)
    other_device = await sign_in(user)
    # The victim's app rotates R0 -> R1 over REST and its socket holds the new access token.
    status, current = await rest_refresh(victim["refresh"])
    assert status == 200
    socket, elsewhere = WSClient(app), WSClient(app)
    await socket.connect(current["access"])
    await elsewhere.connect(other_device["access"])
    await database_sync_to_async(_rotated_long_ago)(victim["refresh"])

    # The thief presents the stolen, used R0.
    status, body = await rest_refresh(victim["refresh"])
    assert status == 401 and "reused" in body["detail"], body

    # The whole sign-in ended: its socket closes within the resync bound...
    assert await closes_4401_within_resync(socket) < RESYNC + 1.0
    # ...and each of its tokens is refused on every path.
    assert (await rest_refresh(current["refresh"]))[0] == 401
    assert await database_sync_to_async(http_get)("/api/conversations/", current["access"]) == 401
    refused = await socket_refresh(elsewhere, refresh=current["refresh"])
    assert refused["code"] == "refresh_failed" and "revoked" in refused["detail"], refused
    sid = claims_of(victim["refresh"])["sid"]
    assert await database_sync_to_async(lambda: RevokedSignIn.objects.get(sid=sid).reason)() == "refresh token reused"
    # The user's other sign-in is untouched.
    await elsewhere.send({"type": "ping", "id": 1})
    assert (await elsewhere.recv_until(lambda f: f["type"] == "pong"))[-1] == {"type": "pong", "id": 1}
    assert (await rest_refresh(other_device["refresh"]))[0] == 200


async def test_reuse_over_the_socket_after_the_grace_ends_the_sign_in_too(settings, node, user):
    settings.REALTIME_RESYNC_INTERVAL = RESYNC
    _, app = node
    signed_in = await sign_in(user)
    socket = WSClient(app)
    await socket.connect(signed_in["access"])
    rotated = await socket_refresh(socket, refresh=signed_in["refresh"])
    assert rotated["type"] == "auth.refreshed"
    await database_sync_to_async(_rotated_long_ago)(signed_in["refresh"])
    again = await socket_refresh(socket, refresh=signed_in["refresh"])
    assert again["code"] == "refresh_failed" and "reused" in again["detail"], again
    assert await closes_4401_within_resync(socket) < RESYNC + 1.0
    assert (await rest_refresh(rotated["refresh"]))[0] == 401


def _sign_in_started(user, seconds_ago: int) -> str:
    token = auth_api.SignInSerializer.get_token(user)
    token["auth_time"] = int(time.time()) - seconds_ago
    return str(token)


def test_rotation_keeps_auth_time_and_never_outlives_the_sign_in_max_age(settings, user):
    settings.SIGN_IN_MAX_AGE = 100
    raw = _sign_in_started(user, 40)
    started = claims_of(raw)["auth_time"]
    rotated = tokens.rotate(raw)
    for token in (rotated.refresh, rotated.access):
        assert claims_of(token)["auth_time"] == started
        assert claims_of(token)["exp"] <= started + 100
    # And again from the rotated one: the bound does not move.
    again = tokens.rotate(rotated.refresh)
    assert claims_of(again.refresh)["exp"] <= started + 100


def test_a_sign_in_older_than_its_max_age_cannot_be_refreshed(settings, user):
    settings.SIGN_IN_MAX_AGE = 100
    client = Client()
    response = client.post("/api/auth/token/refresh/", {"refresh": _sign_in_started(user, 101)},
                           content_type="application/json")
    assert response.status_code == 401
    assert "older than its maximum age" in response.json()["detail"]


def test_login_stamps_auth_time(user):
    status, body = http_post("/api/auth/token/", {"username": user.username, "password": "pw-123456"})
    assert status == 200
    for token in (body["access"], body["refresh"]):
        assert abs(claims_of(token)["auth_time"] - time.time()) < 5


def test_two_concurrent_refreshes_of_one_token_exactly_one_wins(monkeypatch, user):
    """Both requests have decoded the token (unused) before either locks; each then checks the
    blacklist and pauses where the other could slip in. With the row lock the second waits for
    the first to commit and finds the token used; without it both would rotate it."""
    raw = str(RefreshToken.for_user(user))
    decoded = threading.Barrier(2, timeout=10)
    checked = threading.Barrier(2)
    original_decode, original_used_at = tokens.decode_refresh, tokens.used_at_of

    def decode(token):
        claims = original_decode(token)
        decoded.wait()
        return claims

    def used_at(jti):
        found = original_used_at(jti)
        with contextlib.suppress(threading.BrokenBarrierError):
            checked.wait(timeout=1.0)  # the other one is blocked on the lock: go on alone
        return found

    monkeypatch.setattr(tokens, "decode_refresh", decode)
    monkeypatch.setattr(tokens, "used_at_of", used_at)
    outcomes: list[str] = []

    def refresh():
        try:
            tokens.rotate(raw)
            outcomes.append("rotated")
        except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
            outcomes.append(type(exc).__name__)
        finally:
            connection.close()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["TokenError", "rotated"], outcomes
    assert RevokedSignIn.objects.count() == 0


def test_rest_refresh_is_throttled_per_client_address(settings, user):
    settings.API_THROTTLE_REFRESH_IP = "2/min"
    client = Client(REMOTE_ADDR="198.51.100.7")
    codes = [client.post("/api/auth/token/refresh/", {"refresh": "garbage"}, content_type="application/json")
             for _ in range(3)]
    assert [r.status_code for r in codes] == [401, 401, 429]
    assert 0 < int(codes[-1]["Retry-After"]) <= 60
    other = Client(REMOTE_ADDR="198.51.100.8")
    assert other.post("/api/auth/token/refresh/", {"refresh": "garbage"},
                      content_type="application/json").status_code == 401
