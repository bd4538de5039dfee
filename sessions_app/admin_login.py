"""The admin's sign-in form is throttled like `POST /api/auth/token/` (issue 24, item 6): it
checks the same passwords, so it counts against the same buckets, per client address and per
username (sessions_app/throttles.py; API_THROTTLE_TOKEN_IP, API_THROTTLE_TOKEN_USERNAME), and
fails closed the same way. A guesser gains nothing by switching doors. Only a POST (an attempt)
counts; over the limit the answer is HTTP 429 with Retry-After, and 503 with Retry-After when
the limit cannot be checked."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse

from sessions_app.throttles import ThrottleUnavailable, TokenPerAddressThrottle, TokenPerUsernameThrottle


@dataclass
class _FormRequest:
    """What the throttles read of a request: its META and, as `data`, the submitted form."""

    META: dict
    data: Any


def throttled(login: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    def view(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if request.method == "POST":
            refused = _refusal(_FormRequest(request.META, request.POST))
            if refused is not None:
                return refused
        return login(request, extra_context)

    return view


def _refusal(request: _FormRequest) -> HttpResponse | None:
    for throttle in (TokenPerAddressThrottle(), TokenPerUsernameThrottle()):
        try:
            allowed = throttle.allow_request(request, None)
        except ThrottleUnavailable as exc:
            return _answer(503, str(exc.detail), exc.wait)
        if not allowed:
            return _answer(429, "Too many sign-in attempts; retry later.", throttle.wait())
    return None


def _answer(status: int, text: str, wait: float | None) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
    if wait is not None:
        response["Retry-After"] = str(max(1, math.ceil(wait)))
    return response
