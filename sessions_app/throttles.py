"""DRF throttles of the REST API (settings API_THROTTLE_*; README, configuration).

- `POST /api/auth/token/` is the one place a password can be guessed: limited per client
  address (the client behind a trusted proxy, realtime.infra.proxies, not the balancer) and per
  username, so neither one address trying many names nor many addresses trying one name
  gets far.
- `POST /api/conversations/` creates rows: limited per user.

Counts live in Redis (the `throttle` cache) so every node shares them, under
REDIS_KEY_PREFIX. Like the socket limits, they fail open: with Redis unreachable a request
is allowed and a warning logged, so a Redis outage does not take logins down. DRF's counting
is read-then-write, so concurrent requests may slip a few over the limit: a throttle, not
an exact quota (the socket limits in realtime.infra.ratelimit are the exact ones).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework.exceptions import APIException
from rest_framework.throttling import SimpleRateThrottle

from realtime.infra.proxies import request_client

log = logging.getLogger(__name__)


def cache_key(key: str, key_prefix: str, version: Any) -> str:
    """The throttle cache's KEY_FUNCTION: keys arrive complete (prefix included)."""
    return key


class _Throttle(SimpleRateThrottle):
    setting = ""  # name of the Django setting holding this throttle's rate

    @property
    def cache(self):  # DRF reads `self.cache`
        return caches["throttle"]

    def get_rate(self) -> str | None:
        rate = getattr(settings, self.setting)
        return None if rate in ("", "off", "0") else rate

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:  # Redis down or slow: fail open
            log.warning("throttle %s could not be checked; allowing", self.scope, exc_info=True)
            return True

    def key_for(self, ident: str) -> str:
        return f"{settings.REDIS_KEY_PREFIX}:throttle:{self.scope}:{ident}"


class TokenPerAddressThrottle(_Throttle):
    scope = "token_address"
    setting = "API_THROTTLE_TOKEN_IP"

    def get_cache_key(self, request, view) -> str | None:
        return self.key_for(request_client(request.META) or "unknown")


class TokenPerUsernameThrottle(_Throttle):
    scope = "token_username"
    setting = "API_THROTTLE_TOKEN_USERNAME"

    def get_cache_key(self, request, view) -> str | None:
        try:
            username = request.data.get("username")
        except APIException:  # unparseable body: the view answers 400 or 415 itself
            return None
        if not isinstance(username, str) or not username:
            return None
        return self.key_for(username.strip().lower()[:150])


class RefreshPerAddressThrottle(_Throttle):
    """`POST /api/auth/token/refresh/`: every refresh takes a row lock and writes two rows
    (the used token blacklisted, the new one outstanding), so a flood of them, valid or not, is
    limited per client address."""

    scope = "refresh_address"
    setting = "API_THROTTLE_REFRESH_IP"

    def get_cache_key(self, request, view) -> str | None:
        return self.key_for(request_client(request.META) or "unknown")


class ConversationCreateThrottle(_Throttle):
    scope = "conversation_create"
    setting = "API_THROTTLE_CONVERSATIONS"

    def get_cache_key(self, request, view) -> str | None:
        if request.method != "POST" or not request.user.is_authenticated:
            return None
        return self.key_for(str(request.user.pk))
