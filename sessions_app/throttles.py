"""DRF throttles of the REST API (settings API_THROTTLE_*; README, configuration).

- `POST /api/auth/token/` is the one place a password can be guessed: limited per client
  address (the client behind a trusted proxy, realtime.infra.proxies, not the balancer) and per
  username, so neither one address trying many names nor many addresses trying one name
  gets far.
- `POST /api/conversations/` creates rows: limited per user.

Counts live in Redis (the `throttle` cache) so every node shares them, under
REDIS_KEY_PREFIX. When Redis cannot be asked (down, slow, its pool exhausted under load), a
throttle never allows everything (issue 24): the login throttles fail closed (HTTP 503 with
Retry-After: password guessing must not get unlimited tries because Redis is busy), the others
fall back to this node's share of their rate, kept in memory (realtime.infra.ratelimit,
`fallback_hit`). Addresses are counted by realtime.infra.proxies.address_bucket (IPv6 by /64).
DRF's counting is read-then-write, so concurrent requests may slip a few over the limit: a
throttle, not an exact quota (the socket limits in realtime.infra.ratelimit are the exact ones).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework.exceptions import APIException
from rest_framework.throttling import SimpleRateThrottle

from realtime.core.buckets import Rule
from realtime.infra.proxies import address_bucket, request_client
from realtime.infra.ratelimit import fallback_hit
from realtime.infra.transient import warn_failed

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

    # True: refuse (503) when the count cannot be checked; False: this node's share decides.
    fail_closed = False
    _fallback_wait: float | None = None

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        # Redis down, slow or its pool exhausted; warn_failed logs a bug's traceback too.
        except Exception as exc:  # noqa: BLE001 - see above
            return self._unchecked(request, view, exc)

    def _unchecked(self, request, view, exc: Exception) -> bool:
        if self.fail_closed:
            warn_failed(log, "throttle %s could not be checked; refusing", self.scope, exc=exc)
            raise ThrottleUnavailable()
        warn_failed(log, "throttle %s could not be checked; this node's share decides", self.scope, exc=exc)
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        verdict = fallback_hit(key, Rule(capacity=float(self.num_requests),
                                         per_second=self.num_requests / self.duration))
        if verdict.allowed:
            return True
        self._fallback_wait = verdict.retry_after_ms / 1000
        return False

    def wait(self) -> float | None:
        if self._fallback_wait is not None:
            return self._fallback_wait
        return super().wait()

    def key_for(self, ident: str) -> str:
        return f"{settings.REDIS_KEY_PREFIX}:throttle:{self.scope}:{ident}"


class ThrottleUnavailable(APIException):
    """A login throttle that cannot be checked refuses: HTTP 503 with Retry-After."""

    status_code = 503
    default_detail = "sign-in is unavailable for a moment (its rate limit cannot be checked); retry"
    default_code = "unavailable"
    wait = 1  # seconds, sent as Retry-After by DRF's exception handler


def _address(request) -> str:
    return address_bucket(request_client(request.META)) or "unknown"


class TokenPerAddressThrottle(_Throttle):
    scope = "token_address"
    setting = "API_THROTTLE_TOKEN_IP"
    fail_closed = True

    def get_cache_key(self, request, view) -> str | None:
        return self.key_for(_address(request))


class TokenPerUsernameThrottle(_Throttle):
    scope = "token_username"
    setting = "API_THROTTLE_TOKEN_USERNAME"
    fail_closed = True

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
        return self.key_for(_address(request))


class ConversationCreateThrottle(_Throttle):
    scope = "conversation_create"
    setting = "API_THROTTLE_CONVERSATIONS"

    def get_cache_key(self, request, view) -> str | None:
        if request.method != "POST" or not request.user.is_authenticated:
            return None
        return self.key_for(str(request.user.pk))
