"""DRF throttles (issue 9, item 8): password guessing on `POST /api/auth/token/` is limited per
client address and per username, `POST /api/conversations/` per user; counts are shared
through Redis and follow the trusted-proxy rule for addresses. Without Redis:
tests/test_limits_when_redis_fails.py."""

import pytest
from django.test import Client

from sessions_app.models import Conversation
from tests.test_rest_api import api

pytestmark = pytest.mark.django_db


def _login(username: str, password: str = "wrong", addr: str = "198.51.100.1", **headers) -> int:
    client = Client(REMOTE_ADDR=addr, **headers)
    response = client.post("/api/auth/token/", {"username": username, "password": password},
                           content_type="application/json")
    return response.status_code, response


@pytest.fixture
def rates(settings):
    settings.API_THROTTLE_TOKEN_IP = "3/min"
    settings.API_THROTTLE_TOKEN_USERNAME = "5/min"
    settings.API_THROTTLE_CONVERSATIONS = "2/min"
    return settings


def test_password_guessing_from_one_address_is_throttled(rates, user):
    for i in range(3):
        assert _login(f"nobody-{i}")[0] == 401
    code, response = _login("nobody-4")
    assert code == 429 and 0 < int(response["Retry-After"]) <= 60
    # Even the right password waits: the address is throttled, not the guess.
    assert _login(user.username, "pw-123456")[0] == 429
    # Another address is not.
    assert _login(user.username, "pw-123456", addr="198.51.100.2")[0] == 200


def test_password_guessing_on_one_username_from_many_addresses_is_throttled(rates, user):
    for i in range(5):
        assert _login(user.username, addr=f"203.0.113.{i}")[0] == 401
    assert _login(user.username.upper(), addr="203.0.113.99")[0] == 429
    assert _login("someone-else", addr="203.0.113.99")[0] == 401


def test_forwarded_for_counts_only_from_a_trusted_proxy(rates, user):
    # A client cannot escape the limit by inventing X-Forwarded-For addresses.
    for i in range(3):
        assert _login(f"x{i}", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")[0] == 401
    assert _login("x9", HTTP_X_FORWARDED_FOR="192.0.2.99")[0] == 429
    # Behind a trusted proxy each client behind it has its own count.
    rates.REALTIME_TRUSTED_PROXIES = ["10.0.0.5"]
    for i in range(3):
        assert _login(f"y{i}", addr="10.0.0.5", HTTP_X_FORWARDED_FOR="192.0.2.7")[0] == 401
    assert _login("y9", addr="10.0.0.5", HTTP_X_FORWARDED_FOR="192.0.2.7")[0] == 429
    assert _login("y9", addr="10.0.0.5", HTTP_X_FORWARDED_FOR="192.0.2.8")[0] == 401


def test_conversation_creation_is_throttled_per_user(rates, user, other_user):
    for _ in range(2):
        assert api(user).post("/api/conversations/", {}, content_type="application/json").status_code == 201
    refused = api(user).post("/api/conversations/", {}, content_type="application/json")
    assert refused.status_code == 429
    assert Conversation.objects.filter(owner=user).count() == 2
    # Reading is not throttled, and other users are not affected.
    assert api(user).get("/api/conversations/").status_code == 200
    assert api(other_user).post("/api/conversations/", {}, content_type="application/json").status_code == 201
