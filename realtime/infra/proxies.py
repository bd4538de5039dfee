"""Who the client is behind a load balancer: for sockets (rate limits per IP) and HTTP requests
(REST throttles, /metrics).

Rule (sockets follow it too, `realtime.connection.base.client_address`): `X-Forwarded-For`
is believed only when the peer itself is listed in REALTIME_TRUSTED_PROXIES, and then the
client is the right-most hop that is not one of our proxies. A client can put anything in
the header; only what our own proxies appended counts. Several `X-Forwarded-For` headers
count as one list in their order (a proxy may append a header instead of extending one).
"""

from __future__ import annotations

import ipaddress
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


def address_bucket(address: str) -> str:
    """The key of a client address for per-address limits: an IPv6 address by its /64 (one
    subscriber is usually given a whole /64, and could otherwise take a fresh address for every
    attempt), an IPv4 address (also one mapped into IPv6) as it is. Anything else (a unix
    socket's name) unchanged."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
