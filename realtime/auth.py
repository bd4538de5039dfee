"""Access-token checks that run in the event loop: SimpleJWT's AccessToken is pure CPU.
Whether a genuine token was revoked needs the database: sessions_app/revocation.py."""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

from sessions_app.revocation import Standing, standing_of


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class AccessIdentity:
    user_id: str
    expires_at: int
    jti: str | None
    # Its sign-in and generation: what a revocation is checked against.
    standing: Standing


def verify_access_token(raw: str) -> AccessIdentity:
    """Signature, expiry and token type (a refresh token is not an access token)."""
    try:
        token = AccessToken(raw)
    except TokenError as exc:
        raise InvalidToken(str(exc)) from None
    user_id = token.get(api_settings.USER_ID_CLAIM)
    if user_id is None:
        raise InvalidToken("token has no user claim")
    return AccessIdentity(
        user_id=str(user_id), expires_at=int(token["exp"]), jti=token.get("jti"), standing=standing_of(token, user_id)
    )
