"""Origin check for browser sockets. Browsers always send Origin; other clients (SDKs,
servers) usually do not, and they authenticate with the token in `connect` anyway."""

from __future__ import annotations

from urllib.parse import urlparse

from django.conf import settings
from django.http.request import validate_host


def origin_allowed(origin: str | None) -> bool:
    if origin is None:
        return True
    allowed = settings.REALTIME_ALLOWED_ORIGINS
    if allowed:
        return "*" in allowed or origin.rstrip("/") in [a.rstrip("/") for a in allowed]
    parsed = urlparse(origin)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    return validate_host(parsed.hostname, settings.ALLOWED_HOSTS)


def origin_of(scope: dict) -> str | None:
    """The handshake's Origin header, None when the client sent none."""
    for name, value in scope.get("headers", []):
        if name == b"origin":
            return value.decode("latin1")
    return None
