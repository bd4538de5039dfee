"""The demo page: signs in over REST, lists conversations, streams answers through the
JavaScript client served at /static/tether/tether-client.js (see clients/js/README.md)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from project.csp import allow_own_inline

# Prefilled in the sign-in form; `make demo` creates this user (manage.py create_demo_user).
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"

# Password hash -> whether it is the demo password. Checking a password costs a PBKDF2 run
# (about 0.1 s of CPU); the page is public, so each hash is checked once per process and a
# changed password (a new hash) is checked again.
_checked: dict[str, bool] = {}


def demo_credentials() -> dict[str, str] | None:
    """The demo account to show on the page: only when the user exists, is active and still has
    the documented password (an operator who changed it does not want it printed)."""
    user = get_user_model().objects.filter(username=DEMO_USERNAME, is_active=True).only("password").first()
    if user is None:
        return None
    if user.password not in _checked:
        _checked.clear()  # one demo user: keep the latest hash only
        _checked[user.password] = check_password(DEMO_PASSWORD, user.password)
    return {"username": DEMO_USERNAME, "password": DEMO_PASSWORD} if _checked[user.password] else None


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    # The page is the template, constants and the demo account's documented name and password
    # (never anything from the request): its inline importmap is allowed by hash (project/csp.py).
    return allow_own_inline(render(request, "demo/index.html",
                                   {"demo_username": DEMO_USERNAME, "demo": demo_credentials()}))
