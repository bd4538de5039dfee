"""Content-Security-Policy for every page the project serves: the demo page, the admin and the
Swagger UI (issue 24, item 2). Django 5.2 has no CSP of its own; this is one header, so a
middleware of a few lines instead of django-csp (whose nonces would have meant changing the
templates of the demo page, the admin and drf-spectacular).

The policy allows scripts and styles from this origin only. Inline code is allowed by its
SHA-256 hash only, and only on pages whose whole content comes from the project's own
templates and constants, never from the request (`allow_own_inline`): the demo page's
importmap and the Swagger UI page's inline style block. Hashing what a page renders keeps the
policy right when the page changes, and is safe because nothing on those pages comes from a
client. Sockets may go to any node (`connect-src ws: wss:`): the demo page moves between nodes
found by discovery."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable

from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"

DIRECTIVES = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self' ws: wss:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

_INLINE = {
    "script-src": re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I),
    "style-src": re.compile(rb"<style[^>]*>(.*?)</style>", re.S | re.I),
}


def policy(hashes: dict[str, Iterable[str]] | None = None) -> str:
    hashes = hashes or {}
    parts = []
    for name, sources in DIRECTIVES.items():
        extra = " ".join(f"'{h}'" for h in sorted(set(hashes.get(name, ()))))
        parts.append(f"{name} {sources} {extra}".rstrip())
    return "; ".join(parts)


def _sha256(body: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode()


def allow_own_inline(response: HttpResponse) -> HttpResponse:
    """The policy plus the hashes of this response's inline scripts and styles. Only for pages
    rendered from the project's templates with nothing from the request in them."""
    if hasattr(response, "render") and not getattr(response, "is_rendered", True):
        response.render()
    hashes = {name: [_sha256(m.group(1)) for m in pattern.finditer(response.content)]
              for name, pattern in _INLINE.items()}
    response[HEADER] = policy(hashes)
    return response


class ContentSecurityPolicyMiddleware:
    """Sets the policy on every response that has none (views that need hashes set their own)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if HEADER not in response:
            response[HEADER] = policy()
        return response
