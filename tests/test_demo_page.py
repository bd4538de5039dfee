"""The demo page is served at `/` (it was a 404 that `make demo` pointed to), with the
controls the README names, and the JavaScript client is served as a static ES module by
whitenoise (no Node, no build step). tests/e2e/browser/ drives it in Chromium."""

from __future__ import annotations

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_demo_page_is_served_at_the_root():
    response = Client().get("/")
    assert response.status_code == 200
    html = response.content.decode()
    for label in ("Username", "Password", "Message"):
        assert re.search(rf"<label for=\"\w+\">{label}</label>", html), label
    for button in ("Sign in", "New conversation", "Send", "Stop", "Drop connection", "Go offline 5 s"):
        assert f">{button}</button>" in html, button
    assert 'value="demo"' in html  # the demo user's name is prefilled
    assert 'role="status"' in html and 'role="log"' in html
    assert '"tether-client": "/static/tether/tether-client.js"' in html


@pytest.mark.parametrize("path", ["/static/tether/tether-client.js", "/static/demo/app.js"])
def test_the_modules_are_served_as_javascript(path):
    response = Client().get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"export" in body or b"import" in body


def test_the_page_says_what_tether_is_and_what_to_try():
    html = Client().get("/").content.decode()
    assert "Tether keeps conversations with an AI agent alive over unreliable WebSockets" in html
    for prompt in ("count 300", "my name is Ada", "what is my name?"):
        assert f'data-text="{prompt}"' in html, prompt
    assert 'id="drop-help"' in html and 'id="offline-help"' in html
    assert '<button id="send" type="submit" disabled' in html  # enabled once the conversation's client exists


def test_demo_credentials_are_shown_only_while_the_demo_user_has_its_password(django_user_model):
    shown = "Demo account: user <code>demo</code>, password <code>demo-password</code>"
    assert shown not in Client().get("/").content.decode()  # no demo user
    user = django_user_model.objects.create_user(username="demo", password="demo-password")
    assert shown in Client().get("/").content.decode()
    user.set_password("changed-by-an-operator")
    user.save()
    assert shown not in Client().get("/").content.decode()
    user.set_password("demo-password")
    user.is_active = False
    user.save()
    assert shown not in Client().get("/").content.decode()


@pytest.mark.parametrize("path", ["/static/demo/view.js", "/static/demo/render.js", "/static/demo/happened.js"])
def test_the_page_modules_are_served(path):
    response = Client().get(path)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/javascript")
