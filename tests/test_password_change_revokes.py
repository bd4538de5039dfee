"""A password change ends every sign-in of its user (issue 24, item 4; sessions_app/signals.py):
through the admin's password form, `manage.py changepassword`, or the form a password-reset
view saves, every token issued so far is refused on REST at once and every open socket closes
4401 within the resync interval. Another user is untouched; Django's re-hash of a password on
login (a hasher upgrade) and creating a user revoke nothing."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.hashers import make_password
from django.contrib.auth.management.commands import changepassword
from django.core.management import call_command
from django.test import Client

from tests.support.ws import WSClient
from tests.test_token_revocation import closes_4401_within_resync, http_get, rest_refresh, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

RESYNC = 0.3
NEW_PASSWORD = "a-new-Passphrase-2024"


def _admin_form(admin_user, user) -> None:
    client = Client()
    client.force_login(admin_user)
    response = client.post(f"/admin/auth/user/{user.pk}/password/",
                           {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"})
    assert response.status_code == 302, response.content[:2000]


def _changepassword_command(admin_user, user, monkeypatch) -> None:
    monkeypatch.setattr(changepassword.Command, "_get_pass", lambda self, prompt="": NEW_PASSWORD)
    call_command("changepassword", user.username)


def _reset_form(admin_user, user) -> None:
    form = SetPasswordForm(user, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert form.is_valid(), form.errors
    form.save()


@pytest.mark.parametrize("change", [_admin_form, _changepassword_command, _reset_form],
                         ids=["admin", "changepassword", "reset_form"])
async def test_a_password_change_ends_every_sign_in_of_the_user(settings, cluster, admin_user, user, other_user,
                                                                monkeypatch, change):
    settings.REALTIME_RESYNC_INTERVAL = RESYNC
    _, app = cluster("node-1")
    phone, laptop, stranger = await sign_in(user), await sign_in(user), await sign_in(other_user)
    sockets = [WSClient(app), WSClient(app)]
    await sockets[0].connect(phone["access"])
    await sockets[1].connect(laptop["access"])
    untouched = WSClient(app)
    await untouched.connect(stranger["access"])

    if change is _changepassword_command:
        await sync_to_async(change)(admin_user, user, monkeypatch)
    else:
        await sync_to_async(change)(admin_user, user)

    # REST at once.
    for signed_in in (phone, laptop):
        assert await database_sync_to_async(http_get)("/api/conversations/", signed_in["access"]) == 401
        assert (await rest_refresh(signed_in["refresh"]))[0] == 401
    # Sockets within the resync bound.
    started = time.monotonic()
    for socket in sockets:
        await closes_4401_within_resync(socket)
    assert time.monotonic() - started < RESYNC + 1.0
    # Someone else's sign-in lives on; the new password signs in.
    await untouched.send({"type": "ping", "id": 1})
    assert (await untouched.recv_until(lambda f: f["type"] == "pong"))[-1] == {"type": "pong", "id": 1}
    assert (await rest_refresh(stranger["refresh"]))[0] == 200
    response = await sync_to_async(Client().post)("/api/auth/token/", {"username": user.username,
                                                                        "password": NEW_PASSWORD},
                                                  content_type="application/json")
    assert response.status_code == 200


def test_a_rehash_on_login_revokes_nothing(settings, django_user_model):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher",
                                 "django.contrib.auth.hashers.MD5PasswordHasher"]
    user = django_user_model.objects.create(username="old-hash", password=make_password("pw-123456", hasher="md5"))
    client = Client()

    def login() -> dict:
        response = client.post("/api/auth/token/", {"username": "old-hash", "password": "pw-123456"},
                               content_type="application/json")
        assert response.status_code == 200
        return response.json()

    first = login()  # upgrades the stored hash to PBKDF2
    user.refresh_from_db()
    assert user.password.startswith("pbkdf2_")
    login()
    assert http_get("/api/conversations/", first["access"]) == 200
