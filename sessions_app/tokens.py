"""Tokens, in one module behind the socket and REST: verify, classify, standing, rotate, revoke.
Design: docs/security.md.

- **Verify** (`verify_access_token`): signature, expiry and type of an access token; pure CPU,
  so the socket's connect runs it in the event loop.
- **Classify** (`is_expired_but_genuine`): a genuine access token whose only fault is its age is
  told "refresh" (`token_expired`), anything else "sign in" (`unauthenticated`).
- **Standing** (`standing_of`, `check_standing`, `revoked_among`): whether a genuine token may
  still be used. Needs the database; callers in async code run it in a database thread.
- **Rotate** (`rotate`): the one refresh, for `POST /api/auth/token/refresh/` and the socket's
  `auth.refresh`: each refresh token works once (SimpleJWT's blacklist after rotation); one
  presented again after REFRESH_TOKEN_REUSE_GRACE ends its whole sign-in (reuse detection), and
  no sign-in outlives `auth_time` + SIGN_IN_MAX_AGE.
- **Revoke** (`revoke_sign_in`, `revoke_user_sessions`).

Revocation is kept apart from rotation. Rotation blacklists each refresh token once it is used,
so that a stolen, already-used token is refused; the sign-in itself lives on in the token that
replaced it. We found that reading "blacklisted" as "revoked" closed live sockets after every
ordinary refresh (a socket rotating R0 -> R1 and the app later rotating R1 over REST; two tabs
sharing one chain). So revocation is its own record, and only these end tokens and sockets:

- a logout ends one sign-in: the `sid` claim, given at login and carried by every rotated
  refresh token and every access token derived from it (`RevokedSignIn`);
- "end every session of this user" (an operator, a password change) raises the user's token
  generation; tokens carrying a lower `gen` claim (none at all counts as 0) are refused
  (`UserTokenGeneration`);
- a deactivated user.

Rule: every path that accepts a token checks its standing: `connect` (services.open_session),
`auth.refresh` on a socket and the REST refresh (`rotate`, `accept_new_access_token`), REST
authentication (sessions_app/authentication.py), and the periodic resync of open sockets
(services.touch_connections, in bulk). Each is covered by a test in
tests/test_token_revocation.py.

This module imports no REST view: DRF loads the authentication classes while
rest_framework.views is still importing, and the socket has no business with views.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from sessions_app.models import RevokedSignIn, UserTokenGeneration

log = logging.getLogger("tether.auth")

User = get_user_model()


# --- verify and classify ------------------------------------------------------------------


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
    """Signature, expiry and token type (a refresh token is not an access token). Pure CPU;
    whether the token was revoked is `check_standing`'s question."""
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


# --- standing -----------------------------------------------------------------------------

SID_CLAIM = "sid"
GENERATION_CLAIM = "gen"
# When the sign-in began (OpenID Connect's name); bounds the sign-in's age (SIGN_IN_MAX_AGE).
AUTH_TIME_CLAIM = "auth_time"


class TokenRevoked(Exception):
    """The token is genuine but may no longer be used: its sign-in or every token of its user
    was revoked, or the user is unknown or deactivated."""


@dataclass(frozen=True)
class Standing:
    """What a token says about where it comes from: its sign-in and its generation."""

    user_id: str
    sid: str | None
    generation: int


def standing_of(claims: Any, user_id: Any) -> Standing:
    """Reads `sid` and `gen` from a token (or its payload dict). Unparseable values count as
    no sign-in and generation 0: such a token survives no revocation."""
    sid = claims.get(SID_CLAIM)
    try:
        sid = str(uuid.UUID(str(sid))) if sid is not None else None
    except ValueError:
        sid = None
    generation = claims.get(GENERATION_CLAIM, 0)
    if not isinstance(generation, int) or isinstance(generation, bool):
        generation = 0
    return Standing(user_id=str(user_id), sid=sid, generation=generation)


def current_generation(user_id: Any) -> int:
    return UserTokenGeneration.objects.filter(user_id=user_id).values_list("generation", flat=True).first() or 0


def stamp_new_sign_in(token: Any, user: Any) -> Any:
    """Gives a token minted at login its sign-in id, the user's current generation and the
    sign-in's start (`auth_time`)."""
    token[SID_CLAIM] = str(uuid.uuid4())
    token[GENERATION_CLAIM] = current_generation(user.pk)
    token[AUTH_TIME_CLAIM] = int(time.time())
    return token


def check_standing(standing: Standing) -> None:
    """Raises TokenRevoked unless the token may still be used. Two indexed
    reads; callers run it in a database thread."""
    active = User.objects.filter(pk=standing.user_id).values_list("is_active", flat=True).first()
    if active is None:
        raise TokenRevoked("unknown user")
    if not active:
        raise TokenRevoked("user is deactivated")
    if standing.generation < current_generation(standing.user_id):
        raise TokenRevoked("token was revoked (every session of this user was ended)")
    if standing.sid is not None and RevokedSignIn.objects.filter(sid=standing.sid).exists():
        raise TokenRevoked("token was revoked (signed out)")


def revoked_among(standings: list[Standing]) -> set[Standing]:
    """The bulk form of check_standing for the resync (deactivation is read there already)."""
    if not standings:
        return set()
    generations = dict(
        UserTokenGeneration.objects.filter(user_id__in={s.user_id for s in standings}).values_list(
            "user_id", "generation"
        )
    )
    generations = {str(k): v for k, v in generations.items()}
    sids = {s.sid for s in standings if s.sid}
    ended = set()
    if sids:
        ended = {str(sid) for sid in RevokedSignIn.objects.filter(sid__in=sids).values_list("sid", flat=True)}
    return {s for s in standings if s.generation < generations.get(s.user_id, 0) or (s.sid and s.sid in ended)}



# --- rotate -------------------------------------------------------------------------------


class RefreshRefused(Exception):
    pass


class RefreshTokenReused(TokenRevoked):
    """A refresh token that was already rotated came back after the grace: someone holds a copy
    (RFC 9700 section 4.14.2). Its whole sign-in was revoked."""


class SignInTooOld(TokenRevoked):
    """The sign-in is older than SIGN_IN_MAX_AGE: rotation does not extend it; sign in again."""


@dataclass(frozen=True)
class Rotated:
    access: str
    # The new refresh token; None when rotation is off (ROTATE_REFRESH_TOKENS=0).
    refresh: str | None


def decode_refresh(raw: str) -> dict[str, Any]:
    """Signature, expiry and type of a refresh token; not whether it was used (that is read
    under the row lock). Raises TokenError."""
    try:
        claims = token_backend.decode(raw, verify=True)
    except TokenBackendError as exc:
        raise TokenError(str(exc)) from None
    if claims.get(api_settings.TOKEN_TYPE_CLAIM) != "refresh":
        raise TokenError("Token has wrong type")
    if api_settings.JTI_CLAIM not in claims:
        raise TokenError("Token has no id")
    return claims


def lock_outstanding(jti: str) -> None:
    """Locks the token's outstanding row until the transaction ends: a concurrent use of the
    same refresh token waits here, then finds it used."""
    OutstandingToken.objects.select_for_update().filter(jti=jti).first()


def used_at_of(jti: str) -> datetime | None:
    """When the token was blacklisted (used by a rotation, or revoked); None if it was not."""
    return BlacklistedToken.objects.filter(token__jti=jti).values_list("blacklisted_at", flat=True).first()


def _sign_in_started(claims: dict[str, Any]) -> int:
    """`auth_time`: when the sign-in began (its password was checked). A token minted before the
    claim existed gets it at its first rotation, so such a sign-in lives at most one more
    SIGN_IN_MAX_AGE."""
    started = claims.get(AUTH_TIME_CLAIM)
    if isinstance(started, int) and not isinstance(started, bool):
        return started
    return int(time.time())


def rotate(raw: str, user_id: Any = None) -> Rotated:
    """The one refresh (REST and socket): a new access token and, with rotation, a new refresh
    token; the one sent is used up. Touches the database.

    - Serialised per token: the token's outstanding row is locked, so a concurrent use of the
      same refresh token waits and then finds it used (tests/test_refresh_lifecycle.py forces
      two at once).
    - Reuse detection (RFC 9700 section 4.14.2): a used refresh token presented again within
      REFRESH_TOKEN_REUSE_GRACE (two tabs racing one chain) is refused; after it, someone else
      holds a copy, and the whole sign-in (`sid`) is revoked: every token of it is refused and
      its sockets close within REALTIME_RESYNC_INTERVAL.
    - Absolute lifetime: no token of a sign-in outlives `auth_time` + SIGN_IN_MAX_AGE, however
      often it is rotated.

    Raises TokenError (invalid, expired, already used within the grace), AuthenticationFailed
    (inactive user), TokenRevoked (its sign-in or user was revoked; RefreshTokenReused,
    SignInTooOld) or RefreshRefused (`user_id` given and the token is another user's)."""
    claims = decode_refresh(raw)
    owner = claims.get(api_settings.USER_ID_CLAIM)
    if user_id is not None and str(owner) != str(user_id):
        raise RefreshRefused("refresh token belongs to another user")
    standing = standing_of(claims, owner)
    jti = claims[api_settings.JTI_CLAIM]
    reused = False
    with transaction.atomic():
        lock_outstanding(jti)
        used_at = used_at_of(jti)  # under the lock: as it is now
        if used_at is not None:
            check_standing(standing)  # revoked (signed out, ended) says so
            reused = timezone.now() - used_at > timedelta(seconds=settings.REFRESH_TOKEN_REUSE_GRACE)
            if not reused:
                raise TokenError("Token is blacklisted")  # used moments ago: two tabs racing
        else:
            rotated = _rotate_unused(raw, claims, owner, standing)
    if reused:  # outside the refused transaction, so that the revocation commits
        _revoke_for_reuse(standing)
        raise RefreshTokenReused("refresh token reused: this sign-in was ended; sign in again")
    return rotated


def _rotate_unused(raw: str, claims: dict[str, Any], owner: Any, standing: Standing) -> Rotated:
    if owner is not None:
        user = User.objects.filter(**{api_settings.USER_ID_FIELD: owner}).first()
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed("No active account found for the given token.", "no_active_account")
    check_standing(standing)
    started = _sign_in_started(claims)
    ends = started + int(settings.SIGN_IN_MAX_AGE)
    if ends <= time.time():
        raise SignInTooOld("this sign-in is older than its maximum age; sign in again")
    token = RefreshToken(raw, verify=False)  # verified above; not the blacklist read again
    token[AUTH_TIME_CLAIM] = started
    access = token.access_token
    access["exp"] = min(access["exp"], ends)
    if not api_settings.ROTATE_REFRESH_TOKENS:
        return Rotated(access=str(access), refresh=None)
    if api_settings.BLACKLIST_AFTER_ROTATION:
        token.blacklist()
    token.set_jti()
    token.set_exp()
    token["exp"] = min(token["exp"], ends)
    token.set_iat()
    token.outstand()
    return Rotated(access=str(access), refresh=str(token))


def _revoke_for_reuse(standing: Standing) -> None:
    log.warning("refresh token reused after the grace by user %s: sign-in %s revoked", standing.user_id,
                standing.sid or "(none: every session)")
    if standing.sid is not None:
        revoke_sign_in(standing.user_id, standing.sid, "refresh token reused")
    else:  # a token without a sign-in id: its lineage cannot be told apart, so all of them go
        revoke_user_sessions(standing.user_id, "refresh token reused")


@dataclass(frozen=True)
class Renewed:
    """A socket's token, renewed over the open socket (`auth.refresh`)."""

    access_expires_at: int
    # The new access token's sign-in and generation, which the resync checks from now on.
    standing: Standing
    access: str | None = None
    refresh: str | None = None


def rotate_refresh_token(raw: str, user_id: str | None) -> Renewed:
    """`auth.refresh {refresh}`: `rotate`, for the socket's own user only. Touches the database."""
    try:
        rotated = rotate(raw, user_id)
    except RefreshRefused:
        log.warning("auth.refresh refused: refresh token of another user on a socket of user %s", user_id)
        raise
    except (TokenError, AuthenticationFailed, TokenRevoked) as exc:
        log.warning("auth.refresh refused for user %s: %s", user_id, exc)
        raise RefreshRefused(f"refresh token refused: {_detail(exc)}") from None
    identity = verify_access_token(rotated.access)
    return Renewed(identity.expires_at, identity.standing, access=rotated.access, refresh=rotated.refresh or raw)


def accept_new_access_token(raw: str | None, user_id: str | None) -> Renewed:
    """`auth.refresh {access}`: a new access token handed to the socket (the app refreshed over
    REST). Touches the database (standing)."""
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


def _detail(exc: Exception) -> str:
    """SimpleJWT's errors carry a dict or a list as detail; the client wants a sentence."""
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict):
        detail = detail.get("detail", detail)
    return str(detail if detail is not None else exc)


# --- revoke -------------------------------------------------------------------------------


def revoke_sign_in(user_id: Any, sid: str, reason: str = "signed out") -> bool:
    """Ends one sign-in (logout). Idempotent; returns False when it was already revoked."""
    _, created = RevokedSignIn.objects.get_or_create(sid=sid, defaults={"user_id": user_id, "reason": reason[:200]})
    return created


@dataclass(frozen=True)
class UserRevocation:
    generation: int
    refresh_tokens_blacklisted: int


def revoke_user_sessions(user_id: Any, reason: str = "all sessions ended") -> UserRevocation:
    """Ends every session of a user: every token issued so far is refused (generation raised),
    every outstanding refresh token is blacklisted, and open sockets close with 4401 at their
    next resync (within REALTIME_RESYNC_INTERVAL)."""
    with transaction.atomic():
        state, _ = UserTokenGeneration.objects.select_for_update().get_or_create(user_id=user_id)
        UserTokenGeneration.objects.filter(pk=state.pk).update(
            generation=F("generation") + 1, revoked_at=timezone.now(), reason=reason[:200]
        )
        state.refresh_from_db()
        outstanding = OutstandingToken.objects.filter(user_id=user_id, blacklistedtoken__isnull=True)
        blacklisted = BlacklistedToken.objects.bulk_create(
            [BlacklistedToken(token=t) for t in outstanding], ignore_conflicts=True
        )
    return UserRevocation(generation=state.generation, refresh_tokens_blacklisted=len(blacklisted))
