"""Who the client is behind a load balancer: for sockets (rate limits per IP) and HTTP requests
(REST throttles, /metrics).

Rule (sockets follow it too, `realtime.connection.base.client_address`): `X-Forwarded-For`
is believed only when the peer itself is listed in REALTIME_TRUSTED_PROXIES, and then the
client is the right-most hop that is not one of our proxies. A client can put anything in
the header; only what our own proxies appended counts. Several `X-Forwarded-For` headers
count as one list in their order (a proxy may append a header instead of extending one).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings


def forwarded_client(peer: str, forwarded_for: Iterable[str]) -> str:
    trusted = settings.REALTIME_TRUSTED_PROXIES
    if not peer or peer not in trusted:
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop[:64]
    return peer


def request_client(meta: dict) -> str:
    """The client address of a Django request's META (WSGI/ASGI join repeated headers with ',')."""
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    return forwarded_client(meta.get("REMOTE_ADDR") or "", [forwarded] if forwarded else [])
