"""Path 7: a conversation outlives several access-token lifetimes on one socket. Tokens are
renewed over the open socket while an answer streams; no reconnect, every event once."""

import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from sessions_app.models import Connection
from tests.conftest import refresh_for
from tests.support.ws import WSClient, assert_gapless, run_text

pytestmark = pytest.mark.django_db(transaction=True)

LIFETIME = 2  # seconds; JWT `exp` has whole-second resolution
WORDS = 160
EXPECTED = " ".join(f"w{i}" for i in range(1, WORDS + 1))


@pytest.fixture(autouse=True)
def short_lived_tokens(settings, monkeypatch):
    monkeypatch.setattr(AccessToken, "lifetime", timedelta(seconds=LIFETIME))
    settings.REALTIME_TOKEN_WARNING = 1.0
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 45  # 160 words: a ~7 s stream, over three lifetimes


def _over_socket(holder: dict):
    async def renew(client: WSClient) -> dict:
        await client.send({"type": "auth.refresh", "refresh": holder["refresh"]})
        reply = await client.recv_until(lambda f: f["type"] in ("auth.refreshed", "error"))
        assert reply[-1]["type"] == "auth.refreshed", reply[-1]
        assert reply[-1]["refresh"] != holder["refresh"], "refresh token was not rotated"
        holder.setdefault("used", []).append(holder["refresh"])
        holder["refresh"] = reply[-1]["refresh"]
        return reply

    return renew


def _over_http(holder: dict):
    http = Client()

    async def renew(client: WSClient) -> dict:
        response = await database_sync_to_async(http.post)(
            "/api/auth/token/refresh/", {"refresh": holder["refresh"]}, content_type="application/json"
        )
        assert response.status_code == 200, response.content
        holder.setdefault("used", []).append(holder["refresh"])
        holder["refresh"] = response.json()["refresh"]
        await client.send({"type": "auth.refresh", "access": response.json()["access"]})
        reply = await client.recv_until(lambda f: f["type"] in ("auth.refreshed", "error"))
        assert reply[-1]["type"] == "auth.refreshed", reply[-1]
        assert set(reply[-1]) == {"type", "access_expires_at"}
        return reply

    return renew


@pytest.mark.parametrize("variant", [_over_socket, _over_http], ids=["refresh-token", "http-access-token"])
async def test_stream_survives_three_token_lifetimes_without_reconnect(cluster, user, variant):
    _, app = cluster("node-1")
    holder = {"refresh": await database_sync_to_async(refresh_for)(user)}
    renew = variant(holder)
    client = WSClient(app)
    # `exp` has whole seconds: a LIFETIME token may have only just over one second left,
    # and its warning could then come before the stream has started. One more second avoids
    # that; every renewed token has the plain LIFETIME.
    first = AccessToken.for_user(user)
    first.set_exp(lifetime=timedelta(seconds=LIFETIME + 1))
    connected_at = time.time()
    ready = await client.connect(str(first))
    first_expiry = ready["access_expires_at"]

    await client.message(f"count {WORDS}")
    frames: list[dict] = []
    expiries = [first_expiry]
    run_id = None
    while True:
        frame = await client.recv(timeout=10)
        frames.append(frame)
        if frame["type"] == "agent.started":
            run_id = frame["run_id"]
        elif frame["type"] == "auth.expiring":
            # Every renewal happens while the answer is streaming.
            assert run_id is not None and not any(f["type"] == "agent.completed" for f in frames)
            read = await renew(client)  # live events keep flowing while the renewal is answered
            frames.extend(read)
            expiries.append(read[-1]["access_expires_at"])
        if any(f["type"] == "agent.completed" for f in frames):
            break

    every = client.frames
    assert len(expiries) >= 4, f"only {len(expiries) - 1} renewals: the stream ended too early"
    assert expiries == sorted(set(expiries)), expiries
    # The socket outlived three lifetimes, well past its first token's expiry, never reconnecting.
    assert time.time() - connected_at >= 3 * LIFETIME and time.time() > first_expiry + LIFETIME
    assert client.close_code is None
    assert not [f for f in every if f["type"] == "error"]
    assert_gapless(every[1:])  # `ready` carries no event seq
    # Not every[-1]: a renewal answered at the end of the stream reads `auth.refreshed` after
    # `agent.completed` (seen once in a loaded full run).
    [completed] = [f for f in every if f["type"] == "agent.completed"]
    assert run_text(every, run_id) == completed["message"]["text"] == EXPECTED

    row = await database_sync_to_async(Connection.objects.get)(conversation_id=ready["conversation_id"])
    assert (row.closed_at, row.auth_refreshes, row.auth_refusals) == (None, len(expiries) - 1, 0)
    blacklisted = await database_sync_to_async(
        lambda: set(BlacklistedToken.objects.values_list("token__jti", flat=True))
    )()
    used_jtis = {str(RefreshToken(t, verify=False)["jti"]) for t in holder["used"]}
    assert used_jtis <= blacklisted, "rotated refresh tokens must be blacklisted"
    await client.drop()
