"""The demo page: signs in over REST, lists conversations, streams answers through the
JavaScript client served at /static/tether/tether-client.js (see clients/js/README.md)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from project.csp import allow_own_inline

# Prefilled in the sign-in form; `make demo` creates this user (manage.py create_demo_user).
DEMO_USERNAME = "demo"


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    # The page is the template and constants only: its inline importmap is allowed by hash.
    return allow_own_inline(render(request, "demo/index.html", {"demo_username": DEMO_USERNAME}))
