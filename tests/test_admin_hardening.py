"""The admin (issue 24, items 6 and 7):

- its sign-in form is throttled like `POST /api/auth/token/`, against the same buckets (per
  client address and per username), and fails closed without Redis;
- passwords chosen anywhere are checked against the common-password list and the user's own
  attributes, not only for length;
- ending a user's sessions needs `auth.change_user`: a staff user who may change connections
  only can no longer sign a superuser out."""

from __future__ import annotations

import pytest
from django.contrib.auth import password_validation
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.test import Client

from sessions_app import services, tokens
from sessions_app.models import UserTokenGeneration

pytestmark = pytest.mark.django_db


def _admin_login(username: str, password: str = "wrong", addr: str = "198.51.100.30"):
    return Client(REMOTE_ADDR=addr).post("/admin/login/", {"username": username, "password": password})


def test_admin_sign_in_is_throttled_per_address_with_the_token_endpoints_buckets(settings, admin_user):
    settings.API_THROTTLE_TOKEN_IP = "3/min"
    assert Client(REMOTE_ADDR="198.51.100.30").get("/admin/login/").status_code == 200  # a GET is no attempt
    assert [_admin_login(f"guess-{i}").status_code for i in range(3)] == [200, 200, 200]  # the form again
    refused = _admin_login(admin_user.username, "password")
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 60
    # The same address is throttled on the token endpoint too: one budget for both doors.
    token = Client(REMOTE_ADDR="198.51.100.30").post("/api/auth/token/", {"username": "x", "password": "y"},
                                                     content_type="application/json")
    assert token.status_code == 429
    assert _admin_login("guess", addr="198.51.100.31").status_code == 200


def test_admin_sign_in_is_throttled_per_username(settings, admin_user):
    settings.API_THROTTLE_TOKEN_USERNAME = "2/min"
    codes = [_admin_login(admin_user.username, addr=f"203.0.113.{i}").status_code for i in range(3)]
    assert codes == [200, 200, 429]


def test_admin_sign_in_still_works_under_the_limit(admin_user):
    response = _admin_login(admin_user.username, "password")
    assert response.status_code == 302


def test_admin_sign_in_fails_closed_without_redis(settings, admin_user):
    settings.CACHES = {**settings.CACHES, "throttle": {**settings.CACHES["throttle"],
                                                       "LOCATION": "redis://127.0.0.1:1/0"}}
    response = _admin_login(admin_user.username, "password")
    assert response.status_code == 503 and response["Retry-After"] == "1"


@pytest.mark.parametrize(("password", "code"), [("qwertyuiop", "password_too_common"),
                                                ("password1234", "password_too_common"),
                                                ("ada.lovelace.1815", "password_too_similar")])
def test_common_and_similar_passwords_are_refused(django_user_model, password, code):
    user = django_user_model(username="ada.lovelace", email="ada@example.com", first_name="Ada")
    with pytest.raises(ValidationError) as refused:
        password_validation.validate_password(password, user)
    assert code in [e.code for e in refused.value.error_list]
    password_validation.validate_password("a-new-Passphrase-2024", user)


def _staff(django_user_model, *codenames: str):
    staff = django_user_model.objects.create_user("operator", password="pw-123456", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(staff)
    return client


def test_signing_users_out_needs_change_user(django_user_model, admin_user, user):
    conversation = services.create_conversation(admin_user.pk)
    opened = services.open_session(user_id=admin_user.pk, conversation_id=str(conversation.pk), client_id="c1",
                                   channel_name="ws.x", node="node-1")
    connections_only = _staff(django_user_model, "view_connection", "change_connection")
    page = connections_only.get("/admin/sessions_app/connection/")
    assert page.status_code == 200
    assert b"disconnect_connections" in page.content  # the connection's own action stays
    assert b"end_connection_users_sessions" not in page.content
    connections_only.post("/admin/sessions_app/connection/",
                          {"action": "end_connection_users_sessions", "_selected_action": [opened.connection_id]})
    assert tokens.current_generation(admin_user.pk) == 0  # the superuser was not signed out
    assert not UserTokenGeneration.objects.exists()

    with_change_user = Client()
    with_change_user.force_login(admin_user)
    assert b"end_connection_users_sessions" in with_change_user.get("/admin/sessions_app/connection/").content
    django_user_model.objects.filter(username="operator").delete()
    allowed = _staff(django_user_model, "view_connection", "change_connection", "view_user", "change_user")
    assert b"end_connection_users_sessions" in allowed.get("/admin/sessions_app/connection/").content
    assert b"end_user_sessions" in allowed.get("/admin/auth/user/").content
    allowed.post("/admin/sessions_app/connection/",
                 {"action": "end_connection_users_sessions", "_selected_action": [opened.connection_id]})
    assert tokens.current_generation(admin_user.pk) == 1
