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
