"""Origin check for browser sockets. Browsers always send Origin; other clients (SDKs,
servers) usually do not, and they authenticate with the token in `connect` anyway."""

from __future__ import annotations

from urllib.parse import urlparse

from django.conf import settings
from django.http.request import validate_host


def origin_allowed(origin: str | None, host: str | None = None) -> bool:
    """May a page of `origin` open a socket (or call the API)? Yes for no Origin (not a
    browser), for the server's own pages (`origin` is `host`, the request's Host, itself one of
    ALLOWED_HOSTS: so a rebound DNS name does not count), and for the origins listed in
    REALTIME_ALLOWED_ORIGINS (else the hosts of ALLOWED_HOSTS)."""
    if origin is None:
        return True
    if host and _same_origin(origin, host):
        return True
    allowed = settings.REALTIME_ALLOWED_ORIGINS
    if allowed:
        return "*" in allowed or origin.rstrip("/") in [a.rstrip("/") for a in allowed]
    parsed = urlparse(origin)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    return validate_host(parsed.hostname, settings.ALLOWED_HOSTS)


def _same_origin(origin: str, host: str) -> bool:
    # Before this, listing one other origin in REALTIME_ALLOWED_ORIGINS refused the server's own
    # demo page unless its origin was listed too (issue 23).
    parsed = urlparse(origin)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return False
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return parsed.netloc.lower() == host.lower() and validate_host(hostname.lower(), settings.ALLOWED_HOSTS)


def origin_of(scope: dict) -> str | None:
    """The handshake's Origin header, None when the client sent none."""
    return _header(scope, b"origin")


def host_of(scope: dict) -> str | None:
    """The handshake's Host header."""
    return _header(scope, b"host")


def _header(scope: dict, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return value.decode("latin1")
    return None
