"""Token renewal over an open socket (protocol: auth.refresh)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import jwt
from django.db import transaction
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from realtime.auth import InvalidToken, verify_access_token
from sessions_app.auth_api import StandingRefreshSerializer
from sessions_app.revocation import Standing, TokenRevoked, check_standing

log = logging.getLogger("tether.auth")


class RefreshRefused(Exception):
    pass


@dataclass(frozen=True)
class Renewed:
    access_expires_at: int
    # The new access token's sign-in and generation, which the resync checks from now on.
    standing: Standing
    access: str | None = None
    refresh: str | None = None


def is_expired_but_genuine(raw: str) -> bool:
    """True when the token's only fault is its age (a genuine access token past `exp`), so
    the client is told to refresh rather than to log in again."""
    try:
        claims = jwt.decode(
            raw,
            api_settings.SIGNING_KEY,
            algorithms=[api_settings.ALGORITHM],
            options={"verify_exp": False, "verify_aud": False},
        )
    except jwt.PyJWTError:
        return False
    if claims.get(api_settings.TOKEN_TYPE_CLAIM) != "access":
        return False
    return isinstance(claims.get("exp"), (int, float)) and claims["exp"] < time.time()


def accept_new_access_token(raw: str | None, user_id: str | None) -> Renewed:
    """A new access token handed to the socket (the app refreshed over REST). Touches the
    database (revocation standing): run it in a database thread."""
    try:
        identity = verify_access_token(raw or "")
    except InvalidToken as exc:
        raise RefreshRefused(f"access token refused: {exc}") from None
    if identity.user_id != str(user_id):
        log.warning("auth.refresh refused: access token of user %s on a socket of user %s", identity.user_id, user_id)
        raise RefreshRefused("access token belongs to another user")
    try:
        check_standing(identity.standing)
    except TokenRevoked as exc:
        raise RefreshRefused(f"access token refused: {exc}") from None
    return Renewed(access_expires_at=identity.expires_at, standing=identity.standing)


def rotate_refresh_token(raw: str, user_id: str | None) -> Renewed:
    """The REST refresh (rotation, blacklist after rotation, revocation checks), serialised per
    token so that two concurrent uses of one refresh token cannot both succeed. Touches the
    database."""
    try:
        with transaction.atomic():
            token = RefreshToken(raw)
            if str(token.get(api_settings.USER_ID_CLAIM)) != str(user_id):
                log.warning("auth.refresh refused: refresh token of another user on a socket of user %s", user_id)
                raise RefreshRefused("refresh token belongs to another user")
            # Lock the outstanding row so a concurrent reuse waits, then sees the blacklist.
            OutstandingToken.objects.select_for_update().filter(jti=token["jti"]).first()
            serializer = StandingRefreshSerializer(data={"refresh": raw})
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
    except (TokenError, AuthenticationFailed) as exc:
        log.warning("auth.refresh refused for user %s: %s", user_id, exc)
        raise RefreshRefused(f"refresh token refused: {_detail(exc)}") from None
    except Exception as exc:  # serializer ValidationError wraps TokenError
        if isinstance(exc, RefreshRefused):
            raise
        log.warning("auth.refresh refused for user %s: %s", user_id, exc)
        raise RefreshRefused("refresh token refused") from None
    identity = verify_access_token(data["access"])
    return Renewed(
        access_expires_at=identity.expires_at,
        standing=identity.standing,
        access=data["access"],
        refresh=data.get("refresh", raw),
    )


def _detail(exc: Exception) -> str:
    """SimpleJWT's InvalidToken carries a dict or a list as detail; the client wants a sentence."""
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict):
        detail = detail.get("detail", detail)
    return str(detail if detail is not None else exc)
