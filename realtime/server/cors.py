"""CORS for the REST API (django-cors-headers), decided by the same rule as the socket's Origin
check: a page that may open a socket may also call `/api/` (sign in, discovery, history), and
one that may not gets neither. One setting, `REALTIME_ALLOWED_ORIGINS` (default: the hosts of
`ALLOWED_HOSTS`), one function, `realtime.connection.origin.origin_allowed`.

Before this, a page served from another port got no CORS headers at all (issue 23): its
sign-in failed in the browser with no hint on the server. Static files need none of this:
whitenoise sends `Access-Control-Allow-Origin: *` on them, so the JS client module can be
imported from another origin.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from realtime.connection.origin import origin_allowed


def allow_listed_origins(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    """django-cors-headers' `check_request_enabled` signal: True lets the request's Origin in.
    Only under /api/ (a True here would also enable CORS outside `CORS_URLS_REGEX`: the admin
    and the demo page are same-origin only)."""
    origin = request.headers.get("Origin")
    host = request.META.get("HTTP_HOST")  # checked against ALLOWED_HOSTS by origin_allowed
    return request.path.startswith("/api/") and origin is not None and origin_allowed(origin, host)


def connect() -> None:
    from corsheaders.signals import check_request_enabled

    check_request_enabled.connect(allow_listed_origins, dispatch_uid="tether-allowed-origins")
