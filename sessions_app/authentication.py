"""Bearer authentication for REST that refuses revoked tokens (sessions_app/tokens.py).

Kept apart from sessions_app/auth_api.py: DRF imports DEFAULT_AUTHENTICATION_CLASSES while
rest_framework.views is still loading, so this module must not import views."""

from __future__ import annotations

from typing import Any

from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token

from sessions_app import tokens


def check_token(token: Token) -> tokens.Standing:
    """The standing of a verified token; raises InvalidToken (HTTP 401) when it was revoked."""
    standing = tokens.standing_of(token, token.get(api_settings.USER_ID_CLAIM))
    try:
        tokens.check_standing(standing)
    except tokens.TokenRevoked as exc:
        raise InvalidToken(str(exc)) from None
    return standing


class StandingJWTAuthentication(JWTAuthentication):
    """Bearer access tokens on REST, refused once revoked (one more indexed read per request)."""

    def get_user(self, validated_token: Token) -> Any:
        user = super().get_user(validated_token)
        check_token(validated_token)
        return user
